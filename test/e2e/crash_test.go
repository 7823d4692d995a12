//go:build e2e

package e2e

// The crash loop: a writer issues FUA writes, plain writes and SYNCHRONIZE
// CACHE while the daemon is killed with SIGKILL at a random moment; after
// each kill the backing file must hold every write that was acknowledged
// with FUA or covered by an acknowledged SYNCHRONIZE CACHE, and no block may
// be torn. The daemon is restarted on the same file for the next round.
//
//	go test -tags e2e -run TestCrashLoop -v ./test/e2e/          # 10 rounds (make test)
//	CRASH_ITERATIONS=60 go test -tags e2e -run TestCrashLoop ./test/e2e/   # make soak

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

const (
	crashBlock    = 512
	crashPerWrite = 8    // blocks per write
	crashRegion   = 8192 // blocks per round
	crashMagic    = 0x63727368626c6b21
)

// crashRecord fills one block: magic, round, sequence, LBA, random body and
// a CRC over all of it.
func crashRecord(b []byte, round, seq int, lba uint32, rng *rand.Rand) {
	binary.LittleEndian.PutUint64(b[0:], crashMagic)
	binary.LittleEndian.PutUint32(b[8:], uint32(round))
	binary.LittleEndian.PutUint32(b[12:], uint32(seq))
	binary.LittleEndian.PutUint32(b[16:], lba)
	for i := 20; i < len(b)-4; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], rng.Uint32())
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
}

// crashCheck reports whether a block read back from the file is a zero
// block (never written) or an intact record for lba.
func crashCheck(b []byte, lba uint32) error {
	if bytes.Equal(b, make([]byte, len(b))) {
		return nil
	}
	if binary.LittleEndian.Uint64(b) != crashMagic {
		return fmt.Errorf("LBA %d: neither zeros nor a record", lba)
	}
	if crc32.ChecksumIEEE(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("LBA %d: torn block (checksum mismatch)", lba)
	}
	if got := binary.LittleEndian.Uint32(b[16:]); got != lba {
		return fmt.Errorf("LBA %d: holds the record of LBA %d", lba, got)
	}
	return nil
}

type crashWrite struct {
	lba  uint32
	data []byte
}

func TestCrashLoop(t *testing.T) {
	rounds := 10
	if v := os.Getenv("CRASH_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CRASH_ITERATIONS=%q", v)
		}
		rounds = n
	}
	// Each round writes its own region of a sparse LUN.
	img := filepath.Join(t.TempDir(), "crash.img")
	size := rounds * crashRegion * crashBlock
	tg := soakDaemon(t, harness.TargetOptions{LUNs: []string{fmt.Sprintf("%s,size=%d", img, size)},
		Extra: []string{"--log-level", "info"}})
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("%d rounds, seed %d", rounds, seed)
	var totalDurable, totalAcked, totalLost int
	for round := 0; round < rounds; round++ {
		if round > 0 {
			tg.Restart()
		}
		base := uint32(round * crashRegion)
		c, err := targettest.Dial(tg.Portal)
		if err != nil {
			t.Fatal(err)
		}
		c.ISID[5] = byte(round)
		if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			t.Fatalf("round %d: login: %v", round, err)
		}
		// Kill at a random point once the writer is going.
		killAfter := time.Duration(50+rng.IntN(450)) * time.Millisecond
		killed := make(chan struct{})
		var durable, pending []crashWrite
		acked := 0
		timer := time.AfterFunc(killAfter, func() {
			tg.Kill()
			close(killed)
		})
		for seq := 0; ; seq++ {
			lba := base + uint32(seq*crashPerWrite)
			if lba+crashPerWrite > base+crashRegion {
				break // the region is full before the kill: fine
			}
			data := make([]byte, crashPerWrite*crashBlock)
			for i := range crashPerWrite {
				crashRecord(data[i*crashBlock:(i+1)*crashBlock], round, seq, lba+uint32(i), rng)
			}
			fua := rng.IntN(10) < 6
			cdb := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, crashPerWrite, 0}
			if fua {
				cdb[1] = 0x08
			}
			binary.BigEndian.PutUint32(cdb[2:], lba)
			r, err := c.Command(cdb, data, 0, targettest.CommandOptions{})
			if err != nil {
				break // killed
			}
			if r.Status == 2 {
				if k, _, _ := r.SenseKey(); k == 6 {
					seq-- // power-on unit attention of the new process: retry
					continue
				}
			}
			if r.Status != 0 {
				t.Fatalf("round %d: write status %#x", round, r.Status)
			}
			acked++
			w := crashWrite{lba, data}
			if fua {
				durable = append(durable, w)
			} else {
				pending = append(pending, w)
			}
			if len(pending) >= 4 {
				r, err := c.Command([]byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{})
				if err != nil {
					break
				}
				if r.Status != 0 {
					t.Fatalf("round %d: SYNCHRONIZE CACHE status %#x", round, r.Status)
				}
				durable = append(durable, pending...)
				pending = pending[:0]
			}
		}
		if !timer.Stop() {
			<-killed
		} else {
			tg.Kill()
		}
		c.Close()
		f, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, w := range durable {
			off := int(w.lba) * crashBlock
			if !bytes.Equal(f[off:off+len(w.data)], w.data) {
				lost++
				if lost <= 3 {
					t.Errorf("round %d: acknowledged durable write at LBA %d is not in the file", round, w.lba)
				}
			}
		}
		for lba := base; lba < base+crashRegion; lba++ {
			off := int(lba) * crashBlock
			if err := crashCheck(f[off:off+crashBlock], lba); err != nil {
				t.Errorf("round %d: %v", round, err)
				break
			}
		}
		totalDurable += len(durable)
		totalAcked += acked
		totalLost += lost
		t.Logf("round %2d: killed after %v, %d writes acknowledged, %d durable (FUA or synced), %d lost",
			round, killAfter, acked, len(durable), lost)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d rounds: %d writes acknowledged, %d durable, %d lost", rounds, totalAcked, totalDurable, totalLost)
	if totalDurable == 0 {
		t.Fatal("no durable write was acknowledged before any kill: the loop tested nothing")
	}
}
