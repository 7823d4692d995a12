package target

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reapWait bounds how long the device server waits for the sessions it
// asked to end.
const reapWait = 2 * time.Second

var errPeerClosed = errors.New("iscsi: initiator closed the connection")

// nexusReaper is the hook the device server calls before it reports a
// conflict caused by another I_T nexus (RESERVATION CONFLICT, MEDIUM
// REMOVAL PREVENTED). Sessions of node n whose initiator has already
// closed its TCP connection (the FIN is queued but their receiver has not
// run yet) end first, so that an initiator that drops one session and at
// once uses another finds the I_T nexus loss processed (SAM-5 §6.3.4):
// the reservation or the medium removal prevention of the lost nexus is
// gone. Sessions whose connection is already closed but whose nexus loss
// is still being processed are waited for too. libiscsi
// PreventAllow.ITNexusLoss and Sanitize.Reset do exactly that.
func (s *Server) nexusReaper(n *Node) func() {
	return func() {
		var dead, ending []*session
		s.sessions.forNode(n, func(ss *session) {
			switch c := ss.conn; {
			case c == nil:
			case c.isClosed():
				ending = append(ending, ss) // closed, its nexus loss not yet processed
			case peerClosed(c.nc):
				dead = append(dead, ss)
			}
		})
		if len(dead) == 0 && len(ending) == 0 {
			return
		}
		timer := time.NewTimer(reapWait)
		defer timer.Stop()
		for _, ss := range dead {
			ss.conn.close(errPeerClosed)
		}
		for _, ss := range append(dead, ending...) {
			select {
			case <-ss.ended:
			case <-timer.C:
				return
			}
		}
	}
}

// peerClosed reports whether the peer has closed a TCP connection: a
// non-blocking MSG_PEEK reads end of file. Pending data (a PDU not yet
// received) counts as open. It does not disturb the receiver, which
// reads through the same descriptor.
func peerClosed(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = n == 0 && err == nil
	})
	return closed
}
