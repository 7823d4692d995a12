package sysio

import (
	"math/bits"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Open opens path with O_CLOEXEC added to flags, retrying EINTR.
func Open(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// Pread reads into p at off with one pread(2), retrying EINTR. Like the
// system call it may return fewer bytes than len(p), and 0 at end of file.
func Pread(fd int, p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, p, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// PreadNoWait reads into p at off with preadv2(RWF_NOWAIT): only data the
// page cache holds, EAGAIN (nothing read) when the read would wait for the
// medium. It may return fewer bytes than len(p). Kernels or files that do
// not support the flag return EOPNOTSUPP (EINVAL or ENOSYS on old
// kernels). Like PwriteDSync it passes one iovec on the stack, so it does
// not allocate; it is a raw system call (see ReadNonblock).
func PreadNoWait(fd int, p []byte, off int64) (int, error) {
	return rw2(true, unix.SYS_PREADV2, fd, p, off, unix.RWF_NOWAIT)
}

// ReadNonblock, WritevNonblock and PreadNoWait (through rw2) issue their
// system call with RawSyscall, which does not tell the Go scheduler that the thread is in the kernel. The
// scheduler's reaction to an ordinary system call costs more than these
// calls: entering one wakes the runtime's monitor thread whenever every P
// was idle, which at queue depth 1 is before every command, and that doubled
// the context switches per command (2.5 against 1.0 measured with qemu-img
// reads). It is safe only because none of them can wait: the descriptors
// are non-blocking sockets, and RWF_NOWAIT reads return EAGAIN rather than
// wait for the disk. Their cost is the copy of the data, bounded by the
// buffer size. Like PwriteDSync they do not tell the race detector that the
// kernel accesses p.

// ReadNonblock reads from the non-blocking socket fd into p with one
// read(2), retrying EINTR: EAGAIN when there is nothing to read, 0 at end
// of stream.
func ReadNonblock(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// WritevNonblock writes iov to the non-blocking socket fd with one
// writev(2), retrying EINTR. It may write less than all of iov (EAGAIN
// when the socket buffer is full).
func WritevNonblock(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Pwrite writes p at off with one pwrite(2), retrying EINTR. It may write
// fewer bytes than len(p).
func Pwrite(fd int, p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pwrite(fd, p, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// PwriteDSync writes p at off with pwritev2(RWF_DSYNC): the bytes it reports
// written are durable (data and the metadata needed to read them back, plus
// a device cache flush or FUA) when it returns. Kernels or file systems that
// do not support the flag return EOPNOTSUPP (EINVAL or ENOSYS on old
// kernels); the caller then falls back to Pwrite plus Fdatasync.
//
// It issues the system call directly with a single iovec on the stack
// because unix.Pwritev2 allocates the iovec array on every call. Unlike
// unix.Pwritev2 it does not tell the race detector that the kernel reads p.
// Callers must keep p unchanged until it returns (as with any write).
func PwriteDSync(fd int, p []byte, off int64) (int, error) {
	return rw2(false, unix.SYS_PWRITEV2, fd, p, off, unix.RWF_DSYNC)
}

// rw2 is preadv2 or pwritev2 (trap) of p at off with one iovec on the
// stack and the given RWF_ flags, retrying EINTR; raw issues it with
// RawSyscall6 (only for calls that cannot wait).
func rw2(raw bool, trap uintptr, fd int, p []byte, off int64, flags uintptr) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// The kernel takes the offset as two longs (pos_l, pos_h); on 64-bit
	// systems the high word is 0. Two shifts keep vet quiet on 64 bits.
	lo := uintptr(off)
	hi := uintptr(uint64(off) >> (bits.UintSize - 1) >> 1)
	for {
		iov := unix.Iovec{Base: &p[0]}
		iov.SetLen(len(p))
		var n uintptr
		var e unix.Errno
		if raw {
			n, _, e = unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, lo, hi, flags)
		} else {
			n, _, e = unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, lo, hi, flags)
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Fdatasync flushes the file's data and the metadata needed to read it,
// including the device's volatile write cache, retrying EINTR.
func Fdatasync(fd int) error {
	for {
		err := unix.Fdatasync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// Fsync is fsync(2) retrying EINTR; used for directories after a create.
func Fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

func fallocate(fd int, mode uint32, off, n int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// PunchHole deallocates [off, off+n) of a regular file without changing its
// size (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE). The range reads back as
// zeros; partial file-system blocks at the ends are zeroed in place. File
// systems without support return EOPNOTSUPP.
func PunchHole(fd int, off, n int64) error {
	return fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// ZeroRange makes [off, off+n) of a regular file read as zeros, normally by
// converting it to unwritten extents, without changing the file size
// (FALLOC_FL_ZERO_RANGE|FALLOC_FL_KEEP_SIZE). Unlike PunchHole the blocks
// stay allocated. File systems without support (tmpfs, for one) return
// EOPNOTSUPP.
func ZeroRange(fd int, off, n int64) error {
	return fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// rangeIoctl issues a block-device ioctl whose argument is a {start, length}
// pair of uint64, as BLKDISCARD and BLKZEROOUT take.
func rangeIoctl(fd int, req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Discard issues BLKDISCARD for [off, off+n) of a block device. Both must be
// multiples of the logical block size (else EINVAL); devices without discard
// return EOPNOTSUPP. The kernel drops the range from the page cache first.
// Discarded blocks need not read back as zeros.
func Discard(fd int, off, n int64) error {
	return rangeIoctl(fd, unix.BLKDISCARD, off, n)
}

// ZeroOut issues BLKZEROOUT for [off, off+n) of a block device: the range
// reads back as zeros afterwards. The kernel uses WRITE ZEROES or WRITE SAME
// when the device has it and writes zero pages otherwise.
func ZeroOut(fd int, off, n int64) error {
	return rangeIoctl(fd, unix.BLKZEROOUT, off, n)
}

// BlockDeviceSize returns a block device's size in bytes (BLKGETSIZE64).
func BlockDeviceSize(fd int) (int64, error) {
	n, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
	return int64(n), err
}

// LogicalBlockSize returns a block device's logical sector size (BLKSSZGET),
// the unit of addressing and of O_DIRECT alignment.
func LogicalBlockSize(fd int) (uint32, error) {
	return unix.IoctlGetUint32(fd, unix.BLKSSZGET)
}

// PhysicalBlockSize returns a block device's physical sector size
// (BLKPBSZGET), the smallest write it does without read-modify-write.
func PhysicalBlockSize(fd int) (uint32, error) {
	return unix.IoctlGetUint32(fd, unix.BLKPBSZGET)
}

func seek(fd int, off int64, whence int) (int64, error) {
	for {
		n, err := unix.Seek(fd, off, whence)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// SeekData returns the first offset >= off that holds data (SEEK_DATA). It
// returns ENXIO when there is no data at or after off. File systems that
// do not track holes report the whole file as data.
//
// It moves the file offset, which positional I/O ignores.
func SeekData(fd int, off int64) (int64, error) { return seek(fd, off, unix.SEEK_DATA) }

// SeekHole returns the first offset >= off inside a hole (SEEK_HOLE); the end
// of the file counts as a hole. It returns ENXIO when off is at or past the
// end of the file.
func SeekHole(fd int, off int64) (int64, error) { return seek(fd, off, unix.SEEK_HOLE) }

// LockExclusive takes an exclusive, non-blocking flock(2) on fd. It returns
// EWOULDBLOCK when another open file description holds a lock, including
// one in the same process. The lock goes away when fd is closed.
func LockExclusive(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// FSBlockSize returns the preferred I/O block size of the file system that
// holds fd (statfs f_bsize).
func FSBlockSize(fd int) (int64, error) {
	var st unix.Statfs_t
	for {
		err := unix.Fstatfs(fd, &st)
		if err == unix.EINTR {
			continue
		}
		return st.Bsize, err
	}
}

// DirectIOAlignment returns the O_DIRECT alignment statx reports for fd
// (STATX_DIOALIGN, Linux 6.1+): the buffer address alignment and the file
// offset/length alignment. known is false when the kernel or file system
// does not report it; offAlign is 0 with known true when the file does not
// support O_DIRECT at all.
func DirectIOAlignment(fd int) (memAlign, offAlign uint32, known bool, err error) {
	var stx unix.Statx_t
	for {
		err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, 0, false, err
	}
	if stx.Mask&unix.STATX_DIOALIGN == 0 {
		return 0, 0, false, nil
	}
	return stx.Dio_mem_align, stx.Dio_offset_align, true, nil
}
