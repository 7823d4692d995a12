package sysio

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func tempFile(t *testing.T, size int64) int {
	t.Helper()
	fd, err := Open(filepath.Join(t.TempDir(), "f"), unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

func blocks(t *testing.T, fd int) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestPwriteDSyncAndPread(t *testing.T) {
	fd := tempFile(t, 1<<20)
	want := bytes.Repeat([]byte("durable!"), 1024)
	n, err := PwriteDSync(fd, want, 65536)
	if err != nil || n != len(want) {
		t.Fatalf("PwriteDSync = %d, %v; want %d, nil", n, err, len(want))
	}
	if n, err := PwriteDSync(fd, nil, 0); n != 0 || err != nil {
		t.Errorf("PwriteDSync(empty) = %d, %v", n, err)
	}
	got := make([]byte, len(want))
	if n, err := Pread(fd, got, 65536); err != nil || n != len(got) || !bytes.Equal(got, want) {
		t.Fatalf("Pread = %d, %v, equal %v", n, err, bytes.Equal(got, want))
	}
	// Offsets above 4 GiB reach the kernel intact (pos_l/pos_h split).
	big := tempFile(t, 8<<30)
	if _, err := PwriteDSync(big, want, 5<<30+4096); err != nil {
		t.Fatal(err)
	}
	if _, err := Pread(big, got, 5<<30+4096); err != nil || !bytes.Equal(got, want) {
		t.Errorf("data at 5 GiB differs (err %v)", err)
	}
	if d, err := SeekData(big, 0); err != nil || d != 5<<30+4096 {
		t.Errorf("SeekData = %d, %v; want data at 5 GiB + 4096", d, err)
	}
	if n, err := PwriteDSync(-1, want, 0); !errors.Is(err, unix.EBADF) || n != 0 {
		t.Errorf("PwriteDSync(bad fd) = %d, %v; want EBADF", n, err)
	}
}

// TestPwriteDSyncAllocs: unix.Pwritev2 allocates an iovec slice per call;
// ours must not.
func TestPwriteDSyncAllocs(t *testing.T) {
	fd := tempFile(t, 1<<20)
	buf := make([]byte, 4096)
	if n := testing.AllocsPerRun(50, func() { PwriteDSync(fd, buf, 0) }); n != 0 {
		t.Errorf("PwriteDSync: %v allocs/op, want 0", n)
	}
}

func TestPunchHoleZeroRangeSeek(t *testing.T) {
	fd := tempFile(t, 4<<20)
	data := bytes.Repeat([]byte{0xee}, 2<<20)
	if _, err := Pwrite(fd, data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	before := blocks(t, fd)
	if err := PunchHole(fd, 1<<20, 1<<20); err != nil {
		t.Skipf("SKIPPED, not passed: no punch hole on %s: %v", os.TempDir(), err)
	}
	after := blocks(t, fd)
	t.Logf("st_blocks %d -> %d after punching 1 MiB", before, after)
	if before-after < (1<<20)/512 {
		t.Errorf("st_blocks %d -> %d, want a drop of >= 2048", before, after)
	}
	if d, err := SeekData(fd, 0); err != nil || d != 2<<20 {
		t.Errorf("SeekData(0) = %d, %v; want 2 MiB", d, err)
	}
	if h, err := SeekHole(fd, 2<<20); err != nil || h != 3<<20 {
		t.Errorf("SeekHole(2 MiB) = %d, %v; want 3 MiB", h, err)
	}
	if _, err := SeekData(fd, 3<<20); !errors.Is(err, unix.ENXIO) {
		t.Errorf("SeekData past the last data = %v, want ENXIO", err)
	}
	if err := ZeroRange(fd, 2<<20+100, 1000); err != nil {
		t.Fatalf("ZeroRange: %v", err)
	}
	got := make([]byte, 1200)
	if _, err := Pread(fd, got, 2<<20); err != nil {
		t.Fatal(err)
	}
	if got[99] != 0xee || got[100] != 0 || got[1099] != 0 || got[1100] != 0xee {
		t.Errorf("ZeroRange zeroed the wrong bytes")
	}
}

func TestLockExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	a, err := Open(path, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	b, err := Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(b)
	if err := LockExclusive(a); err != nil {
		t.Fatal(err)
	}
	if err := LockExclusive(b); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("second LockExclusive = %v, want EWOULDBLOCK", err)
	}
	unix.Close(a)
	if err := LockExclusive(b); err != nil {
		t.Errorf("LockExclusive after the holder closed: %v", err)
	}
}

func TestDirectIOAlignmentAndFSBlockSize(t *testing.T) {
	fd := tempFile(t, 4096)
	mem, off, known, err := DirectIOAlignment(fd)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := FSBlockSize(fd)
	if err != nil || bs <= 0 {
		t.Fatalf("FSBlockSize = %d, %v", bs, err)
	}
	t.Logf("%s: STATX_DIOALIGN known %v, mem %d, offset %d; statfs bsize %d", os.TempDir(), known, mem, off, bs)
}

// TestQueueAttr builds a fake sysfs with a disk and a partition, which has
// no queue directory of its own.
func TestQueueAttr(t *testing.T) {
	root := t.TempDir()
	disk := filepath.Join(root, "devices", "virtual", "block", "sda")
	for _, dir := range []string{filepath.Join(disk, "queue"), filepath.Join(disk, "sda1"), filepath.Join(root, "dev", "block")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(disk, "queue", "rotational"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(disk, "queue", "discard_max_bytes"), []byte("2147450880\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"8:0": "../../devices/virtual/block/sda", "8:1": "../../devices/virtual/block/sda/sda1"} {
		if err := os.Symlink(target, filepath.Join(root, "dev", "block", link)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		minor uint32
		name  string
		want  uint64
	}{
		{0, "rotational", 1}, {1, "rotational", 1}, {1, "discard_max_bytes", 2147450880},
	}
	for _, tt := range tests {
		got, err := QueueUint(root, 8, tt.minor, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("QueueUint(8:%d, %s) = %d, %v; want %d", tt.minor, tt.name, got, err, tt.want)
		}
	}
	if _, err := QueueAttr(root, 8, 2, "rotational"); !os.IsNotExist(err) {
		t.Errorf("QueueAttr of a missing device = %v, want not-exist", err)
	}
	// The real sysfs, if there is one: the device holding the temp dir.
	var st unix.Stat_t
	if err := unix.Stat(os.TempDir(), &st); err == nil {
		v, err := QueueAttr(SysfsRoot, unix.Major(st.Dev), unix.Minor(st.Dev), "rotational")
		t.Logf("real sysfs: rotational of %d:%d = %q, %v", unix.Major(st.Dev), unix.Minor(st.Dev), v, err)
	}
}

// loopDevice attaches a sparse file of size bytes to a free loop device,
// or skips saying why that is impossible here.
func loopDevice(t *testing.T, size int64) (dev, img string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED, not passed: loop devices need root")
	}
	img = filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPED, not passed: losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev, img
}

func TestBlockDeviceIoctls(t *testing.T) {
	const size = 8 << 20
	dev, img := loopDevice(t, size)
	fd, err := Open(dev, unix.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	got, err := BlockDeviceSize(fd)
	if err != nil || got != size {
		t.Errorf("BlockDeviceSize = %d, %v; want %d", got, err, size)
	}
	lbs, lerr := LogicalBlockSize(fd)
	pbs, perr := PhysicalBlockSize(fd)
	if lerr != nil || perr != nil || lbs < 512 || pbs < lbs {
		t.Errorf("logical %d (%v), physical %d (%v)", lbs, lerr, pbs, perr)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	dmax, err := QueueUint(SysfsRoot, unix.Major(st.Rdev), unix.Minor(st.Rdev), "discard_max_bytes")
	t.Logf("%s: size %d, logical %d, physical %d, discard_max_bytes %d (%v)", dev, got, lbs, pbs, dmax, err)

	data := bytes.Repeat([]byte{0x5a}, 4<<20)
	if _, err := Pwrite(fd, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	if err := ZeroOut(fd, 4096, 8192); err != nil {
		t.Fatalf("ZeroOut: %v", err)
	}
	buf := make([]byte, 16384)
	if _, err := Pread(fd, buf, 0); err != nil {
		t.Fatal(err)
	}
	if buf[4095] != 0x5a || buf[4096] != 0 || buf[12287] != 0 || buf[12288] != 0x5a {
		t.Error("ZeroOut zeroed the wrong bytes")
	}
	if err := Discard(fd, 0, 100); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Discard of a partial block = %v, want EINVAL", err)
	}
	if dmax == 0 {
		return
	}
	var ist unix.Stat_t
	unix.Stat(img, &ist)
	before := ist.Blocks
	if err := Discard(fd, 1<<20, 2<<20); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	unix.Stat(img, &ist)
	t.Logf("backing file st_blocks %d -> %d after discarding 2 MiB of the loop device", before, ist.Blocks)
	if before-ist.Blocks < (2<<20)/512 {
		t.Errorf("backing file st_blocks %d -> %d, want a drop of >= 4096", before, ist.Blocks)
	}
}
