package backstore

// White-box tests that swap File.ops to inject errnos, short transfers and
// blocking calls.

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/internal/sysio"
)

func openTestFile(t *testing.T, size int64) *File {
	t.Helper()
	f, err := OpenFile(filepath.Join(t.TempDir(), "lun.img"), FileOptions{CreateSize: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// counter wraps a fake so tests can see how often it was called.
type counter struct{ n atomic.Int64 }

func (c *counter) inc() int64 { return c.n.Add(1) }

func TestWrapErr(t *testing.T) {
	tests := []struct {
		op      string
		off, n  int64
		err     error
		kind    error
		message string
	}{
		{opWrite, 4096, 512, syscall.EIO, ErrIO, "backstore: write /p at 4096+512: input/output error"},
		{opRead, 0, 512, syscall.EIO, ErrIO, "backstore: read /p at 0+512: input/output error"},
		{opWrite, 0, 512, syscall.ENOSPC, ErrNoSpace, "backstore: write /p at 0+512: no space left on device"},
		{opWrite, 0, 512, syscall.EDQUOT, ErrNoSpace, "backstore: write /p at 0+512: disk quota exceeded"},
		{opWriteZeroes, 0, 512, syscall.EROFS, ErrReadOnly, "backstore: write zeroes /p at 0+512: read-only file system"},
		{opWrite, 0, 512, syscall.EBADF, ErrReadOnly, "backstore: write /p at 0+512: bad file descriptor"},
		{opUnmap, 0, 512, syscall.EPERM, ErrReadOnly, "backstore: unmap /p at 0+512: operation not permitted"},
		{opRead, 0, 512, syscall.EBADF, nil, "backstore: read /p at 0+512: bad file descriptor"},
		{opUnmap, 0, 512, syscall.EOPNOTSUPP, ErrUnsupported, "backstore: unmap /p at 0+512: operation not supported"},
		{opFlush, 0, -1, syscall.EIO, ErrIO, "backstore: flush /p: input/output error"},
		{opRead, 8, 9, ErrClosed, ErrClosed, "backstore: read /p at 8+9: device is closed"},
		{opWrite, 0, 1, io.ErrShortWrite, ErrIO, "backstore: write /p at 0+1: short write"},
		{opWrite, 0, 1, syscall.EINVAL, nil, "backstore: write /p at 0+1: invalid argument"},
	}
	for _, tt := range tests {
		t.Run(tt.message, func(t *testing.T) {
			err := wrapErr("/p", tt.op, tt.off, tt.n, tt.err)
			if got := err.Error(); got != tt.message {
				t.Errorf("message = %q, want %q", got, tt.message)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(err, %v) = false", tt.err)
			}
			for _, s := range []error{ErrIO, ErrNoSpace, ErrReadOnly, ErrUnsupported, ErrClosed} {
				if got, want := errors.Is(err, s), s == tt.kind; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
		})
	}
}

// TestShortTransfers makes every pread and pwrite move at most a few
// hundred bytes: WriteAt and ReadAt must loop until done.
func TestShortTransfers(t *testing.T) {
	f := openTestFile(t, 1<<20)
	var reads, writes counter
	f.ops.pread = func(fd int, p []byte, off int64) (int, error) {
		reads.inc()
		return sysio.Pread(fd, p[:min(len(p), 333)], off)
	}
	f.ops.pwrite = func(fd int, p []byte, off int64) (int, error) {
		writes.inc()
		return sysio.Pwrite(fd, p[:min(len(p), 777)], off)
	}
	f.ops.pwriteDSync = f.ops.pwrite
	want := make([]byte, 10000)
	for i := range want {
		want[i] = byte(i % 253)
	}
	for _, flags := range []WriteFlags{0, WriteFUA} {
		if err := f.WriteAt(t.Context(), want, 12345, flags); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if err := f.ReadAt(t.Context(), got, 12345); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("data differs after short reads and writes")
	}
	if r, w := reads.n.Load(), writes.n.Load(); r != 31 || w != 2*13 {
		t.Errorf("%d preads and %d pwrites, want 31 and 26", r, w)
	}
}

func TestZeroProgress(t *testing.T) {
	f := openTestFile(t, 1<<20)
	f.ops.pread = func(int, []byte, int64) (int, error) { return 0, nil }
	f.ops.pwrite = func(int, []byte, int64) (int, error) { return 0, nil }
	buf := make([]byte, 512)
	if err := f.ReadAt(t.Context(), buf, 0); !errors.Is(err, ErrIO) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt with pread at EOF = %v, want ErrIO and io.ErrUnexpectedEOF", err)
	}
	if err := f.WriteAt(t.Context(), buf, 0, 0); !errors.Is(err, ErrIO) || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("WriteAt with pwrite writing nothing = %v, want ErrIO and io.ErrShortWrite", err)
	}
}

// TestFUAFallback: when pwritev2(RWF_DSYNC) is unsupported, a FUA write
// becomes pwrite + fdatasync, and the File remembers not to try again.
func TestFUAFallback(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EOPNOTSUPP, syscall.EINVAL, syscall.ENOSYS} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := openTestFile(t, 1<<20)
			var dsyncs, syncs counter
			f.ops.pwriteDSync = func(int, []byte, int64) (int, error) { dsyncs.inc(); return 0, errno }
			f.ops.fdatasync = func(fd int) error { syncs.inc(); return sysio.Fdatasync(fd) }
			buf := bytes.Repeat([]byte{0xab}, 4096)
			for i := range 3 {
				if err := f.WriteAt(t.Context(), buf, int64(i)*4096, WriteFUA); err != nil {
					t.Fatalf("FUA write %d: %v", i, err)
				}
			}
			if d, s := dsyncs.n.Load(), syncs.n.Load(); d != 1 || s != 3 || !f.noDSync.Load() {
				t.Errorf("pwritev2 called %d times, fdatasync %d, fallback remembered %v; want 1, 3, true", d, s, f.noDSync.Load())
			}
			got := make([]byte, 3*4096)
			if err := f.ReadAt(t.Context(), got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0xab}, 3*4096)) {
				t.Errorf("data after fallback writes differs (err %v)", err)
			}
		})
	}
	t.Run("EINVAL that is about the request", func(t *testing.T) {
		f := openTestFile(t, 1<<20)
		f.ops.pwriteDSync = func(int, []byte, int64) (int, error) { return 0, syscall.EINVAL }
		f.ops.pwrite = func(int, []byte, int64) (int, error) { return 0, syscall.EINVAL }
		if err := f.WriteAt(t.Context(), make([]byte, 512), 0, WriteFUA); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("WriteAt = %v, want EINVAL", err)
		}
		if f.noDSync.Load() {
			t.Error("fallback remembered although the plain write failed too")
		}
		if f.syncFailed.Load() != nil {
			t.Error("a failed submission latched a sync failure")
		}
	})
}

