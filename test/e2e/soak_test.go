//go:build e2e

package e2e

// The soak: 64 sessions of mixed, verified I/O with logins and logouts,
// abrupt disconnects, NOP-Out storms and task management against the
// daemon, while its goroutines, file descriptors and RSS are sampled; at the
// end every session is gone and the numbers are back where they were.
//
//	go test -tags e2e -run TestSoak -v ./test/e2e/                 # 2 minutes (make test)
//	SOAK_DURATION=10m go test -tags e2e -run TestSoak ./test/e2e/  # make soak (no race detector)

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// soakDaemon starts the daemon for the long tests: built without the race
// detector when SOAK_DURATION asks for a long run (make soak), else the
// shared race-enabled build.
func soakDaemon(t *testing.T, o harness.TargetOptions) *harness.Target {
	t.Helper()
	if os.Getenv("SOAK_DURATION") == "" {
		return startDaemon(t, o)
	}
	dir, err := harness.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "norace")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return harness.StartTarget(t, &harness.Builder{}, dir, o)
}

func soakDuration(t *testing.T, def time.Duration) time.Duration {
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		return d
	}
	return def
}

func TestSoak(t *testing.T) {
	dur := soakDuration(t, 2*time.Minute)
	const sessions = 64
	const regionBlocks = 2048 // 1 MiB per worker
	img := filepath.Join(t.TempDir(), "soak.img")
	tg := soakDaemon(t, harness.TargetOptions{
		LUNs: []string{img + ",size=128MiB,thin"},
		Extra: []string{"--nop-interval", "1s", "--nop-timeout", "10s", "--log-level", "info",
			// Abruptly dropped connections linger until the target notices.
			"--max-connections-per-source", "256"},
	})
	idle, err := tg.Runtime(true, false)
	if err != nil {
		t.Fatalf("admin socket: %v", err)
	}

	var (
		stop    atomic.Bool
		ops     atomic.Int64
		logins  atomic.Int64
		pings   atomic.Int64
		tmfs    atomic.Int64
		resets  atomic.Int64
		errMu   sync.Mutex
		errs    []string
		wg      sync.WaitGroup
		samples []*harness.Runtime
	)
	fail := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		stop.Store(true)
	}
	for w := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &soakWorker{id: w, portal: tg.Portal, iqn: tg.IQN, base: uint32(w * regionBlocks),
				blocks: regionBlocks, rng: rand.New(rand.NewPCG(uint64(w), 7)), written: map[uint32]uint32{}}
			for gen := 0; !stop.Load(); gen++ {
				if err := s.session(gen, &stop, &ops, &pings, &tmfs, &resets); err != nil {
					fail("worker %d generation %d: %v", w, gen, err)
					return
				}
				logins.Add(1)
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(10 * time.Second)
	for time.Since(start) < dur && !stop.Load() {
		<-tick.C
		// Every sample after a forced collection, so that RSS and heap
		// compare like with like (the first sample used to be taken without
		// one and was measured against a collected figure).
		r, err := tg.Runtime(true, false)
		if err != nil {
			fail("admin socket: %v", err)
			break
		}
		samples = append(samples, r)
	}
	tick.Stop()
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	for _, e := range errs {
		t.Error(e)
	}
	t.Logf("soak %v: %d sessions, %d logins, %d verified I/Os, %d NOP-Out pings, %d task management functions, %d LUN resets",
		elapsed.Round(time.Second), sessions, logins.Load(), ops.Load(), pings.Load(), tmfs.Load(), resets.Load())
	for i, r := range samples {
		t.Logf("  t=%3ds goroutines %5d  fds %4d  rss %6.1f MiB  heap %6.1f MiB  sessions %d", (i+1)*10, r.Goroutines, r.FDs,
			mib(r.RSSBytes), mib(r.HeapBytes), r.Sessions)
	}
	if t.Failed() {
		return
	}
	if ops.Load() == 0 || logins.Load() < sessions {
		t.Fatalf("the soak did no work: %d I/Os, %d logins", ops.Load(), logins.Load())
	}
	// Every session is gone; the daemon is back to its idle numbers.
	deadline := time.Now().Add(30 * time.Second)
	var end *harness.Runtime
	for {
		if end, err = tg.Runtime(true, false); err != nil {
			t.Fatalf("admin socket: %v", err)
		}
		if end.Sessions == 0 && end.Goroutines <= idle.Goroutines+3 && end.FDs <= idle.FDs {
			break
		}
		if time.Now().After(deadline) {
			st, _ := tg.Runtime(false, true)
			t.Fatalf("after the soak: %d sessions, %d goroutines (idle %d), %d fds (idle %d)\n%s",
				end.Sessions, end.Goroutines, idle.Goroutines, end.FDs, idle.FDs, st.Stacks)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Flat memory: after the warm-up the daemon's footprint does not grow
	// with time (pools and buffers are reused, not accumulated). The warm
	// figure is the highest of the samples at 20, 30 and 40 s, since the
	// number of live sessions swings between samples; every later sample
	// and the end must stay within an allowance of it. RSS (which under the
	// race detector includes shadow memory the collector never returns) and
	// the live heap are checked separately.
	const warmFirst, warmEnd = 1, 4 // samples[i] is at t=(i+1)*10 s: the warm window is 20..40 s
	if len(samples) <= warmEnd {
		t.Logf("RSS idle %.1f MiB, end %.1f MiB: too short a soak for the flatness check", mib(idle.RSSBytes), mib(end.RSSBytes))
		return
	}
	var warmRSS int64
	var warmHeap uint64
	for _, r := range samples[warmFirst:warmEnd] {
		warmRSS = max(warmRSS, r.RSSBytes)
		warmHeap = max(warmHeap, r.HeapBytes)
	}
	rssLimit := warmRSS + max(warmRSS/4, 24<<20)
	heapLimit := warmHeap + max(warmHeap/4, 8<<20)
	t.Logf("RSS idle %.1f MiB, warm %.1f MiB, end %.1f MiB (limit %.1f); heap idle %.1f MiB, warm %.1f MiB, end %.1f MiB (limit %.1f)",
		mib(idle.RSSBytes), mib(warmRSS), mib(end.RSSBytes), mib(rssLimit),
		mib(idle.HeapBytes), mib(warmHeap), mib(end.HeapBytes), mib(heapLimit))
	check := func(r *harness.Runtime, when string) {
		if r.RSSBytes > rssLimit {
			t.Errorf("RSS %.1f MiB at %s exceeds the warm figure %.1f MiB by more than the allowance",
				mib(r.RSSBytes), when, mib(warmRSS))
		}
		if r.HeapBytes > heapLimit {
			t.Errorf("live heap %.1f MiB at %s exceeds the warm figure %.1f MiB by more than the allowance",
				mib(r.HeapBytes), when, mib(warmHeap))
		}
	}
	for i := warmEnd; i < len(samples); i++ {
		check(samples[i], fmt.Sprintf("t=%ds", (i+1)*10))
	}
	check(end, "the end")
}

func mib[N int64 | uint64](n N) float64 { return float64(n) / (1 << 20) }

// soakWorker owns a region of the LUN and remembers the checksum of every
// block it wrote there, so each read is verified.
type soakWorker struct {
	id      int
	portal  string
	iqn     string
	base    uint32
	blocks  uint32
	rng     *rand.Rand
	written map[uint32]uint32 // LBA -> crc32 of the block
}

var errStopped = errors.New("stopped")

func (s *soakWorker) session(gen int, stop *atomic.Bool, ops, pings, tmfs, resets *atomic.Int64) error {
	c, err := targettest.Dial(s.portal)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(2 * time.Minute))
	binary.BigEndian.PutUint16(c.ISID[2:], uint16(s.id))
	binary.BigEndian.PutUint16(c.ISID[4:], uint16(gen))
	if err := c.Login(targettest.LoginOptions{Target: s.iqn}); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	n := 10 + s.rng.IntN(60)
	for i := 0; i < n && !stop.Load(); i++ {
		var err error
		switch k := s.rng.IntN(100); {
		case k < 45:
			err = s.write(c)
		case k < 90:
			err = s.read(c)
		case k < 95:
			err = s.pingStorm(c)
			pings.Add(10)
		case k < 99:
			err = s.abortUnknown(c)
			tmfs.Add(1)
		default:
			if s.id%8 == 0 {
				err = s.lunReset(c)
				resets.Add(1)
			}
		}
		if err != nil {
			return err
		}
		ops.Add(1)
	}
	if s.rng.IntN(8) == 0 {
		return nil // drop the connection without logging out
	}
	resp, err := c.Logout()
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if resp.Response != pdu.LogoutRespClosed {
		return fmt.Errorf("logout response %d", resp.Response)
	}
	return nil
}

// command runs a CDB, retrying past unit attentions (other workers' LUN
// resets and the power-on attention of each new session).
func (s *soakWorker) command(c *targettest.Client, cdb, out []byte, in uint32) (*targettest.Result, error) {
	for try := 0; ; try++ {
		r, err := c.Command(cdb, out, in, targettest.CommandOptions{})
		if err != nil {
			return nil, err
		}
		if k, _, _ := r.SenseKey(); r.Status == 2 && k == 6 && try < 5 {
			continue
		}
		if r.Status == 0x40 && try < 5 {
			// TASK ABORTED: another worker's LUN RESET (TAS=1).
			continue
		}
		if r.Status != 0 {
			k, asc, ascq := r.SenseKey()
			return r, fmt.Errorf("CDB % x: status %#x sense %x/%02x/%02x", cdb[:2], r.Status, k, asc, ascq)
		}
		return r, nil
	}
}

func (s *soakWorker) extent() (uint32, int) {
	n := 1 << s.rng.IntN(8) // 1..128 blocks
	lba := s.base + uint32(s.rng.IntN(int(s.blocks)-n))
	return lba, n
}

func (s *soakWorker) write(c *targettest.Client) error {
	lba, n := s.extent()
	data := make([]byte, n*512)
	for i := range n {
		blk := data[i*512 : (i+1)*512]
		for j := 0; j < 512; j += 8 {
			binary.LittleEndian.PutUint64(blk[j:], s.rng.Uint64())
		}
	}
	cdb := []byte{0x2a, 0, 0, 0, 0, 0, 0, byte(n >> 8), byte(n), 0}
	binary.BigEndian.PutUint32(cdb[2:], lba)
	if _, err := s.command(c, cdb, data, 0); err != nil {
		return fmt.Errorf("write %d+%d: %w", lba, n, err)
	}
	for i := range n {
		s.written[lba+uint32(i)] = crc32.ChecksumIEEE(data[i*512 : (i+1)*512])
	}
	return nil
}

func (s *soakWorker) read(c *targettest.Client) error {
	lba, n := s.extent()
	cdb := []byte{0x28, 0, 0, 0, 0, 0, 0, byte(n >> 8), byte(n), 0}
	binary.BigEndian.PutUint32(cdb[2:], lba)
	r, err := s.command(c, cdb, nil, uint32(n*512))
	if err != nil {
		return fmt.Errorf("read %d+%d: %w", lba, n, err)
	}
	if len(r.Data) != n*512 {
		return fmt.Errorf("read %d+%d: %d bytes", lba, n, len(r.Data))
	}
	zero := make([]byte, 512)
	for i := range n {
		blk := r.Data[i*512 : (i+1)*512]
		want, ok := s.written[lba+uint32(i)]
		switch {
		case ok && crc32.ChecksumIEEE(blk) != want:
			return fmt.Errorf("LBA %d: data differs from what this worker wrote", lba+uint32(i))
		case !ok && !bytes.Equal(blk, zero):
			return fmt.Errorf("LBA %d: never written, yet not zero", lba+uint32(i))
		}
	}
	return nil
}

// pingStorm sends ten NOP-Out pings back to back and checks that each is
// echoed.
func (s *soakWorker) pingStorm(c *targettest.Client) error {
	want := map[uint32][]byte{}
	for range 10 {
		itt := c.NextITT()
		data := []byte(fmt.Sprintf("ping %d from worker %d", itt, s.id))
		n := pdu.NOPOut{Immediate: true, InitiatorTaskTag: itt, TargetTransferTag: pdu.ReservedTag,
			CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
		var h pdu.BHS
		n.Marshal(&h)
		if err := c.WritePDU(&h, nil, data); err != nil {
			return err
		}
		want[itt] = data
	}
	for len(want) > 0 {
		rh, data, err := c.Expect(pdu.OpNOPIn)
		if err != nil {
			return fmt.Errorf("ping storm: %w", err)
		}
		itt := rh.BHS.InitiatorTaskTag()
		if w, ok := want[itt]; !ok || !bytes.Equal(w, data) {
			return fmt.Errorf("ping storm: unexpected NOP-In ITT %#x data %q", itt, data)
		}
		delete(want, itt)
	}
	return nil
}

func (s *soakWorker) tmf(c *targettest.Client, fn pdu.TMFunction, ref uint32) (uint8, error) {
	req := pdu.TaskMgmtRequest{Immediate: true, Function: fn, InitiatorTaskTag: c.NextITT(),
		ReferencedTaskTag: ref, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: c.CmdSN}
	var h pdu.BHS
	req.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		return 0, err
	}
	rh, _, err := c.Expect(pdu.OpTaskMgmtResponse)
	if err != nil {
		return 0, err
	}
	return rh.BHS[2], nil
}

func (s *soakWorker) abortUnknown(c *targettest.Client) error {
	resp, err := s.tmf(c, pdu.TMFAbortTask, 0x7fff0000|uint32(s.id))
	if err != nil {
		return fmt.Errorf("ABORT TASK: %w", err)
	}
	if resp != pdu.TMFRespNoTask && resp != pdu.TMFRespComplete {
		return fmt.Errorf("ABORT TASK of an unknown task: response %d", resp)
	}
	return nil
}

func (s *soakWorker) lunReset(c *targettest.Client) error {
	resp, err := s.tmf(c, pdu.TMFLogicalUnitReset, pdu.ReservedTag)
	if err != nil {
		return fmt.Errorf("LUN RESET: %w", err)
	}
	if resp != pdu.TMFRespComplete {
		return fmt.Errorf("LUN RESET: response %d", resp)
	}
	return nil
}
