package target

import (
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/internal/bufpool"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// maxImmediate bounds the immediate SCSI commands a session may have in
// flight (they are outside the CmdSN window).
const maxImmediate = 16

// handleSCSICommand receives a SCSI Command PDU (RFC 7143 §11.3): it checks
// the CmdSN, delivers the task to the task set, plans it with the device
// server and starts the data transfer (immediate data, unsolicited Data-Out,
// R2T).
func (c *conn) handleSCSICommand() error {
	s := c.sess
	var req pdu.SCSICommand
	if err := req.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	dsl := c.hdr.BHS.DataSegmentLength()
	if s.discovery {
		return c.rejectPDU(pdu.RejectProtocolError, "SCSI command in a discovery session", !req.Immediate)
	}
	if !req.Immediate {
		switch s.checkCmdSN(req.CmdSN) {
		case cmdSNOutside:
			// RFC 7143 §4.2.2.1: silently ignored.
			c.log.WithField("cmdsn", req.CmdSN).Debug("iscsi: command outside the CmdSN window ignored")
			return c.discardData()
		case cmdSNAhead:
			return c.protocolError(fmt.Sprintf("CmdSN %d ahead of ExpCmdSN %d on a single-connection session",
				req.CmdSN, s.expCmdSN.Load()))
		}
	}
	ext, err := pdu.ExtendedCDB(c.hdr.AHS)
	if err != nil {
		return c.rejectPDU(pdu.RejectInvalidPDUField, err.Error(), !req.Immediate)
	}
	p := &c.params
	// Data segment rules (RFC 7143 §11.3.4, §13.10, §13.11, §13.14).
	var unsolLimit uint32
	switch {
	case dsl > 0 && !req.Write:
		return c.rejectPDU(pdu.RejectProtocolError, "immediate data on a command without the W bit", !req.Immediate)
	case dsl > 0 && !p.ImmediateData:
		return c.rejectPDU(pdu.RejectProtocolError, "immediate data while ImmediateData=No", !req.Immediate)
	case !req.Final && !req.Write:
		return c.rejectPDU(pdu.RejectProtocolError, "F bit clear on a command without the W bit", !req.Immediate)
	case !req.Final && p.InitialR2T:
		return c.rejectPDU(pdu.RejectProtocolError, "unsolicited Data-Out announced while InitialR2T=Yes", !req.Immediate)
	}
	if req.Write {
		unsolLimit = uint32(dsl)
		if !p.InitialR2T {
			unsolLimit = min(uint32(p.FirstBurstLength), req.ExpectedDataTransferLn)
		}
		if uint32(dsl) > min(uint32(p.FirstBurstLength), req.ExpectedDataTransferLn) {
			return c.rejectPDU(pdu.RejectProtocolError, "immediate data beyond FirstBurstLength or EDTL", !req.Immediate)
		}
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return c.discardData()
	}
	if _, dup := s.tasks[req.InitiatorTaskTag]; dup {
		s.mu.Unlock()
		return c.rejectPDU(pdu.RejectTaskInProgress, "initiator task tag already in use", !req.Immediate)
	}
	if req.Immediate && s.immCount >= maxImmediate {
		s.mu.Unlock()
		return c.rejectPDU(pdu.RejectImmediateCmdReject, "too many immediate commands", false)
	}
	t := s.srv.getTask(s)
	t.itt = req.InitiatorTaskTag
	t.cmdSN = req.CmdSN
	t.lun = req.LUN
	t.edtl = req.ExpectedDataTransferLn
	t.immediate = req.Immediate
	t.writeBit = req.Write
	t.readBit = req.Read
	t.attr = scsi.TaskAttr(req.Attr)
	t.unsolLimit = unsolLimit
	t.unsolRecv = uint32(dsl)
	t.unsolOpen = req.Write && !req.Final
	s.tasks[t.itt] = t
	if t.immediate {
		s.immCount++
	}
	s.sched.deliver(t)
	s.mu.Unlock()
	if !req.Immediate {
		s.advanceCmdSN()
	}

	n := copy(t.cdb[:], req.CDB[:])
	n += copy(t.cdb[n:], ext)
	cmd := &t.cmd
	cmd.Nexus = s.nexus
	cmd.LUN = t.lun
	cmd.CDB = t.cdb[:n]
	cmd.Attr = t.attr
	cmd.Tag = t.itt
	cmd.ExpectedLength = t.edtl
	s.node.Router.Plan(cmd)
	if cmd.Done() {
		t.complete = true
	} else if cmd.Dir == scsi.DirOut && req.Write {
		t.want = min(cmd.XferLen, t.edtl)
	}
	if t.want > 0 {
		if n := int64(bufpool.ClassSize(int(t.want))); s.srv.budget.try(n) || c.waitBudget(t, n) {
			t.charge = n
			t.buf = s.srv.bufs.Get(int(t.want))
			t.data = *t.buf
		} else {
			// The data buffers are all lent out: answer TASK SET FULL
			// (the initiator retries later) and absorb the data.
			cmd.Status, cmd.SenseLen = scsi.StatusTaskSetFull, 0
			t.complete, t.want = true, 0
		}
	}
	if c.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		lun, _ := scsi.DecodeLUN(t.lun)
		c.log.WithFields(logrus.Fields{"itt": t.itt, "lun": lun, "op": fmt.Sprintf("%02x", t.cdb[0]),
			"edtl": t.edtl, "cmdsn": t.cmdSN}).Debug("iscsi: SCSI command")
	}
	if dsl > 0 {
		if err := c.storeData(t, 0, uint32(dsl)); err != nil {
			return err
		}
	}
	return c.progress(t)
}

