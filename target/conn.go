package target

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// loginMaxSegment is the MaxRecvDataSegmentLength in force during login,
// before any negotiation (RFC 7143 §13.12: the default 8192).
const loginMaxSegment = 8192

// conn is one TCP connection. Its goroutine (serve) is the receiver: it
// runs login, then reads and routes every PDU. A transmitter goroutine,
// started at full feature phase, alone writes to the socket.
type conn struct {
	srv *Server
	nc  net.Conn
	sio *sockIO // nc's reads and writev (sockio.go)
	// source is the remote IP address (per-source connection limit).
	source string
	br     *rxReader
	id     uint64
	log    *logrus.Entry
	// nop are the liveness timers in force when the connection came.
	nop *Timers

	// Receiver-owned.
	hdr     pdu.Header
	scratch []byte
	cid     uint16
	sess    *session

	// Fixed once full feature phase starts (read by the transmitter).
	digests pdu.Digests
	params  Params

	tx *transmitter

	inl inlineState // inline execution (inline.go)

	lastRx   atomic.Int64 // unix nanoseconds of the last PDU received
	inFFP    atomic.Bool
	closeMu  sync.Mutex
	closed   chan struct{}
	closeErr error
}

func newConn(s *Server, nc net.Conn) *conn {
	sio := newSockIO(nc)
	c := &conn{
		srv:    s,
		nc:     nc,
		sio:    sio,
		br:     newRxReader(sio, s.rxBufs),
		id:     s.nextID.Add(1),
		closed: make(chan struct{}),
	}
	c.log = s.log.WithFields(logrus.Fields{"conn": c.id, "remote": nc.RemoteAddr().String()})
	c.lastRx.Store(time.Now().UnixNano())
	c.nop = s.timers.Load()
	tuneSocket(nc, c.nop.NOPTimeout)
	return c
}

// tuneSocket disables Nagle (responses are written whole with writev),
// enlarges the socket buffers, enables keepalive and sets TCP_USER_TIMEOUT
// so unacknowledged data to a dead peer ends the connection within the
// liveness budget.
func tuneSocket(nc net.Conn, userTimeout time.Duration) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetNoDelay(true)
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3})
	_ = tc.SetReadBuffer(4 << 20)
	_ = tc.SetWriteBuffer(4 << 20)
	if rc, err := tc.SyscallConn(); err == nil {
		ms := int(userTimeout / time.Millisecond)
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
		})
	}
}

// serve runs the connection until it ends. A panic caused by this peer's
// input costs this connection only.
func (c *conn) serve() { c.run(true) }

// run is the connection's receiver: the login (first) and then the full
// feature phase until the connection ends. When the inline watchdog hands
// the receiver role to a new goroutine (inline.go), the old one returns
// without ending anything: the new one, started with run(false), does.
func (c *conn) run(first bool) {
	mine := true
	defer func() {
		if mine {
			c.br.release()
			c.srv.forgetConn(c)
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			c.srv.recovered(c.log.WithField("pdu", fmt.Sprintf("% x", c.hdr.BHS[:])), c, "iscsi: panic in connection receiver", r)
			if c.sess != nil {
				c.sess.connLost(c)
			}
			if c.tx != nil {
				c.tx.wait()
			}
		}
	}()
	if first {
		if err := c.login(); err != nil {
			c.loginEnded(err)
			c.logEnd(err, "login ended")
			c.close(err)
			return
		}
	}
	err := c.receive()
	if errors.Is(err, errHandedOver) {
		mine = false
		return
	}
	c.logEnd(err, "connection ended")
	c.close(err)
	c.sess.connLost(c)
	c.tx.wait()
}

func (c *conn) logEnd(err error, msg string) {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, errLoggedOut):
		c.log.Debug("iscsi: " + msg)
	case errors.Is(err, net.ErrClosed), errors.Is(err, errShutdown), errors.Is(err, errReinstated),
		errors.Is(err, syscall.ECONNRESET):
		c.log.WithError(err).Debug("iscsi: " + msg)
	default:
		c.log.WithError(err).Info("iscsi: " + msg)
	}
}

// close shuts the socket once; later calls are no-ops. The receiver and the
// transmitter notice through their socket errors and c.closed.
func (c *conn) close(err error) {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	select {
	case <-c.closed:
		return
	default:
	}
	c.closeErr = err
	close(c.closed)
	c.nc.Close()
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// idleForShutdown reports whether Shutdown may close this connection without
// waiting: it has no session doing SCSI work.
func (c *conn) idleForShutdown() bool {
	if !c.inFFP.Load() {
		return true
	}
	s := c.sess
	return s == nil || s.discovery
}

// requestLogout asks the initiator to log out (shutdown, reconfiguration).
func (c *conn) requestLogout(time2Wait uint16) {
	if !c.inFFP.Load() || c.tx == nil {
		return
	}
	if c.sess != nil && c.sess.discovery {
		c.close(errShutdown)
		return
	}
	a := pdu.AsyncMessage{LUN: 0, AsyncEvent: pdu.AsyncRequestLogout, Parameter3: time2Wait}
	var it txItem
	a.Marshal(&it.hdr)
	it.kind = txPDU
	it.advance = true
	c.tx.send(it)
}

// readData reads the data segment of the current header into dst (which
// must have the segment's length).
func (c *conn) readData(dst []byte) error {
	c.sio.poll.mid = true // the rest of the PDU is on its way: worth polling for
	err := pdu.ReadData(c.br, dst, c.digests)
	c.sio.poll.mid = false
	return err
}

// discardData reads and drops the current header's data segment.
func (c *conn) discardData() error {
	n := c.hdr.BHS.DataSegmentLength()
	if n == 0 {
		return nil
	}
	if c.scratch == nil {
		c.scratch = make([]byte, 16<<10)
	}
	return pdu.DiscardData(c.br, n, c.scratch, c.digests)
}

// writeDirect writes one PDU synchronously; used during login, before the
// transmitter runs.
func (c *conn) writeDirect(h *pdu.BHS, data []byte) error {
	h.SetLengths(0, len(data))
	var tail pdu.Tail
	tail.Compute(c.digests, data)
	bufs := net.Buffers{h[:]}
	var hd [pdu.DigestLen]byte
	if c.digests.Header {
		pdu.PutDigest(hd[:], pdu.HeaderDigest(h, nil))
		bufs = append(bufs, hd[:])
	}
	if len(data) > 0 {
		bufs = append(bufs, data, tail.Bytes())
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.LoginTimeout))
	_, err := bufs.WriteTo(c.nc)
	return err
}
