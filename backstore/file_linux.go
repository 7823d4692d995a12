package backstore

import (
	"errors"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/internal/bufpool"
	"github.com/iscsi-target/iscsi-target/internal/sysio"
)

// OpenFile opens a regular file or a block device as a Device.
//
// A regular file is locked with an exclusive, non-blocking flock, so two
// daemons (or two OpenFile calls) can never serve the same file; the loser
// gets ErrInUse naming the path. A block device is opened O_EXCL, which the
// kernel refuses (ErrInUse) while the device is mounted or claimed by
// device mapper, md or another exclusive opener. Read-only opens lock and
// claim exclusively too.
//
// Info is filled in as follows. Regular files: LogicalBlockSize 0,
// PhysicalBlockSize the file system block size capped to 4096, Rotational
// from the queue of the block device holding the file system (false when
// there is none, as on tmpfs), UnmapZeroes true, CanUnmap true when the
// file system can punch holes. Block devices: the sizes from BLKSSZGET and
// BLKPBSZGET, Rotational and discard support from
// /sys/dev/block/MAJ:MIN/queue, UnmapZeroes false (a discarded range need
// not read back as zeros).
func OpenFile(path string, opts FileOptions) (*File, error) {
	fail := func(kind error, msg string, err error) (*File, error) {
		return nil, &opError{Op: opOpen, Path: path, Len: -1, Kind: kind, Msg: msg, Err: err}
	}
	if opts.CreateSize < 0 {
		return fail(nil, "negative CreateSize "+itoa(opts.CreateSize), nil)
	}
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if errors.Is(err, unix.ENOENT) && opts.CreateSize > 0 {
		if err := createSparse(path, opts.CreateSize); err != nil {
			return nil, err
		}
		err = unix.Stat(path, &st)
	}
	if err != nil {
		return nil, wrapErr(path, opOpen, 0, -1, err)
	}
	block := st.Mode&unix.S_IFMT == unix.S_IFBLK
	if !block && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fail(nil, "not a regular file or block device", nil)
	}

	flags := unix.O_RDWR
	if opts.ReadOnly {
		flags = unix.O_RDONLY
	}
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	if block {
		// O_EXCL without O_CREAT claims a block device exclusively.
		flags |= unix.O_EXCL
	}
	fd, err := sysio.Open(path, flags, 0)
	switch {
	case err == nil:
	case block && errors.Is(err, unix.EBUSY):
		return fail(ErrInUse, "block device is in use (mounted, or held by device mapper, md or another exclusive opener)", err)
	case opts.Direct && errors.Is(err, unix.EINVAL):
		return fail(ErrUnsupported, "the file system refuses O_DIRECT; open without Direct", err)
	case !opts.ReadOnly && errors.Is(err, unix.EROFS):
		return fail(ErrReadOnly, "read-only file system or device; open with ReadOnly", err)
	default:
		return nil, wrapErr(path, opOpen, 0, -1, err)
	}

	// From here on fd is ours; init* fill in ops and Info from the
	// descriptor (not the path, which may have been replaced meanwhile).
	f := &File{path: path, fd: fd}
	if !opts.Direct {
		f.chunk = pageCacheChunk
	}
	if block {
		err = f.initBlock(&st, opts)
	} else {
		err = f.initRegular(&st, opts)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return f, nil
}

// createSparse creates path as an empty file of size bytes, then makes the
// file and its directory entry durable, so that a crash cannot leave a
// short file that a restart would reject for its size.
func createSparse(path string, size int64) error {
	fd, err := sysio.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return nil // created by someone else meanwhile; OpenFile checks it
	}
	if err != nil {
		return &opError{Op: opOpen, Path: path, Len: -1, Msg: "create", Err: err}
	}
	err = unix.Ftruncate(fd, size)
	if err == nil {
		err = sysio.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		unix.Unlink(path)
		return wrapErr(path, opOpen, 0, -1, err)
	}
	return nil
}

