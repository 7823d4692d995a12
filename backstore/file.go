package backstore

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

// FileOptions configure OpenFile.
type FileOptions struct {
	// ReadOnly opens the file or device O_RDONLY; writes, Unmap and
	// WriteZeroes fail with ErrReadOnly and Info().CanUnmap is false.
	ReadOnly bool
	// Direct opens with O_DIRECT, bypassing the page cache. Every ReadAt,
	// WriteAt and WriteZeroes must then use offsets and lengths that are
	// multiples of Info().IOAlignment and buffers that start on such a
	// boundary (buffers from internal/bufpool are 4096-aligned, which is
	// always enough); anything else fails with ErrMisaligned. If the file
	// system refuses O_DIRECT, OpenFile fails with an error wrapping
	// ErrUnsupported rather than silently using the page cache.
	Direct bool
	// CreateSize, when > 0, creates a missing path as a sparse regular file
	// of this many bytes (mode 0600; the parent directory must exist). An
	// existing regular file must be exactly this size, and an existing
	// block device must be this size too, else OpenFile fails naming both
	// sizes. 0 opens an existing path of any non-zero size.
	CreateSize int64
}

// File is a Device backed by a regular file or a block device, opened with
// OpenFile. It implements Unmapper, ZeroWriter, ExtentMapper and Resizer.
//
// Durability: WriteAt without WriteFUA leaves data in the page cache (or,
// with Direct, possibly in the device's volatile cache) until Flush. WriteAt
// with WriteFUA uses pwritev2(RWF_DSYNC), or pwrite plus fdatasync where
// that is unsupported. If a Flush or a FUA write ever fails, writes that
// were acknowledged earlier may be lost and the kernel reports that only
// once ("fsyncgate"), so the File latches the failure: every later write
// and Flush fails with ErrIO until the File is closed and reopened.
//
// All methods are safe for concurrent use. I/O is positional (pread,
// pwrite), so concurrent calls do not serialise; Close waits for calls in
// flight before it releases the descriptor.
type File struct {
	path string
	ops  fileOps

	// mu is read-held by every call that uses fd and write-held only by
	// Close, so the descriptor cannot be closed, and its number reused by
	// another open, under an in-flight pread.
	mu     sync.RWMutex
	fd     int
	closed bool // guarded by mu

	size     atomic.Int64
	info     Info  // fixed at open; Size is read from size
	align    int64 // O_DIRECT offset and length unit, 0 without Direct
	memAlign uintptr

	// chunk bounds buffered pwrites (pageCacheChunk), 0 with Direct,
	// which has no page cache to shape.
	chunk int64

	noDSync     atomic.Bool             // pwritev2(RWF_DSYNC) unsupported: pwrite + fdatasync
	noNoWait    atomic.Bool             // preadv2(RWF_NOWAIT) unsupported: NoWait reads always ErrWouldBlock
	noZeroRange atomic.Bool             // ZERO_RANGE / BLKZEROOUT unsupported: write zeros
	syncFailed  atomic.Pointer[opError] // first failed flush or FUA write, see File doc

	zeroOnce sync.Once
	zeros    []byte // aligned zeros for the WriteZeroes fallback
}

// fileOps are the system calls a File makes. OpenFile fills them from
// internal/sysio; tests substitute some to inject errors and short
// transfers. Each retries EINTR itself and returns a syscall.Errno.
type fileOps struct {
	pread func(fd int, p []byte, off int64) (int, error)
	// preadNoWait reads only cached data (RWF_NOWAIT): EAGAIN when it
	// would wait. nil when the File cannot (O_DIRECT).
	preadNoWait func(fd int, p []byte, off int64) (int, error)
	pwrite      func(fd int, p []byte, off int64) (int, error)
	pwriteDSync func(fd int, p []byte, off int64) (int, error)
	fdatasync   func(fd int) error
	// unmap is PUNCH_HOLE on files and BLKDISCARD on block devices; zero is
	// ZERO_RANGE or BLKZEROOUT.
	unmap func(fd int, off, n int64) error
	zero  func(fd int, off, n int64) error
	// seekData and seekHole are nil for block devices, which report a
	// single mapped extent.
	seekData func(fd int, off int64) (int64, error)
	seekHole func(fd int, off int64) (int64, error)
	size     func(fd int) (int64, error)
	close    func(fd int) error
}