// waitBudget waits for n bytes of the data budget for write t, unless
// waiting could hold up Data-Out the connection still has to receive for
// its other tasks (then it reports false at once). Receiver only.
func (c *conn) waitBudget(t *task, n int64) bool {
	s := c.sess
	s.mu.Lock()
	busy := false
	for _, o := range s.tasks {
		if o != t && o.state == stateCollecting && !o.ready {
			busy = true
			break
		}
	}
	s.mu.Unlock()
	if busy {
		s.srv.budget.refused.Add(1)
		return false
	}
	return s.srv.budget.acquire(n, c.closed)
}

// readSegment reads the current PDU's n-byte data segment, keeping the
// first len(dst) bytes.
func (c *conn) readSegment(dst []byte, n int) error {
	if c.scratch == nil {
		c.scratch = make([]byte, 16<<10)
	}
	return pdu.ReadSegment(c.br, dst, n, c.scratch, c.digests)
}

// progress advances a task's data transfer after each change (receiver
// only): it issues R2Ts for data not yet solicited and, once all data is
// in, hands the task to the scheduler, runs it inline, or answers it. It
// returns errHandedOver when the receiver role moved to another goroutine
// meanwhile (inline.go).
func (c *conn) progress(t *task) error {
	if t.unsolOpen || t.r2tActive > 0 {
		return nil
	}
	s := c.sess
	if t.complete {
		// Planned to completion (an error found before data moved): the
		// unsolicited data has been absorbed, answer now. From here t is
		// running, like a task the scheduler starts: should the watchdog
		// hand the receiver role away while this goroutine answers it,
		// the session's cleanup on the new receiver waits for t instead of
		// freeing it under this one (found by FuzzSession).
		s.mu.Lock()
		t.state = stateRunning
		s.mu.Unlock()
		return c.runInline(t)
	}
	if t.nextR2TOff < t.unsolRecv {
		t.nextR2TOff = min(t.unsolRecv, t.want)
	}
	if t.nextR2TOff < t.want {
		c.issueR2Ts(t)
		return nil
	}
	t.cmd.DataOut = t.data[:t.want]
	// Once markReady has handed t to a worker, t is not the receiver's to
	// read: the worker may finish it and another session reuse it from
	// the pool. Whether to run it here is decided under s.mu.
	run := false
	s.mu.Lock()
	if t.state == stateCollecting {
		s.sched.inlineOK = true
		s.sched.markReady(t)
		s.sched.inlineOK = false
		run, t.inline = t.inline, false
	}
	s.mu.Unlock()
	if h := s.srv.readyHook.Load(); h != nil {
		(*h)()
	}
	if run {
		return c.runInline(t)
	}
	return nil
}