// TestSyncFailureLatches: after a failed fdatasync or FUA write, Linux
// forgets the writeback error, so the File must keep failing writes and
// flushes until it is reopened.
func TestSyncFailureLatches(t *testing.T) {
	fail := func(f *File) {
		f.ops.fdatasync = func(int) error { return syscall.EIO }
	}
	heal := func(f *File) { f.ops.fdatasync = sysio.Fdatasync }
	tests := []struct {
		name  string
		cause func(t *testing.T, f *File) error
	}{
		{"flush", func(t *testing.T, f *File) error {
			fail(f)
			defer heal(f)
			return f.Flush(t.Context())
		}},
		{"FUA write", func(t *testing.T, f *File) error {
			orig := f.ops.pwriteDSync
			defer func() { f.ops.pwriteDSync = orig }()
			f.ops.pwriteDSync = func(int, []byte, int64) (int, error) { return 0, syscall.EIO }
			return f.WriteAt(t.Context(), make([]byte, 512), 0, WriteFUA)
		}},
		{"FUA write fallback sync", func(t *testing.T, f *File) error {
			f.noDSync.Store(true)
			fail(f)
			defer heal(f)
			return f.WriteAt(t.Context(), make([]byte, 512), 0, WriteFUA)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openTestFile(t, 1<<20)
			if err := tt.cause(t, f); !errors.Is(err, ErrIO) {
				t.Fatalf("failing call = %v, want ErrIO", err)
			}
			ctx := t.Context()
			buf := make([]byte, 512)
			for name, err := range map[string]error{
				"Flush":       f.Flush(ctx),
				"WriteAt":     f.WriteAt(ctx, buf, 4096, 0),
				"WriteAt FUA": f.WriteAt(ctx, buf, 4096, WriteFUA),
				"Unmap":       f.Unmap(ctx, 0, 4096),
				"WriteZeroes": f.WriteZeroes(ctx, 0, 4096),
			} {
				if !errors.Is(err, ErrIO) || !strings.Contains(err.Error(), "reopen") {
					t.Errorf("%s after a sync failure = %v, want ErrIO asking for a reopen", name, err)
				}
			}
			if err := f.ReadAt(ctx, buf, 0); err != nil {
				t.Errorf("ReadAt after a sync failure: %v", err)
			}
			if err := f.Close(); !errors.Is(err, ErrIO) {
				t.Errorf("Close after a sync failure = %v, want ErrIO", err)
			}
		})
	}
}