func syncDir(dir string) error {
	fd, err := sysio.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = sysio.Fsync(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// initRegular finishes opening a regular file: lock, size, geometry and
// capability probes.
func (f *File) initRegular(pathSt *unix.Stat_t, opts FileOptions) error {
	fail := func(kind error, msg string, err error) error {
		return &opError{Op: opOpen, Path: f.path, Len: -1, Kind: kind, Msg: msg, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return wrapErr(f.path, opOpen, 0, -1, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != pathSt.Ino || st.Dev != pathSt.Dev {
		return fail(nil, "path was replaced while opening", nil)
	}
	// flock locks belong to the open file description, so a second
	// OpenFile in this process conflicts too, and the lock dies with the
	// descriptor (O_CLOEXEC keeps it out of child processes). It is
	// advisory: it stops other iscsi-target instances and tools that use
	// flock(1), not a plain writer.
	if err := sysio.LockExclusive(f.fd); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fail(ErrInUse, "file is locked by another opener (is another iscsi-target serving it?)", err)
		}
		return fail(nil, "flock", err)
	}
	switch {
	case opts.CreateSize > 0 && st.Size != opts.CreateSize:
		return fail(nil, "existing file is "+itoa(st.Size)+" bytes but CreateSize is "+itoa(opts.CreateSize), nil)
	case st.Size == 0:
		return fail(nil, "file is empty (set CreateSize to create it with a size)", nil)
	}

	f.ops = fileOps{
		pread: sysio.Pread, preadNoWait: sysio.PreadNoWait, pwrite: sysio.Pwrite, pwriteDSync: sysio.PwriteDSync,
		fdatasync: sysio.Fdatasync, unmap: sysio.PunchHole, zero: sysio.ZeroRange,
		seekData: sysio.SeekData, seekHole: sysio.SeekHole, size: fileSize, close: unix.Close,
	}
	f.size.Store(st.Size)
	f.info = Info{
		PhysicalBlockSize: 4096,
		ReadOnly:          opts.ReadOnly,
		UnmapZeroes:       true,
		Direct:            opts.Direct,
	}
	if bs, err := sysio.FSBlockSize(f.fd); err == nil {
		f.info.PhysicalBlockSize = fsPhysicalBlock(bs)
	}
	if r, err := sysio.QueueUint(sysio.SysfsRoot, unix.Major(st.Dev), unix.Minor(st.Dev), "rotational"); err == nil {
		f.info.Rotational = r == 1
	}
	if !opts.ReadOnly {
		f.info.CanUnmap = probePunchHole(f.fd, st.Size)
	}
	if opts.Direct {
		return f.initDirect(4096)
	}
	return nil
}

// fsPhysicalBlock turns a statfs block size into a physical block size: a
// power of two from 512 to 4096.
func fsPhysicalBlock(bs int64) uint32 {
	p := uint32(512)
	for p < 4096 && int64(p)*2 <= bs {
		p *= 2
	}
	return p
}

// probePunchHole reports whether the file system can punch holes, without
// touching data: it punches one 4 KiB block past the end of the file with
// KEEP_SIZE. There is no data beyond EOF, so at most blocks preallocated
// past the end are released; a file system without support fails with
// EOPNOTSUPP instead. (A zero-length probe is no good: fallocate checks the
// length before the mode.)
func probePunchHole(fd int, size int64) bool {
	end := (size + 4095) &^ 4095
	return sysio.PunchHole(fd, end, 4096) == nil
}

func fileSize(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// initBlock finishes opening a block device.
func (f *File) initBlock(pathSt *unix.Stat_t, opts FileOptions) error {
	fail := func(msg string, err error) error {
		return &opError{Op: opOpen, Path: f.path, Len: -1, Msg: msg, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return wrapErr(f.path, opOpen, 0, -1, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != pathSt.Rdev {
		return fail("path was replaced while opening", nil)
	}
	size, err := sysio.BlockDeviceSize(f.fd)
	if err != nil {
		return fail("BLKGETSIZE64", err)
	}
	lbs, err := sysio.LogicalBlockSize(f.fd)
	if err != nil {
		return fail("BLKSSZGET", err)
	}
	pbs, err := sysio.PhysicalBlockSize(f.fd)
	if err != nil {
		return fail("BLKPBSZGET", err)
	}
	switch {
	case opts.CreateSize > 0 && size != opts.CreateSize:
		return fail("block device is "+itoa(size)+" bytes but CreateSize is "+itoa(opts.CreateSize), nil)
	case size == 0:
		return fail("block device has size 0", nil)
	}

	f.ops = fileOps{
		pread: sysio.Pread, preadNoWait: sysio.PreadNoWait, pwrite: sysio.Pwrite, pwriteDSync: sysio.PwriteDSync,
		fdatasync: sysio.Fdatasync, unmap: sysio.Discard, zero: sysio.ZeroOut,
		size: sysio.BlockDeviceSize, close: unix.Close,
	}
	f.size.Store(size)
	f.info = Info{
		LogicalBlockSize:  lbs,
		PhysicalBlockSize: max(pbs, lbs),
		BlockDevice:       true,
		ReadOnly:          opts.ReadOnly,
		Direct:            opts.Direct,
	}
	maj, mnr := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	if r, err := sysio.QueueUint(sysio.SysfsRoot, maj, mnr, "rotational"); err == nil {
		f.info.Rotational = r == 1
	}
	if d, err := sysio.QueueUint(sysio.SysfsRoot, maj, mnr, "discard_max_bytes"); err == nil {
		f.info.CanUnmap = d > 0 && !opts.ReadOnly
	}
	if opts.Direct {
		return f.initDirect(lbs)
	}
	return nil
}

// initDirect sets the O_DIRECT alignment from statx (STATX_DIOALIGN), or
// fallback when the kernel does not say, and proves O_DIRECT works with one
// aligned read: some file systems accept the open flag and refuse the I/O.
func (f *File) initDirect(fallback uint32) error {
	fail := func(msg string, err error) error {
		return &opError{Op: opOpen, Path: f.path, Len: -1, Kind: ErrUnsupported, Msg: msg, Err: err}
	}
	memAlign, offAlign, known, err := sysio.DirectIOAlignment(f.fd)
	switch {
	case err != nil || !known:
		memAlign, offAlign = fallback, fallback
	case offAlign == 0:
		return fail("the file system does not support O_DIRECT for this file; open without Direct", nil)
	}
	if offAlign > bufpool.Align || memAlign > bufpool.Align {
		return fail("O_DIRECT needs "+itoa(int64(max(offAlign, memAlign)))+"-byte alignment, more than the 4096 our buffers have", nil)
	}
	f.align, f.memAlign = int64(offAlign), uintptr(max(memAlign, 1))
	f.info.IOAlignment = offAlign
	// Without a page cache every read waits for the medium.
	f.ops.preadNoWait = nil
	if size := f.size.Load(); size >= int64(offAlign) {
		buf := bufpool.Aligned(int(offAlign))
		if _, err := sysio.Pread(f.fd, buf, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fail("the file system refuses O_DIRECT reads; open without Direct", err)
			}
			return wrapErr(f.path, opOpen, 0, -1, err)
		}
	}
	return nil
}
