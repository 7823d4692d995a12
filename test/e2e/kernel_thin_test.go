//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
	"github.com/iscsi-target/iscsi-target/test/guest"
)

// kernelThinSize is the thin LUN of TestKernelThin (mkfs.ext4 makes it
// 1 KiB blocks, 16 groups of 8 MiB with -g 8192).
const kernelThinSize = 128 << 20

// kernelThinScript: the guest fills the thin LUN with random data and
// discards it (blkdiscard), zeroes a range (blkdiscard -z), then builds
// ext4 over random garbage without discarding it first, lets the kernel's
// lazy init zero the inode tables, fills and deletes a file and runs
// fstrim. At each numbered point it waits for the host to measure the
// backing file's allocation. Every range that must read as zeros is read
// back through the initiator.
const kernelThinScript = `set -eu -o pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
wait_host() { # mark point $1, wait for the host's measurement
	mark "point-$1" "$1"
	local i
	for i in $(seq 1200); do host_signal "measured-$1" && return 0; sleep 0.1; done
	log "host did not measure point $1"; return 1
}
zeros() { # zeros DEV OFFSET_BYTES LENGTH_BYTES: the range reads back as zeros
	dd if="$1" bs=1M skip="$(( $2 >> 20 ))" count="$(( $3 >> 20 ))" iflag=direct status=none | cmp -s -n "$3" - /dev/zero
}
command -v fstrim blkdiscard mkfs.ext4 dumpe2fs > tools.txt
iscsid_start
iscsi_discover
iscsi_login "$IQN"
dev=$(iscsi_disk "$IQN" "$LUN")
disk_report "$dev" > disk.txt
log "thin LUN $dev"

dd if=/dev/urandom of="$dev" bs=1M count="$MIB" oflag=direct status=none
sync
wait_host 1
blkdiscard "$dev"
sync
wait_host 2
zeros "$dev" 0 $(( MIB << 20 )) && echo "discard=zeros" >> results.txt
log "blkdiscard done"

dd if=/dev/urandom of="$dev" bs=1M count=32 oflag=direct status=none
blkdiscard -z -o 0 -l $(( 32 << 20 )) "$dev"
zeros "$dev" 0 $(( 32 << 20 )) && echo "discard_z=zeros" >> results.txt
log "blkdiscard -z done"

# ext4 over garbage: without the discard mkfs would do, only the kernel's
# lazy init (WRITE ZEROES) makes the inode tables zero.
dd if=/dev/urandom of="$dev" bs=1M count="$MIB" oflag=direct status=none
mkfs.ext4 -q -F -g 8192 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$dev"
mkdir -p /mnt/thin
mount -t ext4 -o init_itable=0 "$dev" /mnt/thin
groups=$(dumpe2fs -h "$dev" 2>/dev/null | sed -n 's/^Block count: *//p')
groups=$(( (groups + 8191) / 8192 ))
for i in $(seq 1200); do
	sync
	n=$(dumpe2fs "$dev" 2>/dev/null | grep -c 'ITABLE_ZEROED' || true)
	[ "$n" -ge "$groups" ] && break
	sleep 0.1
done
printf 'groups=%s\nitable_zeroed=%s\n' "$groups" "$n" >> results.txt
log "lazy init: $n of $groups groups zeroed"
head -c $(( 48 << 20 )) /dev/urandom > /mnt/thin/big.bin
sync
wait_host 3
rm /mnt/thin/big.bin
sync
fstrim -v /mnt/thin > fstrim.txt
sync
wait_host 4
umount /mnt/thin
# Every inode table of a group without used inodes reads back as zeros
# through the initiator (group 0 holds the root directory and lost+found).
bsz=$(dumpe2fs -h "$dev" 2>/dev/null | sed -n 's/^Block size: *//p')
ipg=$(dumpe2fs -h "$dev" 2>/dev/null | sed -n 's/^Inodes per group: *//p')
dumpe2fs "$dev" 2>/dev/null | awk -v ipg="$ipg" '
	/Inode table at/ { split($4, r, "-"); a = r[1]; b = r[2] }
	/free inodes/ { for (i = 1; i < NF; i++) if ($(i+1) == "free" && $(i+2) ~ /^inodes/) f = $i; if (f == ipg) print a, b }
' > itables.txt
bad=0
while read -r a b; do
	dd if="$dev" bs="$bsz" skip="$a" count=$(( b - a + 1 )) iflag=direct status=none | cmp -s -n $(( (b - a + 1) * bsz )) - /dev/zero || bad=$(( bad + 1 ))
done < itables.txt
printf 'itables=%s\nitables_not_zero=%s\n' "$(wc -l < itables.txt)" "$bad" >> results.txt
e2fsck -fn "$dev" > fsck.txt 2>&1 && echo "fsck=clean" >> results.txt
iscsi_logout "$IQN"
iscsid_stop
log "done"
`