// issueR2Ts solicits the rest of a task's data, keeping at most
// MaxOutstandingR2T sequences open (RFC 7143 §11.8), each at most
// MaxBurstLength long.
func (c *conn) issueR2Ts(t *task) {
	p := &c.params
	for i := range t.r2ts {
		if t.r2tActive >= p.MaxOutstandingR2T || t.nextR2TOff >= t.want {
			return
		}
		r := &t.r2ts[i]
		if r.active {
			continue
		}
		length := min(uint32(p.MaxBurstLength), t.want-t.nextR2TOff)
		*r = r2tSeq{ttt: c.sess.allocTTT(), offset: t.nextR2TOff, length: length, active: true}
		t.nextR2TOff += length
		t.r2tActive++
		r2t := pdu.R2T{
			LUN:                       t.lun,
			InitiatorTaskTag:          t.itt,
			TargetTransferTag:         r.ttt,
			R2TSN:                     t.r2tSN,
			BufferOffset:              r.offset,
			DesiredDataTransferLength: length,
		}
		t.r2tSN++
		var it txItem
		it.kind = txPDU
		r2t.Marshal(&it.hdr)
		c.tx.send(it)
	}
}

// handleDataOut receives a SCSI Data-Out PDU (RFC 7143 §11.7), validating its
// TTT, DataSN, BufferOffset and length against the sequence it belongs to.
//
// At ErrorRecoveryLevel 0 a sequence error cannot be repaired, but it need
// not cost the session: the command is terminated with CHECK CONDITION,
// ABORTED COMMAND (RFC 7143 §11.4.7.2 lists the iSCSI conditions reported
// this way), once the initiator has closed every open Data-Out sequence of
// the command. Only a PDU that belongs to no sequence at all is a protocol
// error that ends the connection.
func (c *conn) handleDataOut() error {
	s := c.sess
	var d pdu.DataOut
	if err := d.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	n := uint32(c.hdr.BHS.DataSegmentLength())
	s.mu.Lock()
	t := s.tasks[d.InitiatorTaskTag]
	collecting := t != nil && t.state == stateCollecting
	s.mu.Unlock()
	if !collecting {
		// The task ended (aborted, or answered early): its remaining data
		// is dropped (RFC 7143 §11.7: the target discards data for tasks
		// it no longer knows).
		c.log.WithField("itt", d.InitiatorTaskTag).Debug("iscsi: Data-Out for no active task dropped")
		return c.discardData()
	}
	if d.TargetTransferTag == pdu.ReservedTag {
		if !t.unsolOpen {
			return c.protocolError(fmt.Sprintf("unexpected unsolicited Data-Out for ITT 0x%x", t.itt))
		}
		if t.unsolRecv+n > t.unsolLimit {
			return c.protocolError(fmt.Sprintf("unsolicited Data-Out beyond FirstBurstLength for ITT 0x%x", t.itt))
		}
		if !t.complete && (d.DataSN != t.unsolDataSN || d.BufferOffset != t.unsolRecv) {
			c.log.WithFields(logrus.Fields{"itt": t.itt, "datasn": d.DataSN, "want_datasn": t.unsolDataSN,
				"offset": d.BufferOffset, "want_offset": t.unsolRecv}).Warn("iscsi: unsolicited Data-Out out of sequence; terminating the command")
			terminate(t, ascDataPhaseError)
		}
		if err := c.storeData(t, t.unsolRecv, n); err != nil {
			return err
		}
		t.unsolRecv += n
		t.unsolDataSN++
		if d.Final {
			t.unsolOpen = false
		}
		return c.progress(t)
	}
	var r *r2tSeq
	for i := range t.r2ts {
		if t.r2ts[i].active && t.r2ts[i].ttt == d.TargetTransferTag {
			r = &t.r2ts[i]
			break
		}
	}
	if r == nil {
		return c.protocolError(fmt.Sprintf("Data-Out with unknown TTT 0x%x for ITT 0x%x", d.TargetTransferTag, t.itt))
	}
	if !t.complete {
		switch {
		case d.DataSN != r.expDataSN:
			c.log.WithFields(logrus.Fields{"itt": t.itt, "datasn": d.DataSN, "want_datasn": r.expDataSN}).
				Warn("iscsi: Data-Out DataSN out of sequence; terminating the command")
			terminate(t, ascDataPhaseError)
		case d.BufferOffset != r.offset+r.received || r.received+n > r.length:
			c.log.WithFields(logrus.Fields{"itt": t.itt, "offset": d.BufferOffset, "want_offset": r.offset + r.received,
				"len": n, "left": r.length - r.received}).Warn("iscsi: Data-Out offset or length wrong; terminating the command")
			terminate(t, ascIncorrectAmount)
		}
	}
	if t.complete {
		if err := c.discardData(); err != nil {
			return err
		}
	} else if err := c.storeData(t, d.BufferOffset, n); err != nil {
		return err
	}
	r.received += n
	r.expDataSN++
	if d.Final {
		if r.received != r.length && !t.complete {
			c.log.WithFields(logrus.Fields{"itt": t.itt, "received": r.received, "length": r.length}).
				Warn("iscsi: Data-Out sequence ended early; terminating the command")
			terminate(t, ascIncorrectAmount)
		}
		r.active = false
		t.r2tActive--
		if !t.complete && t.nextR2TOff < t.want && !t.unsolOpen {
			c.issueR2Ts(t)
		}
		return c.progress(t)
	}
	return nil
}

