package backstore

import "golang.org/x/sys/unix"

// opAllocation names Allocation in errors.
const opAllocation = "allocation"

// Allocation implements AllocationReporter for regular files: Used is
// st_blocks × 512 from fstat, Available the bytes of the file that are not
// allocated yet, capped by what the file system still gives unprivileged
// users (fstatfs f_bavail). Block devices report ErrUnsupported: how much
// of a thin volume its pool has allocated is not visible through the
// device node.
func (f *File) Allocation() (Allocation, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return Allocation{}, f.fail(opAllocation, 0, -1, ErrClosed)
	}
	if f.ops.seekData == nil {
		return Allocation{}, f.fail(opAllocation, 0, -1, ErrUnsupported)
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return Allocation{}, f.fail(opAllocation, 0, -1, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &fs); err != nil {
		return Allocation{}, f.fail(opAllocation, 0, -1, err)
	}
	used := st.Blocks * 512
	avail := max(f.size.Load()-used, 0)
	if free := int64(fs.Bavail) * int64(fs.Bsize); free >= 0 && free < avail {
		avail = free
	}
	return Allocation{Used: used, Available: avail, Shared: true}, nil
}
