package backstore_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/backstore/backstoretest"
	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

// openTemp opens a new sparse file of size bytes in dir (t.TempDir() when
// dir is "").
func openTemp(t *testing.T, dir string, size int64, opts backstore.FileOptions) (*backstore.File, string, error) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "lun.img")
	opts.CreateSize = size
	f, err := backstore.OpenFile(path, opts)
	if err == nil {
		t.Cleanup(func() { f.Close() })
	}
	return f, path, err
}

func mustOpenTemp(t *testing.T, size int64, opts backstore.FileOptions) (*backstore.File, string) {
	t.Helper()
	f, path, err := openTemp(t, "", size, opts)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	return f, path
}

func TestFileConformance(t *testing.T) {
	backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
		f, _ := mustOpenTemp(t, size, backstore.FileOptions{})
		return f
	})
}

func TestFileDirectConformance(t *testing.T) {
	if _, _, err := openTemp(t, "", 1<<20, backstore.FileOptions{Direct: true}); errors.Is(err, backstore.ErrUnsupported) {
		t.Skipf("SKIPPED, not passed: the file system of %s refuses O_DIRECT: %v", os.TempDir(), err)
	}
	backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
		f, _ := mustOpenTemp(t, size, backstore.FileOptions{Direct: true})
		if !f.Info().Direct || f.Info().IOAlignment == 0 {
			t.Fatalf("Direct file Info = %+v, want Direct with an IOAlignment", f.Info())
		}
		return f
	})
}

// loopDevice attaches a new sparse file of size bytes to a free loop device
// and detaches it at cleanup. It skips the test, saying why, when loop
// devices cannot be used here.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED, not passed: loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skipf("SKIPPED, not passed: no losetup: %v", err)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("SKIPPED, not passed: no loop driver (/dev/loop-control): %v", err)
	}
	img := filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPED, not passed: losetup --find --show failed: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func TestBlockDeviceConformance(t *testing.T) {
	for _, direct := range []bool{false, true} {
		name := "buffered"
		if direct {
			name = "direct"
		}
		t.Run(name, func(t *testing.T) {
			backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
				dev := loopDevice(t, size)
				f, err := backstore.OpenFile(dev, backstore.FileOptions{Direct: direct})
				if err != nil {
					t.Fatalf("OpenFile(%s): %v", dev, err)
				}
				t.Cleanup(func() { f.Close() }) // before losetup --detach
				info := f.Info()
				if !info.BlockDevice || info.LogicalBlockSize == 0 || info.UnmapZeroes {
					t.Fatalf("loop device Info = %+v, want BlockDevice, a LogicalBlockSize, UnmapZeroes false", info)
				}
				return f
			})
		})
	}
}