// TestNoSpaceDoesNotLatch: a plain write refused for space has not lost
// anything acknowledged, so later writes are attempted normally.
func TestNoSpaceDoesNotLatch(t *testing.T) {
	f := openTestFile(t, 1<<20)
	f.ops.pwrite = func(int, []byte, int64) (int, error) { return 0, syscall.ENOSPC }
	buf := make([]byte, 512)
	if err := f.WriteAt(t.Context(), buf, 0, 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("WriteAt = %v, want ErrNoSpace", err)
	}
	f.ops.pwrite = sysio.Pwrite
	if err := f.WriteAt(t.Context(), buf, 0, 0); err != nil {
		t.Errorf("WriteAt after space came back: %v", err)
	}
	if err := f.Flush(t.Context()); err != nil {
		t.Errorf("Flush: %v", err)
	}
}

func TestWriteZeroesFallback(t *testing.T) {
	f := openTestFile(t, 4<<20)
	var zeroCalls counter
	f.ops.zero = func(int, int64, int64) error { zeroCalls.inc(); return syscall.EOPNOTSUPP }
	buf := bytes.Repeat([]byte{1}, 3<<20)
	if err := f.WriteAt(t.Context(), buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.WriteZeroes(t.Context(), 100, 3<<20-200); err != nil {
			t.Fatal(err)
		}
	}
	if n := zeroCalls.n.Load(); n != 1 || !f.noZeroRange.Load() {
		t.Errorf("ZERO_RANGE tried %d times, fallback remembered %v; want 1, true", n, f.noZeroRange.Load())
	}
	if err := f.ReadAt(t.Context(), buf, 0); err != nil {
		t.Fatal(err)
	}
	if buf[99] != 1 || buf[100] != 0 || buf[3<<20-101] != 0 || buf[3<<20-100] != 1 || bytes.Count(buf, []byte{0}) != 3<<20-200 {
		t.Error("WriteZeroes fallback zeroed the wrong bytes")
	}
}

