//go:build e2e

package e2e

// The thin-provisioning soft threshold against the daemon: a raw client
// sets the threshold with MODE SELECT (saved), qemu-img's libiscsi driver
// writes past it, the raw client's next command gets the unit attention
// THIN PROVISIONING SOFT THRESHOLD REACHED, LOG SENSE reports the used
// resources measured from the backing file, and the threshold survives a
// restart.
//
//	go test -tags e2e -run TestThinSoftThreshold -v ./test/e2e/

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

func TestThinSoftThreshold(t *testing.T) {
	harness.RequireTools(t, "qemu-img")
	const iqn = "iqn.2026-11.test:e2e-thresh"
	dir := t.TempDir()
	img := filepath.Join(dir, "thin.img")
	tg := startDaemon(t, harness.TargetOptions{IQN: iqn, LUNs: []string{img + ",size=64MiB,thin,serial=THRESH1"},
		Extra: []string{"--nop-interval", "0", "--access", "shared"}})
	c := rawLogin(t, tg.Portal, iqn, 1)
	cmd := func(cdb, out []byte, in uint32) *targettest.Result {
		t.Helper()
		r, err := c.Command(cdb, out, in, targettest.CommandOptions{})
		if err != nil {
			t.Fatalf("CDB % x: %v", cdb, err)
		}
		return r
	}
	good := func(r *targettest.Result) *targettest.Result {
		t.Helper()
		if r.Status != 0 {
			t.Fatalf("status %#x sense % x", r.Status, r.Sense)
		}
		return r
	}

	// VPD B2h: 64 MiB of 512-byte blocks, threshold sets of 1 MiB (2^11).
	if b2 := good(cmd([]byte{0x12, 1, 0xB2, 0, 64, 0}, nil, 64)).Data; len(b2) < 8 || b2[4] != 11 {
		t.Fatalf("VPD B2h % x: want THRESHOLD EXPONENT 11", b2)
	}
	logSense := func() (avail, used uint32) {
		t.Helper()
		d := good(cmd([]byte{0x4D, 0, 0x4C, 0, 0, 0, 0, 0, 64, 0}, nil, 64)).Data
		if len(d) != 28 || d[0] != 0x8C || binary.BigEndian.Uint16(d[4:]) != 1 || binary.BigEndian.Uint16(d[16:]) != 2 {
			t.Fatalf("log page 0Ch % x", d)
		}
		return binary.BigEndian.Uint32(d[8:]), binary.BigEndian.Uint32(d[20:])
	}
	if _, used := logSense(); used != 0 {
		t.Fatalf("fresh thin LUN uses %d sets", used)
	}

	// MODE SELECT(10), PF and SP: the soft threshold at 4 sets (4 MiB),
	// enabled.
	page := make([]byte, 24)
	page[0], page[1], page[3] = 0x5C, 0x02, 0x14
	page[16], page[17] = 0x81, 0x02
	binary.BigEndian.PutUint32(page[20:], 4)
	list := append(make([]byte, 8), page...)
	good(cmd([]byte{0x55, 0x11, 0, 0, 0, 0, 0, 0, byte(len(list)), 0}, list, 0))
	good(cmd([]byte{0, 0, 0, 0, 0, 0}, nil, 0)) // below: nothing pending

	// qemu-img writes 8 MiB of data through its own session.
	src := filepath.Join(t.TempDir(), "src.img")
	libiscsiImage(t, src, 8<<20, 7)
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,initiator-name=%s", tg.Portal, iqn, libiscsiInitiator)
	libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", src, opts)

	r := cmd([]byte{0, 0, 0, 0, 0, 0}, nil, 0)
	if r.Status != 2 || len(r.Sense) < 14 || r.Sense[2]&0x0F != 6 || r.Sense[12] != 0x38 || r.Sense[13] != 0x07 {
		t.Fatalf("after crossing: status %#x sense % x, want UNIT ATTENTION 38/07", r.Status, r.Sense)
	}
	if info := binary.BigEndian.Uint32(r.Sense[3:7]); r.Sense[0]&0x80 == 0 || info != 16 {
		t.Fatalf("INFORMATION %d (valid %v), want 16", info, r.Sense[0]&0x80 != 0)
	}
	good(cmd([]byte{0, 0, 0, 0, 0, 0}, nil, 0)) // once per crossing

	avail, used := logSense()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	blocks := fi.Sys().(*syscall.Stat_t).Blocks
	if want := uint32(blocks * 512 >> 20); used != want || used < 8 {
		t.Fatalf("used %d sets, st_blocks %d (%d sets)", used, blocks, want)
	}
	if avail == 0 || avail > 64-used {
		t.Fatalf("available %d sets with %d used of 64", avail, used)
	}
	t.Logf("after 8 MiB from qemu-img: used %d sets, available %d sets of 1 MiB", used, avail)

	// The saved threshold comes back after a restart.
	c.Close()
	if err := tg.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	tg.Restart()
	c = rawLogin(t, tg.Portal, iqn, 2)
	ms := good(cmd([]byte{0x1A, 0x08, 0x1C, 0x02, 255, 0}, nil, 255)).Data
	want := []byte{0xDC, 0x02, 0x00, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x02, 0, 0, 0, 0, 0, 4}
	if len(ms) < 4+len(want) || !bytes.Equal(ms[4:4+len(want)], want) {
		t.Fatalf("MODE SENSE 1Ch/02h after restart % x", ms)
	}
}