const (
	// zeroChunk is the size of the writes the WriteZeroes fallback issues.
	zeroChunk = 1 << 20
	// pageCacheChunk bounds each buffered pwrite to an aligned 64 KiB
	// piece. The kernel sizes a new page-cache folio by the write that
	// creates it, and a later small write into a folio costs in proportion
	// to the folio's size (ext4 walks every block of it): on Linux 6.18 a
	// random 4 KiB pwrite took 22 µs into 1 MiB folios left by 1 MiB writes
	// and 6.5 µs into 64 KiB ones, while 1 MiB sequential writes cost the
	// same either way (see docs/performance.md).
	pageCacheChunk = 64 << 10
	// rangeChunk bounds a single fallocate or BLKDISCARD/BLKZEROOUT call so
	// that a huge Unmap or WriteZeroes checks ctx now and then.
	rangeChunk = 1 << 30
)

// fail wraps err with this file's path; see wrapErr.
func (f *File) fail(op string, off, n int64, err error) error {
	return wrapErr(f.path, op, off, n, err)
}

// check validates a call against the device state and size. The caller
// holds mu for reading.
func (f *File) check(op string, off, n int64, modifies bool) error {
	if f.closed {
		return f.fail(op, off, n, ErrClosed)
	}
	if modifies {
		if f.info.ReadOnly {
			return f.fail(op, off, n, ErrReadOnly)
		}
		if err := f.latched(op); err != nil {
			return err
		}
	}
	size := f.size.Load()
	// Written so that off+n cannot overflow.
	if off < 0 || n < 0 || off > size || n > size-off {
		return &opError{Op: op, Path: f.path, Off: off, Len: n, Kind: ErrOutOfRange,
			Msg: "access beyond the end of the device (size " + itoa(size) + ")"}
	}
	return nil
}

// checkAlign enforces O_DIRECT alignment so that a caller bug shows up as
// ErrMisaligned instead of an EINVAL from the kernel.
func (f *File) checkAlign(op string, p []byte, off, n int64) error {
	if f.align == 0 {
		return nil
	}
	if off%f.align != 0 || n%f.align != 0 ||
		(len(p) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(p)))%f.memAlign != 0) {
		return f.fail(op, off, n, ErrMisaligned)
	}
	return nil
}

// latched returns the latched sync failure, if any, as an error for op.
func (f *File) latched(op string) error {
	first := f.syncFailed.Load()
	if first == nil {
		return nil
	}
	return &opError{Op: op, Path: f.path, Len: -1, Kind: ErrIO, Err: first,
		Msg: "an earlier flush failed and acknowledged writes may be lost; close and reopen the device"}
}

// syncFailure wraps a failed fdatasync or FUA write and latches it.
func (f *File) syncFailure(op string, off, n int64, err error) error {
	e := f.fail(op, off, n, err)
	if oe, ok := e.(*opError); ok {
		f.syncFailed.CompareAndSwap(nil, oe)
	}
	return e
}

// ReadAt implements Device. It reads until p is full: a short pread inside
// the device is continued, and end of file before Size (the backing file was
// truncated underneath us) is ErrIO, never zero fill.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := int64(len(p))
	if err := f.check(opRead, off, n, false); err != nil {
		return err
	}
	if err := f.checkAlign(opRead, p, off, n); err != nil {
		return err
	}
	read := f.ops.pread
	noWait := ctx.Value(NoWait{}) != nil
	if noWait {
		if f.ops.preadNoWait == nil || f.noNoWait.Load() {
			return ErrWouldBlock
		}
		read = f.ops.preadNoWait
	}
	for done := 0; done < len(p); {
		m, err := read(f.fd, p[done:], off+int64(done))
		if err != nil {
			if noWait {
				switch err {
				case syscall.EAGAIN:
					return ErrWouldBlock
				case syscall.EOPNOTSUPP, syscall.EINVAL, syscall.ENOSYS:
					f.noNoWait.Store(true)
					return ErrWouldBlock
				}
			}
			return failAt(f.path, opRead, off, n, off+int64(done), err)
		}
		if m == 0 {
			return &opError{Op: opRead, Path: f.path, Off: off, Len: n, Kind: ErrIO, Err: io.ErrUnexpectedEOF,
				Msg: "backing store ended at " + itoa(off+int64(done)) + " (truncated underneath?)"}
		}
		done += m
	}
	return nil
}

