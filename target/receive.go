package target

import (
	"errors"
	"fmt"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// errLoggedOut ends a connection after a Logout Response was sent.
var errLoggedOut = errors.New("iscsi: logged out")

// errReinstated ends a connection whose session was reinstated by a new
// login of the same initiator port.
var errReinstated = errors.New("iscsi: session reinstated")

// errProtocol ends a connection after a protocol violation was rejected.
var errProtocol = errors.New("iscsi: protocol error")

// receive is the full-feature receiver loop: it reads each PDU, checks it
// before anything is allocated, and routes it by opcode.
func (c *conn) receive() error {
	maxData := c.params.TargetMaxRecvDataSegmentLength
	for {
		if err := pdu.ReadHeader(c.br, &c.hdr, c.digests, maxData); err != nil {
			if errors.Is(err, pdu.ErrSegmentTooLong) || errors.Is(err, pdu.ErrAHSTooLong) {
				// The stream cannot be resynchronised: reject and close.
				return c.protocolError(err.Error())
			}
			return err
		}
		c.lastRx.Store(time.Now().UnixNano())
		var err error
		switch op := c.hdr.BHS.Opcode(); op {
		case pdu.OpSCSICommand:
			c.sio.poll.command()
			err = c.handleSCSICommand()
		case pdu.OpDataOut:
			err = c.handleDataOut()
		case pdu.OpNOPOut:
			err = c.handleNOPOut()
		case pdu.OpTaskMgmtRequest:
			err = c.handleTaskMgmt()
		case pdu.OpTextRequest:
			err = c.handleText()
		case pdu.OpLogoutRequest:
			err = c.handleLogout()
		case pdu.OpSNACKRequest:
			// ErrorRecoveryLevel is 0: SNACK is not supported (RFC 7143
			// §11.16); reject it and keep the connection.
			err = c.rejectPDU(pdu.RejectProtocolError, "SNACK at ErrorRecoveryLevel 0", false)
		case pdu.OpLoginRequest:
			err = c.protocolError("Login Request in full feature phase")
		default:
			err = c.rejectPDU(pdu.RejectCommandNotSupported, fmt.Sprintf("opcode %v not supported", op), false)
		}
		if err != nil {
			return err
		}
	}
}

// acceptCmdSN places a non-SCSI PDU (NOP-Out, Text, Logout, TMF) in CmdSN
// order. Immediate PDUs pass at once. A non-immediate one outside the
// window is silently ignored (ok false); one in order consumes its CmdSN,
// and since it completes as soon as it is processed, its window slot is
// released at once. A gap is a protocol error (err set).
func (c *conn) acceptCmdSN(immediate bool, cmdSN uint32, what string) (ok bool, err error) {
	if immediate {
		return true, nil
	}
	s := c.sess
	switch s.checkCmdSN(cmdSN) {
	case cmdSNOutside:
		return false, nil
	case cmdSNAhead:
		return false, c.protocolError(what + " CmdSN ahead of ExpCmdSN")
	}
	s.advanceCmdSN()
	s.releaseCmdSN()
	return true, nil
}

// sendReject queues a Reject carrying the current header (RFC 7143 §11.17).
func (c *conn) sendReject(reason pdu.RejectReason) {
	r := pdu.Reject{Reason: reason}
	var it txItem
	it.kind = txPDU
	it.advance = true
	r.Marshal(&it.hdr)
	h := c.hdr.BHS
	it.data = h[:]
	c.tx.send(it)
}

// rejectPDU rejects the current PDU, drops its data segment and keeps the
// connection. A rejected non-immediate command still consumes its CmdSN,
// or the initiator's window would stall.
func (c *conn) rejectPDU(reason pdu.RejectReason, why string, consumesCmdSN bool) error {
	c.log.WithField("reason", reason.String()).Warnf("iscsi: rejecting %v: %s", c.hdr.BHS.Opcode(), why)
	if err := c.discardData(); err != nil {
		return err
	}
	if consumesCmdSN && c.sess.checkCmdSN(cmdSNOf(&c.hdr.BHS)) == cmdSNInOrder {
		c.sess.advanceCmdSN()
		c.sess.releaseCmdSN()
	}
	c.sendReject(reason)
	return nil
}

// cmdSNOf returns bytes 24-27 (the CmdSN of initiator PDUs that carry one).
func cmdSNOf(h *pdu.BHS) uint32 {
	return uint32(h[24])<<24 | uint32(h[25])<<16 | uint32(h[26])<<8 | uint32(h[27])
}

// protocolError rejects the current PDU and ends the connection once the
// Reject is on the wire: at ErrorRecoveryLevel 0 the initiator recovers
// with a new session (RFC 7143 §7.1.4).
func (c *conn) protocolError(why string) error {
	c.log.Warnf("iscsi: protocol error: %s", why)
	err := fmt.Errorf("%w: %s", errProtocol, why)
	c.rejectAndClose(pdu.RejectProtocolError, err)
	return err
}

// rejectAndClose queues a Reject that closes the connection after it is
// sent, and waits (briefly) for that to happen.
func (c *conn) rejectAndClose(reason pdu.RejectReason, err error) {
	r := pdu.Reject{Reason: reason}
	var it txItem
	it.kind = txPDU
	it.advance = true
	it.closeErr = err
	r.Marshal(&it.hdr)
	h := c.hdr.BHS
	it.data = h[:]
	c.tx.send(it)
	select {
	case <-c.closed:
	case <-time.After(2 * time.Second):
	}
}

// digestError handles a data digest mismatch on a PDU that is not part of a
// SCSI command: the PDU is dropped and rejected with reason "data digest
// error" (RFC 7143 §7.8); the stream is still in sync, so the connection
// stays.
func (c *conn) digestError(err error) error {
	c.log.WithError(err).Warn("iscsi: data digest error")
	c.sendReject(pdu.RejectDataDigestError)
	return nil
}

func isDigestError(err error) bool { return errors.Is(err, pdu.ErrBadDataDigest) }

// handleNOPOut answers an initiator ping with a NOP-In echoing its data, or
// accepts the answer to a target ping (RFC 7143 §11.18).
func (c *conn) handleNOPOut() error {
	var n pdu.NOPOut
	if err := n.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	// A non-immediate NOP-Out takes its place in CmdSN order.
	if ok, err := c.acceptCmdSN(n.Immediate, n.CmdSN, "NOP-Out"); !ok {
		if err != nil {
			return err
		}
		return c.discardData()
	}
	dsl := c.hdr.BHS.DataSegmentLength()
	if n.InitiatorTaskTag == pdu.ReservedTag {
		// The answer to our ping, or a ping that wants no answer.
		return c.discardData()
	}
	var data []byte
	if dsl > 0 {
		data = make([]byte, dsl)
		if err := c.readData(data); err != nil {
			if isDigestError(err) {
				return c.digestError(err)
			}
			return err
		}
		// Ping data is echoed, bounded by the initiator's
		// MaxRecvDataSegmentLength (RFC 7143 §11.19.4).
		data = data[:min(len(data), c.params.InitiatorMaxRecvDataSegmentLength)]
	}
	in := pdu.NOPIn{LUN: n.LUN, InitiatorTaskTag: n.InitiatorTaskTag, TargetTransferTag: pdu.ReservedTag}
	var it txItem
	it.kind = txPDU
	it.advance = true
	in.Marshal(&it.hdr)
	it.data = data
	c.tx.send(it)
	return nil
}

// logoutWait bounds how long a logout waits for outstanding commands.
const logoutWait = 10 * time.Second

// handleLogout answers a Logout Request (RFC 7143 §11.14) after the
// session's outstanding commands have completed, then closes the
// connection once the response is on the wire.
func (c *conn) handleLogout() error {
	s := c.sess
	var l pdu.LogoutRequest
	if err := l.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	if err := c.discardData(); err != nil {
		return err
	}
	if ok, err := c.acceptCmdSN(l.Immediate, l.CmdSN, "Logout"); !ok {
		return err
	}
	resp := pdu.LogoutResponse{InitiatorTaskTag: l.InitiatorTaskTag}
	switch l.Reason {
	case pdu.LogoutCloseSession, pdu.LogoutCloseConnection:
		if l.Reason == pdu.LogoutCloseConnection && l.CID != c.cid {
			resp.Response = pdu.LogoutRespCIDNotFound
			break
		}
		s.waitIdle(logoutWait)
		resp.Response = pdu.LogoutRespClosed
	case pdu.LogoutRemoveForRecov:
		resp.Response = pdu.LogoutRespRecoveryNotSupp
	default:
		return c.rejectPDU(pdu.RejectInvalidPDUField, "unknown logout reason", false)
	}
	var it txItem
	it.kind = txPDU
	it.advance = true
	if resp.Response == pdu.LogoutRespClosed {
		it.closeErr = errLoggedOut
		// The session (one connection, ERL 0) ends with this logout.
		// Its nexus loss is processed before the response leaves, so
		// an initiator that logs out and at once uses another session
		// finds this one's reservations, medium removal prevention and
		// lease nexus gone. The transmitter still sends the response.
		s.connLost(c)
		if !c.srv.isClosing() {
			c.srv.leases.loggedOut(s)
		}
	}
	resp.Marshal(&it.hdr)
	c.tx.send(it)
	if it.closeErr == nil {
		return nil
	}
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
	}
	s.log.Info("iscsi: logout")
	return errLoggedOut
}

// waitIdle waits until no task of the session is executing or queued for
// execution, or timeout. Tasks still waiting for Data-Out are not waited
// for: the receiver, which would read that data, is the caller.
func (s *session) waitIdle(timeout time.Duration) {
	s.waitWhile(s.busyLocked, timeout)
}

// waitWhile waits, with s.mu held around each check, until busy reports
// false or timeout passes; it reports whether busy cleared. Tasks retiring
// signal s.cond, and a timer wakes the wait at the deadline.
func (s *session) waitWhile(busy func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for busy() {
		if !time.Now().Before(deadline) {
			return false
		}
		s.cond.Wait()
	}
	return true
}

// busyLocked reports whether a task is executing or queued; s.mu is held.
func (s *session) busyLocked() bool {
	for t := s.sched.head; t != nil; t = t.next {
		if t.state == stateRunning || t.state == stateWaiting {
			return true
		}
	}
	return false
}