func TestBlockDeviceExclusive(t *testing.T) {
	dev := loopDevice(t, 4<<20)
	f, err := backstore.OpenFile(dev, backstore.FileOptions{CreateSize: 4 << 20})
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", dev, err)
	}
	t.Logf("%s: %+v", dev, f.Info())
	for _, ro := range []bool{false, true} {
		_, err := backstore.OpenFile(dev, backstore.FileOptions{ReadOnly: ro})
		if !errors.Is(err, backstore.ErrInUse) || !strings.Contains(err.Error(), dev) {
			t.Errorf("second OpenFile(%s, ReadOnly %v) = %v, want ErrInUse naming the device", dev, ro, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := backstore.OpenFile(dev, backstore.FileOptions{})
	if err != nil {
		t.Fatalf("OpenFile after Close: %v", err)
	}
	g.Close()

	_, err = backstore.OpenFile(dev, backstore.FileOptions{CreateSize: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "4194304") || !strings.Contains(err.Error(), "1048576") {
		t.Errorf("OpenFile(%s, CreateSize 1 MiB) = %v, want an error naming both sizes", dev, err)
	}
}

func stat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestOpenFileCreatesSparse(t *testing.T) {
	const size = 1 << 30
	f, path := mustOpenTemp(t, size, backstore.FileOptions{})
	st := stat(t, path)
	if st.Size != size || st.Blocks > 8 || st.Mode&0o777 != 0o600 {
		t.Errorf("created file: size %d, %d blocks, mode %o; want %d bytes, <= 8 blocks, mode 600", st.Size, st.Blocks, st.Mode&0o777, size)
	}
	info := f.Info()
	if info.Size != size || info.BlockDevice || info.LogicalBlockSize != 0 || !info.UnmapZeroes || info.ReadOnly {
		t.Errorf("Info = %+v", info)
	}
	t.Logf("1 GiB sparse file: %d blocks of 512 B allocated; Info %+v", st.Blocks, info)

	// Reopening an existing file with the same CreateSize, or with 0, works.
	f.Close()
	for _, cs := range []int64{size, 0} {
		g, err := backstore.OpenFile(path, backstore.FileOptions{CreateSize: cs})
		if err != nil {
			t.Fatalf("reopen with CreateSize %d: %v", cs, err)
		}
		g.Close()
	}
}

func TestOpenFileErrors(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.img")
	if err := os.WriteFile(existing, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		opts     backstore.FileOptions
		contains []string
	}{
		{"size mismatch", existing, backstore.FileOptions{CreateSize: 16384}, []string{existing, "8192", "16384"}},
		{"missing without CreateSize", filepath.Join(dir, "nope.img"), backstore.FileOptions{}, []string{"no such file"}},
		{"missing parent", filepath.Join(dir, "no", "dir.img"), backstore.FileOptions{CreateSize: 4096}, []string{"no such file"}},
		{"directory", dir, backstore.FileOptions{}, []string{"not a regular file or block device"}},
		{"character device", "/dev/null", backstore.FileOptions{}, []string{"not a regular file or block device"}},
		{"empty file", empty, backstore.FileOptions{}, []string{"empty"}},
		{"negative CreateSize", existing, backstore.FileOptions{CreateSize: -1}, []string{"negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := backstore.OpenFile(tt.path, tt.opts)
			if err == nil {
				f.Close()
				t.Fatalf("OpenFile(%s, %+v) succeeded, want an error", tt.path, tt.opts)
			}
			for _, s := range append(tt.contains, "backstore: open "+tt.path) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("OpenFile error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestOpenFileLocked(t *testing.T) {
	f, path := mustOpenTemp(t, 1<<20, backstore.FileOptions{})
	for _, ro := range []bool{false, true} {
		g, err := backstore.OpenFile(path, backstore.FileOptions{ReadOnly: ro})
		if err == nil {
			g.Close()
		}
		if !errors.Is(err, backstore.ErrInUse) || !strings.Contains(err.Error(), path) {
			t.Errorf("second OpenFile(ReadOnly %v) = %v, want ErrInUse naming %s", ro, err, path)
		}
	}
	// Another process (flock(1)) cannot lock it either.
	if flock, err := exec.LookPath("flock"); err == nil {
		if out, err := exec.Command(flock, "--nonblock", "--exclusive", path, "true").CombinedOutput(); err == nil {
			t.Errorf("flock(1) got the lock while the file is open: %s", out)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := backstore.OpenFile(path, backstore.FileOptions{})
	if err != nil {
		t.Fatalf("OpenFile after the first was closed: %v", err)
	}
	g.Close()
}

func TestPunchHoleDeallocates(t *testing.T) {
	const size = 16 << 20
	f, path := mustOpenTemp(t, size, backstore.FileOptions{})
	if !f.Info().CanUnmap {
		t.Skipf("SKIPPED, not passed: the file system of %s cannot punch holes", path)
	}
	ctx := t.Context()
	buf := bufpool.Aligned(8 << 20)
	for i := range buf {
		buf[i] = byte(i%251 + 1)
	}
	if err := f.WriteAt(ctx, buf, 4<<20, backstore.WriteFUA); err != nil {
		t.Fatal(err)
	}
	written := stat(t, path).Blocks
	if err := f.Unmap(ctx, 4<<20, 8<<20); err != nil {
		t.Fatal(err)
	}
	punched := stat(t, path).Blocks
	t.Logf("st_blocks after writing 8 MiB: %d, after punching it: %d", written, punched)
	if written < 8<<20/512 || written-punched < 8<<20/512 {
		t.Errorf("st_blocks %d -> %d, want it to fall by at least %d", written, punched, 8<<20/512)
	}
	if err := f.ReadAt(ctx, buf, 4<<20); err != nil {
		t.Fatal(err)
	}
	for i, b := range buf {
		if b != 0 {
			t.Fatalf("punched byte %d reads %#x, want 0", 4<<20+i, b)
		}
	}
}

func TestFileReadOnly(t *testing.T) {
	f, path := mustOpenTemp(t, 1<<20, backstore.FileOptions{})
	ctx := t.Context()
	buf := bufpool.Aligned(4096)
	copy(buf, "hello")
	if err := f.WriteAt(ctx, buf, 0, backstore.WriteFUA); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ro, err := backstore.OpenFile(path, backstore.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if info := ro.Info(); !info.ReadOnly || info.CanUnmap {
		t.Errorf("read-only Info = %+v, want ReadOnly and not CanUnmap", info)
	}
	for name, err := range map[string]error{
		"WriteAt":     ro.WriteAt(ctx, buf, 0, 0),
		"WriteAt FUA": ro.WriteAt(ctx, buf, 0, backstore.WriteFUA),
		"Unmap":       ro.Unmap(ctx, 0, 4096),
		"WriteZeroes": ro.WriteZeroes(ctx, 0, 4096),
	} {
		if !errors.Is(err, backstore.ErrReadOnly) {
			t.Errorf("%s on a read-only File = %v, want ErrReadOnly", name, err)
		}
	}
	clear(buf)
	if err := ro.ReadAt(ctx, buf, 0); err != nil || string(buf[:5]) != "hello" {
		t.Errorf("ReadAt = %q, %v; want hello", buf[:5], err)
	}
	if err := ro.Flush(ctx); err != nil {
		t.Errorf("Flush on a read-only File: %v", err)
	}
}

// TestFilePersistence closes and reopens a file and checks that what was
// written is there, buffered and with O_DIRECT.
func TestFilePersistence(t *testing.T) {
	for _, direct := range []bool{false, true} {
		f, path, err := openTemp(t, "", 4<<20, backstore.FileOptions{Direct: direct})
		if direct && errors.Is(err, backstore.ErrUnsupported) {
			t.Logf("SKIPPED the O_DIRECT half, not passed: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		buf := bufpool.Aligned(64 << 10)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		if err := f.WriteAt(ctx, buf, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.WriteAt(ctx, buf, 2<<20, backstore.WriteFUA); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		g, err := backstore.OpenFile(path, backstore.FileOptions{Direct: direct, CreateSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		got := bufpool.Aligned(64 << 10)
		for _, off := range []int64{1 << 20, 2 << 20} {
			if err := g.ReadAt(ctx, got, off); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(buf) {
				t.Errorf("direct %v: data at %d differs after reopen", direct, off)
			}
		}
		g.Close()
	}
}

func TestFileRefresh(t *testing.T) {
	f, path := mustOpenTemp(t, 1<<20, backstore.FileOptions{})
	if err := os.Truncate(path, 2<<20); err != nil {
		t.Fatal(err)
	}
	info, err := f.Refresh()
	if err != nil || info.Size != 2<<20 || f.Info().Size != 2<<20 {
		t.Fatalf("Refresh after growing = %+v, %v; want Size %d", info, err, 2<<20)
	}
	buf := make([]byte, 4096)
	if err := f.WriteAt(t.Context(), buf, 2<<20-4096, 0); err != nil {
		t.Errorf("write in the grown part: %v", err)
	}
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := f.ReadAt(t.Context(), buf, 1<<20); !errors.Is(err, backstore.ErrOutOfRange) {
		t.Errorf("read past the shrunk end = %v, want ErrOutOfRange", err)
	}
}

// TestReadTruncatedUnderneath: a file cut short behind our back must give
// ErrIO, never zeros.
func TestReadTruncatedUnderneath(t *testing.T) {
	f, path := mustOpenTemp(t, 1<<20, backstore.FileOptions{})
	if err := os.Truncate(path, 512<<10); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	err := f.ReadAt(t.Context(), buf, 512<<10-4096)
	if !errors.Is(err, backstore.ErrIO) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadAt across the truncated end = %v, want ErrIO naming the path", err)
	}
}

func TestDirectMisaligned(t *testing.T) {
	f, _, err := openTemp(t, "", 1<<20, backstore.FileOptions{Direct: true})
	if errors.Is(err, backstore.ErrUnsupported) {
		t.Skipf("SKIPPED, not passed: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	a := int(f.Info().IOAlignment)
	t.Logf("O_DIRECT IOAlignment on %s: %d", os.TempDir(), a)
	buf := bufpool.Aligned(4 * bufpool.Align)
	tests := []struct {
		name string
		p    []byte
		off  int64
	}{
		{"offset", buf[:a], int64(a / 2)},
		{"length", buf[:a+1], 0},
		{"buffer", buf[1 : a+1], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "offset" && a == 1 {
				t.Skip("alignment 1")
			}
			if err := f.WriteAt(t.Context(), tt.p, tt.off, 0); !errors.Is(err, backstore.ErrMisaligned) {
				t.Errorf("WriteAt misaligned %s = %v, want ErrMisaligned", tt.name, err)
			}
			if err := f.ReadAt(t.Context(), tt.p, tt.off); !errors.Is(err, backstore.ErrMisaligned) {
				t.Errorf("ReadAt misaligned %s = %v, want ErrMisaligned", tt.name, err)
			}
		})
	}
}

// Tests that need their own mounts run in a child process in a private
// mount namespace (Go makes mount propagation private there), so nothing is
// mounted on the host and a crash leaves nothing behind.
const nsChildEnv = "BACKSTORE_TEST_MOUNT_NAMESPACE"

// inMountNamespace returns true in the child. In the parent it runs test
// name in a child and returns false; the child's result becomes the
// parent's.
func inMountNamespace(t *testing.T, name string) bool {
	if os.Getenv(nsChildEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED, not passed: mounting tmpfs/ramfs needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), nsChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("child in a private mount namespace:\n%s", out)
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("SKIPPED, not passed: cannot create a mount namespace: %v", err)
		}
		t.Fatalf("child: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP: "+name) {
		t.Skip("SKIPPED, not passed: the child skipped, see its output")
	}
	return false
}

func mount(t *testing.T, fstype, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(fstype, dir, fstype, 0, opts); err != nil {
		t.Skipf("SKIPPED, not passed: mount -t %s: %v", fstype, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// openIn opens a new sparse file in a fresh directory under root, removed
// again (after the File is closed) at cleanup.
func openIn(t *testing.T, root string, size int64) *backstore.File {
	t.Helper()
	dir, err := os.MkdirTemp(root, "lun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f, _, err := openTemp(t, dir, size, backstore.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestTmpfs runs the suite on tmpfs, which has no ZERO_RANGE (exercising
// the WriteZeroes fallback), and maps ENOSPC on a 1 MiB tmpfs.
func TestTmpfs(t *testing.T) {
	if !inMountNamespace(t, "TestTmpfs") {
		return
	}
	t.Run("conformance", func(t *testing.T) {
		dir := mount(t, "tmpfs", "size=64m")
		backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
			return openIn(t, dir, size)
		})
	})
	t.Run("ENOSPC", func(t *testing.T) {
		dir := mount(t, "tmpfs", "size=1m")
		f, path, err := openTemp(t, dir, 4<<20, backstore.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		buf := bufpool.Aligned(256 << 10)
		var werr error
		for off := int64(0); off < 4<<20 && werr == nil; off += int64(len(buf)) {
			werr = f.WriteAt(t.Context(), buf, off, 0)
		}
		t.Logf("write on a full 1 MiB tmpfs: %v", werr)
		if !errors.Is(werr, backstore.ErrNoSpace) || !errors.Is(werr, unix.ENOSPC) ||
			!strings.Contains(werr.Error(), "backstore: write "+path+" at ") {
			t.Fatalf("write past the space = %v, want ErrNoSpace wrapping ENOSPC with path and offset", werr)
		}
		// A plain write that failed for space loses nothing acknowledged,
		// so the device stays usable once space is freed.
		if err := f.Unmap(t.Context(), 0, 512<<10); err != nil {
			t.Fatal(err)
		}
		if err := f.WriteAt(t.Context(), buf, 0, backstore.WriteFUA); err != nil {
			t.Errorf("write after freeing space: %v", err)
		}
		if err := f.Flush(t.Context()); err != nil {
			t.Errorf("Flush: %v", err)
		}
	})
}

// TestRamfs: ramfs has neither O_DIRECT nor fallocate, so Direct must be
// refused clearly and CanUnmap must be false; the suite must still pass.
func TestRamfs(t *testing.T) {
	if !inMountNamespace(t, "TestRamfs") {
		return
	}
	dir := mount(t, "ramfs", "")
	t.Run("Direct refused", func(t *testing.T) {
		_, path, err := openTemp(t, dir, 1<<20, backstore.FileOptions{Direct: true})
		t.Logf("OpenFile Direct on ramfs: %v", err)
		if !errors.Is(err, backstore.ErrUnsupported) || !strings.Contains(err.Error(), "O_DIRECT") || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenFile Direct on ramfs = %v, want ErrUnsupported mentioning O_DIRECT and the path", err)
		}
		os.Remove(path)
	})
	t.Run("conformance", func(t *testing.T) {
		backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
			f := openIn(t, dir, size)
			if f.Info().CanUnmap {
				t.Errorf("ramfs file reports CanUnmap")
			}
			return f
		})
	})
}

type noWaitCtx struct{ context.Context }

func (noWaitCtx) Value(key any) any {
	if _, ok := key.(backstore.NoWait); ok {
		return true
	}
	return nil
}

// TestFileReadNoWait: under a NoWait context a File reads what the page
// cache holds and returns ErrWouldBlock, reading nothing, for data it
// would have to fetch from the disk; an O_DIRECT file always would.
func TestFileReadNoWait(t *testing.T) {
	f, path := mustOpenTemp(t, 1<<20, backstore.FileOptions{})
	ctx := noWaitCtx{context.Background()}
	want := make([]byte, 64<<10)
	for i := range want {
		want[i] = byte(i*13 + 1)
	}
	if err := f.WriteAt(context.Background(), want, 0, backstore.WriteFUA); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := f.ReadAt(ctx, got, 0); err != nil || string(got) != string(want) {
		t.Fatalf("NoWait read of cached data: %v, same data %v", err, string(got) == string(want))
	}
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	clear(got)
	if err := f.ReadAt(ctx, got, 0); !errors.Is(err, backstore.ErrWouldBlock) {
		t.Fatalf("NoWait read of data out of the page cache: %v, want ErrWouldBlock", err)
	}
	if err := f.ReadAt(context.Background(), got, 0); err != nil || string(got) != string(want) {
		t.Fatalf("read after ErrWouldBlock: %v, same data %v", err, string(got) == string(want))
	}
	// The plain read brought the pages back.
	if err := f.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("NoWait read after the data came back: %v", err)
	}

	d, _, err := openTemp(t, "", 1<<20, backstore.FileOptions{Direct: true})
	if errors.Is(err, backstore.ErrUnsupported) {
		t.Logf("O_DIRECT part not run: the file system of %s refuses O_DIRECT: %v", os.TempDir(), err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !f.ReadsNoWait() || d.ReadsNoWait() {
		t.Errorf("ReadsNoWait: buffered %v, O_DIRECT %v; want true, false", f.ReadsNoWait(), d.ReadsNoWait())
	}
	buf := bufpool.Aligned(4096)
	if err := d.ReadAt(ctx, buf, 0); !errors.Is(err, backstore.ErrWouldBlock) {
		t.Fatalf("NoWait read on an O_DIRECT file: %v, want ErrWouldBlock", err)
	}
}