// ReadsNoWait implements NoWaitReader: false with O_DIRECT, or once the
// kernel refused RWF_NOWAIT.
func (f *File) ReadsNoWait() bool { return f.ops.preadNoWait != nil && !f.noNoWait.Load() }

// WriteAt implements Device. With WriteFUA the data is durable on return.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64, flags WriteFlags) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := int64(len(p))
	if err := f.check(opWrite, off, n, true); err != nil {
		return err
	}
	if err := f.checkAlign(opWrite, p, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if flags&WriteFUA == 0 {
		if done, err := f.writeFull(f.ops.pwrite, p, off, f.chunk); err != nil {
			return failAt(f.path, opWrite, off, n, off+int64(done), err)
		}
		return nil
	}
	if !f.noDSync.Load() {
		// One call, not chunks: RWF_DSYNC syncs only the range of the
		// call that carries it.
		done, err := f.writeFull(f.ops.pwriteDSync, p, off, 0)
		if err == nil {
			return nil
		}
		if !dsyncUnsupported(err) {
			// The kernel may have reported, and so cleared, a writeback
			// error for any part of the file, not only this range.
			return f.syncFailure(opWrite, off, n, err)
		}
		// Finish with plain writes; the fdatasync below also covers any
		// bytes pwritev2 already wrote.
		if _, err := f.writeFull(f.ops.pwrite, p[done:], off+int64(done), f.chunk); err != nil {
			return f.fail(opWrite, off, n, err)
		}
		// Remember only once a plain write has worked, so that an EINVAL
		// that was really about this request does not switch us over.
		f.noDSync.Store(true)
	} else if _, err := f.writeFull(f.ops.pwrite, p, off, f.chunk); err != nil {
		return f.fail(opWrite, off, n, err)
	}
	if err := f.ops.fdatasync(f.fd); err != nil {
		return f.syncFailure(opWrite, off, n, err)
	}
	return nil
}

// dsyncUnsupported reports whether pwritev2(RWF_DSYNC) failed because the
// kernel or file system does not support it.
func dsyncUnsupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS)
}

// writeFull calls write until all of p is written, continuing after short
// writes. With chunk > 0 no call crosses a multiple of chunk in the file.
// It returns how many bytes were written.
func (f *File) writeFull(write func(int, []byte, int64) (int, error), p []byte, off int64, chunk int64) (int, error) {
	done := 0
	for done < len(p) {
		q := p[done:]
		if at := off + int64(done); chunk > 0 && int64(len(q)) > chunk-at%chunk {
			q = q[:chunk-at%chunk]
		}
		m, err := write(f.fd, q, off+int64(done))
		if err != nil {
			return done, err
		}
		if m == 0 {
			return done, io.ErrShortWrite
		}
		done += m
	}
	return done, nil
}

// Flush implements Device with fdatasync, which also flushes the device's
// volatile write cache. A read-only File has nothing to flush.
func (f *File) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return f.fail(opFlush, 0, -1, ErrClosed)
	}
	if f.info.ReadOnly {
		return nil
	}
	if err := f.latched(opFlush); err != nil {
		return err
	}
	if err := f.ops.fdatasync(f.fd); err != nil {
		return f.syncFailure(opFlush, 0, -1, err)
	}
	return nil
}

// Info implements Device.
func (f *File) Info() Info {
	info := f.info
	info.Size = f.size.Load()
	return info
}

// Close implements Device: it waits for calls in flight, runs fdatasync
// (unless read-only) and closes the descriptor, which also drops the flock
// or the block device's exclusive claim. It returns an error if the sync
// fails or failed earlier (see File). Calling it again returns nil.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if !f.info.ReadOnly {
		err = f.latched(opClose)
		if serr := f.ops.fdatasync(f.fd); serr != nil && err == nil {
			err = f.fail(opClose, 0, -1, serr)
		}
	}
	// Never retry close(2) on Linux: the descriptor is gone either way.
	if cerr := f.ops.close(f.fd); cerr != nil && err == nil {
		err = f.fail(opClose, 0, -1, cerr)
	}
	return err
}

