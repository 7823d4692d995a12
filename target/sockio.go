package target

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/internal/sysio"
)

// sockIO reads and writes a connection's TCP socket in full feature phase
// with non-blocking system calls that do not go through the Go scheduler's
// system call bookkeeping (sysio.ReadNonblock, sysio.WritevNonblock), and
// waits in the runtime's network poller when the socket has nothing to
// read or no room to write, honouring the connection's deadlines like
// net.Conn. A connection that is not a socket (tests wrap them) uses
// net.Conn's Read and writev.
type sockIO struct {
	nc net.Conn
	rc syscall.RawConn // nil: use nc

	// The callbacks given to rc and their arguments and results live in
	// the struct, so that a read or write allocates nothing (a closure
	// over locals would be allocated every time).
	readFn, writeFn func(fd uintptr) bool
	rp              []byte // reader only
	rn              int
	rerr            error
	poll            connPoll     // reader only (busypoll.go)
	iov             []unix.Iovec // writer only
	werr            error
}

func newSockIO(nc net.Conn) *sockIO {
	s := &sockIO{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc = rc
		}
	}
	s.readFn, s.writeFn = s.readOnce, s.writeSome
	return s
}

// Read implements io.Reader.
func (s *sockIO) Read(p []byte) (int, error) {
	if s.rc == nil {
		return s.nc.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rp = p
	err := s.rc.Read(s.readFn)
	s.rp = nil
	n, rerr := s.rn, s.rerr
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce is the read callback: false asks rc to wait until the socket
// is readable and call it again. An empty socket may first be polled for a
// while (busypoll.go).
func (s *sockIO) readOnce(fd uintptr) bool {
	s.rn, s.rerr = sysio.ReadNonblock(int(fd), s.rp)
	if s.rerr == unix.EAGAIN {
		if n, polled, err := s.poll.poll(int(fd), s.rp); polled {
			s.rn, s.rerr = n, err
		}
	}
	return s.rerr != unix.EAGAIN
}

// writev writes bufs whole.
func (s *sockIO) writev(bufs [][]byte) error {
	if s.rc == nil {
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(s.nc)
		return err
	}
	iov := s.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	full := iov
	s.iov, s.werr = iov, nil
	err := s.rc.Write(s.writeFn)
	clear(full) // drop the references to the data
	s.iov = full[:0]
	if err != nil {
		return err
	}
	return s.werr
}

// writeSome is the write callback: it writes until s.iov is empty or the
// socket is full (false: rc waits until it is writable and calls again).
func (s *sockIO) writeSome(fd uintptr) bool {
	for len(s.iov) > 0 {
		n, err := sysio.WritevNonblock(int(fd), s.iov)
		if err == unix.EAGAIN {
			return false
		}
		if err != nil {
			s.werr = err
			return true
		}
		s.iov = consumeIovec(s.iov, n)
	}
	return true
}

// consumeIovec drops the first n bytes from iov.
func consumeIovec(iov []unix.Iovec, n int) []unix.Iovec {
	for n > 0 && len(iov) > 0 {
		l := int(iov[0].Len)
		if l <= n {
			n -= l
			iov = iov[1:]
			continue
		}
		iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
		iov[0].SetLen(l - n)
		n = 0
	}
	return iov
}