// TestCloseWaitsForInFlight: Close must not close (and free for reuse) the
// descriptor under a pread that is still running.
func TestCloseWaitsForInFlight(t *testing.T) {
	f := openTestFile(t, 1<<20)
	entered, release := make(chan struct{}), make(chan struct{})
	var fdAtRead atomic.Int64
	f.ops.pread = func(fd int, p []byte, off int64) (int, error) {
		close(entered)
		<-release
		fdAtRead.Store(int64(fd))
		// The descriptor must still be ours: fstat it.
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	readDone := make(chan error, 1)
	go func() { readDone <- f.ReadAt(t.Context(), make([]byte, 512), 0) }()
	<-entered
	closeDone := make(chan error, 1)
	go func() { closeDone <- f.Close() }()
	select {
	case <-closeDone:
		t.Fatal("Close returned while a read was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-readDone; err != nil {
		t.Errorf("in-flight read: %v", err)
	}
	if err := <-closeDone; err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := f.ReadAt(t.Context(), make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
	}
}

func TestFSPhysicalBlock(t *testing.T) {
	for _, tt := range []struct {
		bs   int64
		want uint32
	}{{0, 512}, {512, 512}, {1024, 1024}, {3000, 2048}, {4096, 4096}, {65536, 4096}, {1 << 20, 4096}} {
		if got := fsPhysicalBlock(tt.bs); got != tt.want {
			t.Errorf("fsPhysicalBlock(%d) = %d, want %d", tt.bs, got, tt.want)
		}
	}
}

// TestIOAllocs: the data path allocates nothing (style guide §2.5).
func TestIOAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	f := openTestFile(t, 4<<20)
	buf := make([]byte, 64<<10)
	ctx := t.Context()
	for name, fn := range map[string]func(){
		"ReadAt":      func() { f.ReadAt(ctx, buf, 4096) },
		"WriteAt":     func() { f.WriteAt(ctx, buf, 4096, 0) },
		"WriteAt FUA": func() { f.WriteAt(ctx, buf, 4096, WriteFUA) },
		"Flush":       func() { f.Flush(ctx) },
		"Info":        func() { f.Info() },
	} {
		if n := testing.AllocsPerRun(20, fn); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", name, n)
		}
	}
}

// TestBufferedWritesStayInsideChunks records the pwrites a large buffered
// write makes: none may cross a 64 KiB boundary of the file (so that the
// page cache holds no folio larger than that), short writes are still
// continued, the bytes land where they belong, and a FUA write stays one
// call (RWF_DSYNC syncs only the range of its own call).
func TestBufferedWritesStayInsideChunks(t *testing.T) {
	f := openTestFile(t, 4<<20)
	type call struct{ off, n int64 }
	var calls []call
	real := f.ops.pwrite
	f.ops.pwrite = func(fd int, p []byte, off int64) (int, error) {
		calls = append(calls, call{off, int64(len(p))})
		if len(p) > 40000 { // a short write now and then
			p = p[:40000]
		}
		return real(fd, p, off)
	}
	var dsync []call
	realDSync := f.ops.pwriteDSync
	f.ops.pwriteDSync = func(fd int, p []byte, off int64) (int, error) {
		dsync = append(dsync, call{off, int64(len(p))})
		return realDSync(fd, p, off)
	}
	data := make([]byte, 1<<20+4096)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	const off = 3 * 4096
	if err := f.WriteAt(t.Context(), data, off, 0); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for i, c := range calls {
		if c.off/pageCacheChunk != (c.off+c.n-1)/pageCacheChunk {
			t.Errorf("pwrite %d at %d+%d crosses a %d-byte boundary", i, c.off, c.n, pageCacheChunk)
		}
		if i > 0 && c.off != calls[i-1].off+min(calls[i-1].n, 40000) {
			t.Errorf("pwrite %d at %d does not continue the previous one", i, c.off)
		}
		sum += min(c.n, 40000)
	}
	if sum != int64(len(data)) || len(calls) < 17 {
		t.Errorf("%d pwrites wrote %d bytes, want %d bytes in at least 17 calls", len(calls), sum, len(data))
	}
	got := make([]byte, len(data))
	if err := f.ReadAt(t.Context(), got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data read back differs")
	}
	if err := f.WriteAt(t.Context(), data, off, WriteFUA); err != nil {
		t.Fatal(err)
	}
	if len(dsync) != 1 || dsync[0] != (call{off, int64(len(data))}) {
		t.Errorf("FUA write made the RWF_DSYNC calls %v, want one of the whole range", dsync)
	}
}
