//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
	"github.com/iscsi-target/iscsi-target/test/guest"
)

// kernelFenceScript: the node registers and takes an EXCLUSIVE ACCESS
// reservation with sg_persist through the kernel's sd device, writes a
// block, then waits until the host has fenced it (PREEMPT AND ABORT, as
// Pacemaker's fence_scsi does) and tries again.
const kernelFenceScript = `set -eu -o pipefail
iscsid_start
iscsi_discover
iscsi_login "$IQN"
dev=$(iscsi_disk "$IQN" "$LUN")
log "disk $dev"
sgp() { sg_persist --no-inquiry "$@" "$dev"; }
sgp --out --register --param-sark=0xa1b2c3
sgp --out --reserve --param-rk=0xa1b2c3 --prout-type=3
sgp --in --read-keys > keys1.txt
sgp --in --read-reservation > res1.txt
sgp --in --report-capabilities > caps.txt
sgp --in --read-full-status > full.txt
head -c 4096 /dev/urandom > block.bin
dd if=block.bin of="$dev" bs=4096 count=1 seek=10 oflag=direct conv=fsync status=none
log "reserved, block 10 written"
mark reserved ok
i=0
until host_signal fenced; do
	i=$((i + 1)); [ $i -lt 600 ] || { log "never fenced"; exit 1; }
	sleep 0.2
done
rc=0; dd if=block.bin of="$dev" bs=4096 count=1 seek=11 oflag=direct conv=fsync status=none 2> dd.err || rc=$?
echo "$rc" > write_after_fence.txt
log "write after fence: exit $rc"
sgp --in --read-keys > keys2.txt
rc=0; sgp --out --register --param-rk=0xa1b2c3 --param-sark=0xa1b2c4 > rereg.txt 2>&1 || rc=$?
echo "$rc" > rereg_rc.txt
iscsi_logout "$IQN"
iscsid_stop
log done
`