// TestKernelThin: the Linux initiator on a thin LUN sees discard and
// WRITE ZEROES support (LBPME, LBPU/LBPWS, LBPRZ), and fstrim and
// blkdiscard give the space back in the backing file (st_blocks on the
// host), while blkdiscard -z and ext4's lazy inode table init write zeros
// that read back as zeros.
func TestKernelThin(t *testing.T) {
	g, _ := kernelGuest(t)
	b, bdir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	img := filepath.Join(t.TempDir(), "thin.img")
	tg := harness.StartTarget(t, b, bdir, harness.TargetOptions{
		IQN:   "iqn.2026-11.test:kernel-thin",
		LUNs:  []string{fmt.Sprintf("%s,size=%dMiB,thin", img, kernelThinSize>>20)},
		Extra: []string{"--advertise", guest.DefaultPortal},
	})
	peer := &kernelPeer{Peer: harness.OursPeer(tg, map[harness.LUNKind]int{harness.KindThin: 0}), Advertises: true}
	peer.LU = peer.LUs[harness.KindThin]
	dir := kernelJobDir(t)
	kernelKeepTargetLog(t, peer, dir)
	r, err := g.Start(t.Context(), guest.JobSpec{
		Script:    kernelThinScript,
		Forwards:  kernelForwards(peer),
		Initiator: guest.Initiator{Settings: guest.ReplacementTimeout(30)},
		Env:       kernelEnv(peer, "MIB", strconv.Itoa(kernelThinSize>>20)),
		Dir:       dir,
		Timeout:   8 * time.Minute,
	})
	if err != nil {
		t.Fatalf("start guest: %v", err)
	}
	t.Cleanup(r.Kill)

	allocated := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil {
			t.Fatalf("stat %s: %v", img, err)
		}
		return st.Blocks * 512
	}
	ctx, cancel := context.WithTimeout(t.Context(), 7*time.Minute)
	defer cancel()
	alloc := map[int]int64{}
	for p := 1; p <= 4; p++ {
		if _, err := r.WaitFile(ctx, fmt.Sprintf("point-%d", p)); err != nil {
			res, _ := r.Wait()
			if res != nil {
				kernelDump(t, res)
			}
			t.Fatalf("point %d: %v", p, err)
		}
		alloc[p] = allocated()
		t.Logf("point %d: backing file allocates %d KiB", p, alloc[p]>>10)
		if err := r.WriteFile(fmt.Sprintf("measured-%d", p), nil); err != nil {
			t.Fatal(err)
		}
	}
	res := kernelWait(t, r)
	t.Logf("job timeline:\n%s", res.Stdout)
	if res.ExitCode != 0 {
		t.Fatalf("guest job exit code %d, want 0; stderr:\n%s", res.ExitCode, kernelTail(res.Stderr, 30))
	}
	kernelCheckDmesg(t, res)

	// The kernel's view: thin provisioning, UNMAP, WRITE SAME(16) with
	// UNMAP for zeroing (which sd uses only when LBPRZ is set).
	db, err := res.File("disk.txt")
	if err != nil {
		t.Fatalf("no disk report: %v", err)
	}
	d := guest.ParseKeyValues(db)
	t.Logf("kernel's view: provisioning_mode=%s thin_provisioning=%s zeroing_mode=%s discard_max_bytes=%s "+
		"discard_granularity=%s write_zeroes_max_bytes=%s logical/physical block %s/%s",
		d["provisioning_mode"], d["thin_provisioning"], d["zeroing_mode"], d["discard_max_bytes"],
		d["discard_granularity"], d["write_zeroes_max_bytes"], d["logical_block_size"], d["physical_block_size"])
	if d["provisioning_mode"] != "unmap" {
		t.Errorf("provisioning_mode %q, want unmap", d["provisioning_mode"])
	}
	if d["thin_provisioning"] != "1" {
		t.Errorf("thin_provisioning %q, want 1 (LBPME)", d["thin_provisioning"])
	}
	if d["zeroing_mode"] != "writesame_16_unmap" {
		t.Errorf("zeroing_mode %q, want writesame_16_unmap (LBPRZ with LBPWS)", d["zeroing_mode"])
	}
	for _, k := range []string{"discard_max_bytes", "write_zeroes_max_bytes"} {
		if n, _ := strconv.ParseInt(d[k], 10, 64); n <= 0 {
			t.Errorf("%s = %q: the kernel does not use it", k, d[k])
		}
	}
	tools, _ := res.File("tools.txt")
	t.Logf("guest tools: %s", strings.Join(strings.Fields(string(tools)), " "))

	// Allocation on the host.
	const mib = 1 << 20
	if alloc[1] < kernelThinSize-mib {
		t.Errorf("after writing the whole LUN the file allocates %d KiB, want about %d", alloc[1]>>10, kernelThinSize>>10)
	}
	if alloc[2] > 4*mib {
		t.Errorf("blkdiscard left %d KiB allocated (from %d KiB)", alloc[2]>>10, alloc[1]>>10)
	}
	if alloc[3]-alloc[4] < 48*mib {
		t.Errorf("fstrim gave back %d KiB, want at least the deleted 48 MiB file", (alloc[3]-alloc[4])>>10)
	}
	fs, _ := res.File("fstrim.txt")
	t.Logf("fstrim: %s; allocation %d KiB -> %d KiB", strings.TrimSpace(string(fs)), alloc[3]>>10, alloc[4]>>10)

	rb, _ := res.File("results.txt")
	rv := guest.ParseKeyValues(rb)
	t.Logf("results: %s", strings.Join(strings.Fields(string(rb)), " "))
	if rv["discard"] != "zeros" {
		t.Error("discarded blocks do not read back as zeros")
	}
	if rv["discard_z"] != "zeros" {
		t.Error("blkdiscard -z range does not read back as zeros")
	}
	groups, _ := strconv.Atoi(rv["groups"])
	zeroed, _ := strconv.Atoi(rv["itable_zeroed"])
	if groups < 4 || zeroed < groups {
		t.Errorf("lazy init zeroed %d of %d inode tables", zeroed, groups)
	}
	if n, _ := strconv.Atoi(rv["itables"]); n < groups-1 || rv["itables_not_zero"] != "0" {
		t.Errorf("inode tables read back: %s of %s not zero", rv["itables_not_zero"], rv["itables"])
	}
	if rv["fsck"] != "clean" {
		fb, _ := res.File("fsck.txt")
		t.Errorf("e2fsck after lazy init and fstrim:\n%s", fb)
	}
}
