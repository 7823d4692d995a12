// Package backstore is the storage under a logical unit: regular files and
// block devices accessed with pread/pwritev, fdatasync, fallocate and
// BLKDISCARD through golang.org/x/sys/unix, plus an in-memory device for
// tests.
//
// The package speaks bytes and errors, never SCSI: the scsi package maps
// the errors returned here (ErrIO, ErrNoSpace, ...) to sense data.
package backstore

import (
	"context"
	"errors"
)

// Errors a Device returns, wrapped with detail (use errors.Is). The scsi
// package maps them to sense data: ErrIO to MEDIUM ERROR, ErrNoSpace to the
// space-allocation-failed sense, ErrOutOfRange to LBA OUT OF RANGE.
var (
	ErrIO          = errors.New("backstore: I/O error")
	ErrNoSpace     = errors.New("backstore: no space left on the backing store")
	ErrOutOfRange  = errors.New("backstore: access beyond the end of the device")
	ErrReadOnly    = errors.New("backstore: device is read-only")
	ErrClosed      = errors.New("backstore: device is closed")
	ErrUnsupported = errors.New("backstore: operation not supported by this device")
	// ErrWouldBlock is returned by ReadAt under a NoWait context when the
	// data is not at hand (not in the page cache) and reading it would
	// wait for the medium. Nothing was read; the caller retries without
	// NoWait where waiting is fine.
	ErrWouldBlock = errors.New("backstore: the read would wait for the medium")
)

// NoWait is a context key. A context whose Value(NoWait{}) is not nil asks
// ReadAt not to wait for the medium: a File then reads only what the page
// cache holds (preadv2 RWF_NOWAIT) and returns ErrWouldBlock otherwise.
// Devices that cannot tell (memory, test devices) ignore it.
type NoWait struct{}

// NoWaitReader is implemented by devices that can say whether NoWait reads
// can succeed at all (a File opened with O_DIRECT has no page cache, so
// they never can). Devices without it are taken to read at once.
type NoWaitReader interface {
	ReadsNoWait() bool
}

// WriteFlags modify a single write.
type WriteFlags uint8

const (
	// WriteFUA makes the write durable before WriteAt returns (SBC FUA bit,
	// or any write while the volatile write cache is disabled).
	WriteFUA WriteFlags = 1 << iota
)

// Info describes a device. It is fixed at open time except Size, which
// changes when the backing file or device is resized.
type Info struct {
	// Size in bytes.
	Size int64
	// LogicalBlockSize is the device's logical sector size for block
	// devices (BLKSSZGET), 0 for regular files.
	LogicalBlockSize uint32
	// PhysicalBlockSize (BLKPBSZGET, or the file system block size).
	PhysicalBlockSize uint32
	// BlockDevice is true for a block device.
	BlockDevice bool
	// ReadOnly is true when the device was opened read-only.
	ReadOnly bool
	// Rotational is true when the device reports itself as rotational.
	Rotational bool
	// CanUnmap is true when Unmap deallocates (punch hole / BLKDISCARD).
	CanUnmap bool
	// UnmapZeroes is true when reading unmapped ranges returns zeros.
	UnmapZeroes bool
	// Direct is true when the device does I/O with O_DIRECT.
	Direct bool
	// IOAlignment, when non-zero, is the unit that offsets and lengths of
	// ReadAt, WriteAt and WriteZeroes must be multiples of (O_DIRECT), and
	// buffers must start on such a boundary too, up to 4096 bytes: buffers
	// from internal/bufpool always qualify. Misaligned I/O fails with
	// ErrMisaligned. 0 means any offset, length and buffer will do.
	IOAlignment uint32
}

// Device is the storage a logical unit reads and writes. Offsets and lengths
// are in bytes; the caller (the scsi package) keeps them within Size and
// aligned to its block size. All methods are safe for concurrent use.
//
// ctx is the task's context: it is cancelled when the task is aborted. File
// I/O cannot be interrupted once issued, but an implementation checks ctx
// before it starts and between the pieces of a long operation.
type Device interface {
	// ReadAt fills p from offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at offset off; with WriteFUA, p is durable on return.
	WriteAt(ctx context.Context, p []byte, off int64, flags WriteFlags) error
	// Flush makes every completed write durable (fdatasync).
	Flush(ctx context.Context) error
	// Info returns the device's description.
	Info() Info
	// Close flushes and releases the device.
	Close() error
}

// Unmapper is implemented by devices that can deallocate ranges (thin
// provisioning): fallocate(PUNCH_HOLE) on files, BLKDISCARD on block devices.
type Unmapper interface {
	Unmap(ctx context.Context, off, length int64) error
}

// ZeroWriter is implemented by devices that can write zeros to a range
// without transferring them (fallocate ZERO_RANGE, BLKZEROOUT).
type ZeroWriter interface {
	WriteZeroes(ctx context.Context, off, length int64) error
}

// Extent is a run of bytes that is either mapped (holds data) or a hole.
type Extent struct {
	Offset int64
	Length int64
	Mapped bool
}

// ExtentMapper is implemented by devices that can report allocation
// (SEEK_DATA/SEEK_HOLE on files), for GET LBA STATUS.
type ExtentMapper interface {
	// Extents returns the extents covering [off, off+length), in order,
	// merged, at most max of them (the last one may extend past the range).
	Extents(ctx context.Context, off, length int64, max int) ([]Extent, error)
}

// Resizer is implemented by devices whose size can change while open; Refresh
// re-reads the size of the backing file or device.
type Resizer interface {
	Refresh() (Info, error)
}

// FailedAt returns the byte offset of the first byte an I/O error was about,
// when the error knows it (a read or write that failed part way, or an
// injected fault). The scsi package reports it as the failing LBA in the
// sense data's INFORMATION field.
func FailedAt(err error) (int64, bool) {
	var f interface{ FailedOffset() int64 }
	if errors.As(err, &f) {
		if off := f.FailedOffset(); off >= 0 {
			return off, true
		}
	}
	return 0, false
}

// Allocation is how much of its backing store a thin device uses, in
// bytes. Used counts the space allocated to the device (a file's st_blocks),
// Available what could still be allocated to it: the room left below the
// device size, capped by the free space of the store. Shared reports that
// Available is shared with other users of the store (a file system).
type Allocation struct {
	Used, Available int64
	Shared          bool
}

// AllocationReporter is implemented by devices that can tell how much of
// their backing store they occupy. One call costs at most a couple of
// system calls (fstat, fstatfs); it is not meant for every I/O.
type AllocationReporter interface {
	Allocation() (Allocation, error)
}