// TestKernelPersistentReservationFence: a Linux node (kernel initiator,
// sg_persist from sg3-utils) holds an EXCLUSIVE ACCESS reservation; a
// second initiator cannot read or write, fences the node with PREEMPT AND
// ABORT, and from then on the node's writes fail and never reach the disk.
func TestKernelPersistentReservationFence(t *testing.T) {
	harness.RequireTools(t, "sg_persist")
	g, _ := kernelGuest(t)
	b, bdir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	img := filepath.Join(t.TempDir(), "lun0.img")
	tg := harness.StartTarget(t, b, bdir, harness.TargetOptions{
		IQN:   "iqn.2026-11.test:kernel-pr",
		LUNs:  []string{fmt.Sprintf("%s,size=%dMiB", img, kernelLUNSize>>20)},
		Extra: []string{"--advertise", guest.DefaultPortal, "--access", "shared"},
	})
	peer := &kernelPeer{Peer: harness.OursPeer(tg, map[harness.LUNKind]int{harness.KindPlain: 0}), Advertises: true}
	peer.LU = peer.LUs[harness.KindPlain]
	dir := kernelJobDir(t)
	r, err := g.Start(t.Context(), guest.JobSpec{
		Script:    kernelFenceScript,
		Forwards:  kernelForwards(peer),
		Initiator: guest.Initiator{Settings: guest.ReplacementTimeout(30)},
		Env:       kernelEnv(peer),
		Dir:       dir,
		Timeout:   4 * time.Minute,
	})
	if err != nil {
		t.Fatalf("start guest: %v", err)
	}
	t.Cleanup(r.Kill)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := r.WaitFile(ctx, "reserved"); err != nil {
		if res, _ := r.Wait(); res != nil {
			kernelDump(t, res)
		}
		t.Fatal(err)
	}

	// The fencing node.
	c, err := targettest.Dial(tg.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.InitiatorName = "iqn.2026-11.test:fencer"
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		t.Fatalf("login: %v", err)
	}
	cmd := func(what string, cdb, out []byte, in uint32) *targettest.Result {
		t.Helper()
		res, err := c.Command(cdb, out, in, targettest.CommandOptions{})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res
	}
	for i := 0; i < 3 && cmd("TEST UNIT READY", []byte{0, 0, 0, 0, 0, 0}, nil, 0).Status != 0; i++ {
	}
	keys := cmd("READ KEYS", []byte{0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil, 4096)
	if keys.Status != 0 || len(keys.Data) != 16 || binary.BigEndian.Uint64(keys.Data[8:]) != 0xa1b2c3 {
		t.Fatalf("READ KEYS from the fencer: status %#x data % x, want the node's key a1b2c3", keys.Status, keys.Data)
	}
	resv := cmd("READ RESERVATION", []byte{0x5E, 1, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil, 4096)
	if resv.Status != 0 || len(resv.Data) != 24 || binary.BigEndian.Uint64(resv.Data[8:]) != 0xa1b2c3 || resv.Data[21] != 3 {
		t.Fatalf("READ RESERVATION: status %#x data % x, want key a1b2c3 type 3", resv.Status, resv.Data)
	}
	block := bytes.Repeat([]byte{0xFE}, 512)
	if s := cmd("READ(10)", cdbRead(0, 1), nil, 512).Status; s != 0x18 {
		t.Fatalf("read through an EXCLUSIVE ACCESS reservation: status %#x, want RESERVATION CONFLICT", s)
	}
	if s := cmd("WRITE(10)", cdbWrite(0, 1), block, 0).Status; s != 0x18 {
		t.Fatalf("write through an EXCLUSIVE ACCESS reservation: status %#x, want RESERVATION CONFLICT", s)
	}
	prout := func(what string, sa, typ byte, key, sakey uint64) {
		t.Helper()
		p := make([]byte, 24)
		binary.BigEndian.PutUint64(p[0:], key)
		binary.BigEndian.PutUint64(p[8:], sakey)
		if res := cmd(what, []byte{0x5F, sa, typ, 0, 0, 0, 0, 0, 24, 0}, p, 0); res.Status != 0 {
			k, asc, ascq := res.SenseKey()
			t.Fatalf("%s: status %#x sense %x/%02x/%02x", what, res.Status, k, asc, ascq)
		}
	}
	prout("REGISTER", 0x00, 0, 0, 0xF0)
	prout("PREEMPT AND ABORT", 0x05, 0x01, 0xF0, 0xa1b2c3)
	if s := cmd("WRITE(10) after fencing", cdbWrite(0, 1), block, 0).Status; s != 0 {
		t.Fatalf("fencer's write after PREEMPT AND ABORT: status %#x", s)
	}
	if err := r.WriteFile("fenced", nil); err != nil {
		t.Fatal(err)
	}
	res := kernelWait(t, r)
	t.Logf("job timeline:\n%s", res.Stdout)
	if res.ExitCode != 0 {
		t.Fatalf("guest job exit code %d; stderr:\n%s", res.ExitCode, kernelTail(res.Stderr, 30))
	}
	for _, f := range []string{"keys1.txt", "res1.txt", "caps.txt", "full.txt", "keys2.txt", "rereg.txt"} {
		b, _ := res.File(f)
		t.Logf("sg_persist %s:\n%s", f, bytes.TrimSpace(b))
	}
	want := map[string]string{"keys1.txt": "0xa1b2c3", "res1.txt": "Exclusive Access", "keys2.txt": "0xf0"}
	for f, s := range want {
		if b, _ := res.File(f); !strings.Contains(string(b), s) {
			t.Errorf("%s does not mention %q", f, s)
		}
	}
	if b, _ := res.File("keys2.txt"); strings.Contains(string(b), "0xa1b2c3") {
		t.Errorf("the fenced node's key is still registered")
	}
	if b, _ := res.File("write_after_fence.txt"); strings.TrimSpace(string(b)) == "0" {
		t.Errorf("the fenced node's write succeeded")
	}
	if b, _ := res.File("rereg_rc.txt"); strings.TrimSpace(string(b)) == "0" {
		t.Errorf("the fenced node re-registered with its old key")
	}
	// On disk: block 10 is the node's, block 11 (written after fencing)
	// is not.
	written, err := res.File("block.bin")
	if err != nil {
		t.Fatal(err)
	}
	disk, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk[10*4096:11*4096], written) {
		t.Errorf("block 10, written while the node held the reservation, is not on the disk")
	}
	if bytes.Equal(disk[11*4096:12*4096], written) {
		t.Errorf("block 11, written after the node was fenced, reached the disk")
	}
}

func cdbRead(lba uint32, n uint16) []byte  { return cdbRW(0x28, lba, n) }
func cdbWrite(lba uint32, n uint16) []byte { return cdbRW(0x2A, lba, n) }

func cdbRW(op byte, lba uint32, n uint16) []byte {
	c := []byte{op, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}