// Unmap implements Unmapper: PUNCH_HOLE on files (the range then reads as
// zeros), BLKDISCARD on block devices (offset and length must be multiples
// of the logical block size; what the range reads as afterwards is up to
// the device, see Info.UnmapZeroes). It fails with ErrUnsupported when
// Info().CanUnmap is false.
func (f *File) Unmap(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.check(opUnmap, off, length, true); err != nil {
		return err
	}
	if !f.info.CanUnmap {
		return f.fail(opUnmap, off, length, ErrUnsupported)
	}
	if err := f.chunked(ctx, f.ops.unmap, off, length); err != nil {
		return f.fail(opUnmap, off, length, err)
	}
	return nil
}

// WriteZeroes implements ZeroWriter: ZERO_RANGE on files, BLKZEROOUT on
// block devices, and, where those are unsupported (tmpfs has no
// ZERO_RANGE), ordinary writes of zeros in 1 MiB pieces. It is not durable
// until Flush.
func (f *File) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.check(opWriteZeroes, off, length, true); err != nil {
		return err
	}
	if err := f.checkAlign(opWriteZeroes, nil, off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if !f.noZeroRange.Load() {
		err := f.chunked(ctx, f.ops.zero, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.ENOTTY) {
			return f.fail(opWriteZeroes, off, length, err)
		}
		f.noZeroRange.Store(true)
	}
	f.zeroOnce.Do(func() { f.zeros = bufpool.Aligned(zeroChunk) })
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(length-done, zeroChunk)
		if _, err := f.writeFull(f.ops.pwrite, f.zeros[:m], off+done, f.chunk); err != nil {
			return f.fail(opWriteZeroes, off, length, err)
		}
		done += m
	}
	return nil
}

// chunked applies op to [off, off+length) in rangeChunk pieces, checking
// ctx between them.
func (f *File) chunked(ctx context.Context, op func(fd int, off, n int64) error, off, length int64) error {
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(length-done, rangeChunk)
		if err := op(f.fd, off+done, m); err != nil {
			return err
		}
		done += m
	}
	return nil
}

// Extents implements ExtentMapper with SEEK_DATA and SEEK_HOLE. Extents
// start at off, are merged, end at most at Size, and the last one may run
// past off+length. File systems that do not track holes report everything
// as mapped; so do block devices, as one extent.
func (f *File) Extents(ctx context.Context, off, length int64, max int) ([]Extent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.check(opExtents, off, length, false); err != nil {
		return nil, err
	}
	if max <= 0 || length == 0 {
		return nil, nil
	}
	if f.ops.seekData == nil {
		return []Extent{{Offset: off, Length: length, Mapped: true}}, nil
	}
	size, end := f.size.Load(), off+length
	out := make([]Extent, 0, min(max, 16))
	for pos := off; pos < end && len(out) < max; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := f.ops.seekData(f.fd, pos)
		switch {
		case errors.Is(err, syscall.ENXIO):
			data = size // no data from pos to the end of the file
		case err != nil:
			return nil, f.fail(opExtents, off, length, err)
		}
		data = min(data, size)
		if data > pos {
			out = appendExtent(out, Extent{Offset: pos, Length: data - pos})
			pos = data
			continue
		}
		hole, err := f.ops.seekHole(f.fd, pos)
		switch {
		case errors.Is(err, syscall.ENXIO):
			hole = size // the file shrank under us
		case err != nil:
			return nil, f.fail(opExtents, off, length, err)
		}
		hole = min(hole, size)
		if hole <= pos { // only if the file changed between the seeks
			hole = end
		}
		out = appendExtent(out, Extent{Offset: pos, Length: hole - pos, Mapped: true})
		pos = hole
	}
	return out, nil
}

// appendExtent appends e, merging it into the last extent if they touch and
// agree.
func appendExtent(out []Extent, e Extent) []Extent {
	if n := len(out); n > 0 && out[n-1].Mapped == e.Mapped && out[n-1].Offset+out[n-1].Length == e.Offset {
		out[n-1].Length += e.Length
		return out
	}
	return append(out, e)
}

// Refresh implements Resizer: it re-reads the size of the file (fstat) or
// block device (BLKGETSIZE64). A shrink makes I/O past the new end fail with
// ErrOutOfRange.
func (f *File) Refresh() (Info, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return Info{}, f.fail(opRefresh, 0, -1, ErrClosed)
	}
	size, err := f.ops.size(f.fd)
	if err != nil {
		return Info{}, f.fail(opRefresh, 0, -1, err)
	}
	f.size.Store(size)
	return f.Info(), nil
}

// Path returns the path the File was opened with.
func (f *File) Path() string { return f.path }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