// Additional sense codes for commands terminated by the transport
// (RFC 7143 §11.4.7.2; SPC-4 Annex D).
const (
	ascIncorrectAmount = 0x0c0d // WRITE ERROR - incorrect amount of data
	ascDataPhaseError  = 0x4b00 // DATA PHASE ERROR
	ascCRCError        = 0x4705 // PROTOCOL SERVICE CRC ERROR
)

// terminate ends a task's data phase with CHECK CONDITION, ABORTED COMMAND
// and the given ASC/ASCQ; the task is answered once its open Data-Out
// sequences are closed.
func terminate(t *task, asc uint16) {
	if t.complete {
		return
	}
	t.complete = true
	cmd := &t.cmd
	cmd.Status = scsi.StatusCheckCondition
	cmd.Sense = [scsi.MaxSenseLen]byte{}
	cmd.Sense[0] = 0x70
	cmd.Sense[2] = 0x0b // ABORTED COMMAND
	cmd.Sense[7] = 10
	cmd.Sense[12] = byte(asc >> 8)
	cmd.Sense[13] = byte(asc)
	cmd.SenseLen = 18
	// Keep XferLen as planned: residuals still describe the command.
}

// storeData reads the current PDU's n data bytes at buffer offset off,
// keeping what falls inside the task's buffer.
func (c *conn) storeData(t *task, off, n uint32) error {
	var dst []byte
	if off < t.want && !t.complete {
		dst = t.data[off:min(off+n, t.want)]
	}
	err := c.readSegment(dst, int(n))
	if err != nil && isDigestError(err) {
		// RFC 7143 §7.8: discard the PDU, send Reject "data digest error"
		// and, without within-command recovery, terminate the command.
		c.log.WithError(err).WithField("itt", t.itt).Warn("iscsi: data digest error; terminating the command")
		c.sendReject(pdu.RejectDataDigestError)
		terminate(t, ascCRCError)
		return nil
	}
	return err
}

