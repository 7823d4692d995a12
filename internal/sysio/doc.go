// Package sysio holds the thin Linux system-call wrappers the backstore
// package needs and the standard library lacks: block-device geometry
// ioctls, fallocate modes, BLKDISCARD and BLKZEROOUT, fdatasync,
// pwritev2(RWF_DSYNC), preadv2(RWF_NOWAIT), SEEK_DATA/SEEK_HOLE, O_DIRECT
// alignment and sysfs queue attributes; and for the target's sockets,
// non-blocking read and writev as raw system calls (see ReadNonblock).
//
// Every wrapper retries EINTR and returns the raw errno (a syscall.Errno)
// unwrapped, so the caller can classify it in one place. The package keeps
// no state and imports nothing else of this module. On systems other than
// Linux it is empty.
package sysio
