package backstore

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"syscall"
)

// Errors specific to File, in addition to the Device errors in backstore.go.
var (
	// ErrInUse is returned by OpenFile when another opener holds the
	// backing store: a flock on a regular file (another daemon, or another
	// OpenFile in this process) or an exclusive claim on a block device (a
	// mounted file system, device mapper, md, another O_EXCL opener).
	ErrInUse = errors.New("backstore: backing store is in use")
	// ErrMisaligned is returned by a Direct device for a buffer, offset or
	// length that O_DIRECT cannot take (see Info.IOAlignment).
	ErrMisaligned = errors.New("backstore: I/O not aligned for O_DIRECT")
)

// Operation names used in File errors.
const (
	opOpen        = "open"
	opRead        = "read"
	opWrite       = "write"
	opFlush       = "flush"
	opUnmap       = "unmap"
	opWriteZeroes = "write zeroes"
	opExtents     = "extents"
	opRefresh     = "refresh"
	opClose       = "close"
)

// opError is the error every File method returns. It unwraps to both the
// package sentinel (Kind, for errors.Is(err, ErrIO) and friends) and the
// underlying cause (usually a syscall.Errno), and reads
//
//	backstore: write /srv/lun0.img at 4096+512: input/output error
type opError struct {
	Op   string
	Path string
	Off  int64 // with Len, the byte range; Len < 0 means no range
	Len  int64
	Kind error  // a package sentinel, or nil
	Msg  string // an explanation that replaces Kind's text, or ""
	Err  error  // the cause, or nil
	// at is 1 + the offset of the first byte that failed, 0 when unknown.
	at int64
}

// FailedOffset is the first failing byte, or -1 (see FailedAt).
func (e *opError) FailedOffset() int64 { return e.at - 1 }

// failAt wraps err like File.fail and records the first failing byte.
func failAt(path, op string, off, n, at int64, err error) error {
	e := wrapErr(path, op, off, n, err)
	if oe, ok := e.(*opError); ok && oe.Kind == ErrIO {
		oe.at = at + 1
	}
	return e
}

func (e *opError) Error() string {
	var b strings.Builder
	b.WriteString("backstore: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(e.Path)
	if e.Len >= 0 {
		b.WriteString(" at ")
		b.WriteString(strconv.FormatInt(e.Off, 10))
		b.WriteByte('+')
		b.WriteString(strconv.FormatInt(e.Len, 10))
	}
	switch {
	case e.Msg != "":
		b.WriteString(": ")
		b.WriteString(e.Msg)
	case e.Err == nil && e.Kind != nil:
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Kind.Error(), "backstore: "))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *opError) Unwrap() []error {
	switch {
	case e.Kind == nil:
		return []error{e.Err}
	case e.Err == nil:
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// wrapErr is the one place that maps a failure to the error a File returns:
// it attaches the operation, path and byte range, and classifies the cause
// into a package sentinel so the scsi package can pick sense data with
// errors.Is:
//
//   - EIO, ENXIO, ENODEV, ESTALE, EBADMSG, a short read or write: ErrIO
//   - ENOSPC, EDQUOT: ErrNoSpace
//   - EROFS, and EBADF or EPERM on a modifying operation: ErrReadOnly
//   - EOPNOTSUPP, ENOTTY, ENOSYS: ErrUnsupported
//   - a package sentinel passed as err: itself
//
// Anything else (EINVAL, say) is wrapped without a sentinel. n < 0 means
// the operation has no byte range. Context errors never come here: File
// returns ctx.Err() unchanged, as Memory does, so an aborted task stays
// recognisable.
func wrapErr(path, op string, off, n int64, err error) error {
	e := &opError{Op: op, Path: path, Off: off, Len: n, Err: err}
	var errno syscall.Errno
	switch {
	case isSentinel(err):
		e.Kind, e.Err = err, nil
	case errors.As(err, &errno):
		e.Kind = errnoKind(op, errno)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrShortWrite):
		e.Kind = ErrIO
	}
	return e
}

func errnoKind(op string, errno syscall.Errno) error {
	modifying := op == opWrite || op == opUnmap || op == opWriteZeroes
	switch errno {
	case syscall.EIO, syscall.ENXIO, syscall.ENODEV, syscall.ESTALE, syscall.EBADMSG:
		return ErrIO
	case syscall.ENOSPC, syscall.EDQUOT:
		return ErrNoSpace
	case syscall.EROFS:
		return ErrReadOnly
	case syscall.EBADF, syscall.EPERM:
		if modifying {
			return ErrReadOnly
		}
	case syscall.EOPNOTSUPP, syscall.ENOTTY, syscall.ENOSYS:
		return ErrUnsupported
	}
	return nil
}

func isSentinel(err error) bool {
	switch err {
	case ErrIO, ErrNoSpace, ErrOutOfRange, ErrReadOnly, ErrClosed, ErrUnsupported, ErrInUse, ErrMisaligned:
		return true
	}
	return false
}