// execute runs one task and answers it, on a worker or (inline) on the
// receiver. The receiver neither waits for buffer memory nor lets a read
// wait for the medium: such a task goes to a worker instead.
func (s *session) execute(t *task, inline bool) {
	if t.aborted.Load() == notAborted {
		cmd := &t.cmd
		if cmd.Dir == scsi.DirIn && t.buf == nil {
			if n := min(t.edtl, cmd.XferLen); n > 0 {
				charge := int64(bufpool.ClassSize(int(n)))
				if !s.srv.budget.try(charge) {
					if inline {
						s.sched.requeue(t)
						return
					}
					if !s.srv.budget.acquire(charge, t.Done()) {
						// Aborted while waiting for buffer memory.
						s.finish(t, true)
						return
					}
				}
				t.charge = charge
				t.buf = s.srv.bufs.Get(int(n))
				t.data = *t.buf
				cmd.DataIn = t.data
			}
		}
		s.run(t)
		if !cmd.Done() {
			// A NoWait read found its data out of the page cache.
			s.sched.requeue(t)
			return
		}
	}
	s.finish(t, true)
}

// run calls the device server, turning a panic into HARDWARE ERROR for
// this command only.
func (s *session) run(t *task) {
	defer func() {
		if r := recover(); r != nil {
			s.srv.recovered(s.log.WithFields(logrus.Fields{"itt": t.itt, "cdb": fmt.Sprintf("% x", t.cmd.CDB)}), nil, "iscsi: panic executing SCSI command", r)
			setInternalError(&t.cmd)
		}
	}()
	s.node.Router.Execute(t, &t.cmd)
}

// setInternalError sets CHECK CONDITION, HARDWARE ERROR / INTERNAL TARGET
// FAILURE (44/00) in fixed format.
func setInternalError(cmd *scsi.Command) {
	cmd.Status = scsi.StatusCheckCondition
	cmd.Sense = [scsi.MaxSenseLen]byte{}
	cmd.Sense[0] = 0x70
	cmd.Sense[2] = 0x04
	cmd.Sense[7] = 10
	cmd.Sense[12] = 0x44
	cmd.SenseLen = 18
	cmd.XferLen = 0
}

// finish retires a task from the task set and sends its response, or drops
// it when it was aborted without a report. direct: the caller may write
// the response itself (a worker, or the receiver under the inline
// watchdog).
func (s *session) finish(t *task, direct bool) {
	s.mu.Lock()
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	s.sched.retire(t)
	if t.immediate {
		s.immCount--
	}
	// With other tasks in flight their responses follow soon: leave this
	// one to the transmitter, which batches them into one writev.
	direct = direct && s.sched.head == nil
	s.mu.Unlock()
	switch t.aborted.Load() {
	case abortSilent:
		s.drop(t)
		return
	case abortReported:
		t.cmd.Status = scsi.StatusTaskAborted
		t.cmd.SenseLen = 0
		t.cmd.XferLen = 0
	}
	s.conn.tx.sendTask(t, direct)
}

// drop frees a task that gets no response.
func (s *session) drop(t *task) {
	if !t.immediate {
		s.releaseCmdSN()
	}
	s.srv.putTask(t)
}

// abortAll aborts every task of the session without reports and waits
// until the executing ones have finished.
func (s *session) abortAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := s.sched.head; t != nil; {
		next := t.next
		t.abort(abortSilent)
		if t.state != stateRunning {
			delete(s.tasks, t.itt)
			s.sched.retire(t)
			if t.immediate {
				s.immCount--
			}
			s.srv.putTask(t)
		}
		t = next
	}
	for s.sched.head != nil {
		s.cond.Wait()
	}
}
