package target

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// The transmitter writes a connection in full feature phase. It assigns
// StatSN in send order (RFC 7143 §4.2.2.2), stamps ExpCmdSN and MaxCmdSN
// at send time, splits Data-In by the initiator's MaxRecvDataSegmentLength
// and MaxBurstLength, batches whatever is queued into one writev, and sends
// NOP-In pings when the initiator is silent.
//
// One writer at a time holds the batch and the scratch (writing): usually
// the transmitter's loop, but a goroutine that finishes a command while
// nothing is queued or being written writes the response itself (direct),
// which saves waking the loop's goroutine for every command at low queue
// depth. Only goroutines that may block on the socket do so: workers, and
// the receiver while the inline watchdog covers it (inline.go).

type txKind uint8

const (
	txPDU  txKind = iota // a prebuilt header (and optional data)
	txTask               // a SCSI task's Data-In and status
)

type txItem struct {
	kind    txKind
	advance bool // the PDU carries a new StatSN (a status or response)
	// closeErr, when set, closes the connection with this error once the
	// PDU is on the wire.
	closeErr error
	hdr      pdu.BHS
	data     []byte
	task     *task
}

type transmitter struct {
	c      *conn
	statSN uint32
	done   chan struct{}

	// The queue: senders append to pending under mu and poke wake; the
	// loop swaps pending with batch, so both slices only grow to the
	// number of responses actually in flight (an idle connection holds
	// almost nothing). limit bounds pending: senders wait for space, so a
	// flood of PDUs that each queue a Reject cannot grow it without bound.
	mu      sync.Mutex
	pending []txItem
	stopped bool // the loop has exited: senders drop instead of queueing
	writing bool // a writer (the loop or a direct sender) owns batch and scratch
	limit   int
	waiters int           // senders waiting for space
	wake    chan struct{} // cap 1: pending became non-empty
	space   chan struct{} // cap 1: pending was emptied

	// Scratch reused for every batch: encoded headers and tails, and the
	// iovec list.
	slab  []byte
	iov   [][]byte
	batch []txItem

	// Per-PDU scratch: fields of the transmitter rather than locals, so
	// that passing them to the CRC and copy helpers does not move them to
	// the heap on every PDU.
	hdr  pdu.BHS
	tail pdu.Tail

	pingTTT uint32
	pingAt  int64
	// deadlineAt is when the write deadline was last pushed out; it is
	// renewed at most every deadlineRenew (writer only).
	deadlineAt time.Time
}

// deadlineRenew is how often the write deadline is pushed out. Setting it
// on every write would re-arm a runtime timer per command.
const deadlineRenew = 5 * time.Second

func newTransmitter(c *conn, statSN uint32) *transmitter {
	w := int(c.srv.cfg.CmdWindow)
	return &transmitter{
		c:      c,
		limit:  2*w + maxImmediate + 64,
		statSN: statSN,
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
	}
}

func (tx *transmitter) start() { go tx.loop() }

// wait blocks until the transmitter has exited.
func (tx *transmitter) wait() { <-tx.done }

// enqueue appends it to the queue, waiting while the queue is at its
// limit; it reports false (and queues nothing) once the connection is
// closed. With direct set and nothing queued or being written, the caller
// writes it at once instead.
func (tx *transmitter) enqueue(it txItem, direct bool) bool {
	tx.mu.Lock()
	for !tx.stopped && len(tx.pending) >= tx.limit {
		tx.waiters++
		tx.mu.Unlock()
		select {
		case <-tx.space:
		case <-tx.c.closed:
		}
		tx.mu.Lock()
		tx.waiters--
		if tx.c.isClosed() {
			tx.stopped = true
		}
	}
	if tx.stopped {
		tx.mu.Unlock()
		return false
	}
	if direct && !tx.writing && len(tx.pending) == 0 {
		tx.writing = true
		tx.mu.Unlock()
		tx.writeDirect(it)
		return true
	}
	tx.pending = append(tx.pending, it)
	first := len(tx.pending) == 1
	tx.mu.Unlock()
	if first {
		tx.poke()
	}
	return true
}

// send queues a PDU; it gives up when the connection closes.
func (tx *transmitter) send(it txItem) { tx.enqueue(it, false) }

// sendTask sends a task's response, written by the caller when direct is
// set and the transmitter is idle, else queued. If the connection is gone
// the task is freed here.
func (tx *transmitter) sendTask(t *task, direct bool) {
	if !tx.enqueue(txItem{kind: txTask, task: t}, direct) {
		t.sess.drop(t)
	}
}

// writeDirect writes one item on the caller's goroutine; the caller has
// set tx.writing. A write error closes the connection (the loop then
// drains the queue). A panic costs the connection, as in the loop.
func (tx *transmitter) writeDirect(it txItem) {
	defer func() {
		if r := recover(); r != nil {
			tx.c.srv.recovered(tx.c.log, tx.c, "iscsi: panic in connection transmitter", r)
			tx.dropBatch()
			tx.doneWriting()
		}
	}()
	tx.batch = append(tx.batch[:0], it)
	if err := tx.write(); err != nil {
		tx.c.close(err)
	}
	tx.doneWriting()
}

// doneWriting gives up the batch and wakes the loop when items were
// queued meanwhile.
func (tx *transmitter) doneWriting() {
	tx.mu.Lock()
	tx.writing = false
	more := len(tx.pending) > 0
	tx.mu.Unlock()
	if more {
		tx.poke()
	}
}

func (tx *transmitter) poke() {
	select {
	case tx.wake <- struct{}{}:
	default:
	}
}

// take moves the queued items into tx.batch and makes the loop the
// writer; it reports false when there is nothing to take or another
// writer is busy (that writer wakes the loop when it is done).
func (tx *transmitter) take() bool {
	tx.mu.Lock()
	if tx.writing || len(tx.pending) == 0 {
		tx.mu.Unlock()
		return false
	}
	tx.writing = true
	tx.batch, tx.pending = tx.pending, tx.batch[:0]
	w := tx.waiters
	tx.mu.Unlock()
	if w > 0 {
		select {
		case tx.space <- struct{}{}:
		default:
		}
	}
	return true
}

func (tx *transmitter) loop() {
	c := tx.c
	defer close(tx.done)
	writer := false // the loop holds tx.writing
	defer func() {
		// A panic here costs this connection only: the session ends as
		// if the connection had dropped.
		if r := recover(); r != nil {
			c.srv.recovered(c.log, c, "iscsi: panic in connection transmitter", r)
			tx.drain(writer)
		}
	}()
	var tick <-chan time.Time
	if iv := c.nop.NOPInterval; iv > 0 {
		// A fine tick keeps the ping and the dead verdict within 1/8 of
		// the configured times, so failover timing stays predictable.
		period := min(iv, c.nop.NOPTimeout) / 8
		period = min(max(period, 10*time.Millisecond), time.Second)
		tk := time.NewTicker(period)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-tx.wake:
			if !tx.take() {
				continue
			}
			writer = true
			err := tx.write()
			writer = false
			if err != nil {
				c.close(err)
				tx.drain(true)
				return
			}
			tx.doneWriting()
		case <-tick:
			if err := tx.ping(); err != nil {
				c.log.WithError(err).Warn("iscsi: initiator unresponsive; closing connection")
				c.close(err)
				tx.drain(false)
				return
			}
		case <-c.closed:
			tx.drain(false)
			return
		}
	}
}

// dropBatch frees the tasks of the batch, which were not sent (writer
// only).
func (tx *transmitter) dropBatch() {
	for _, it := range tx.batch {
		if it.kind == txTask && it.task != nil {
			it.task.sess.drop(it.task)
		}
	}
	tx.batch = tx.batch[:0]
}

// drain frees the tasks still queued after the connection closed, and
// makes later senders drop theirs. The batch is freed too when the loop
// owns it (writer); a direct writer frees its own.
func (tx *transmitter) drain(writer bool) {
	if writer {
		tx.dropBatch()
	}
	tx.mu.Lock()
	tx.stopped = true
	rest := tx.pending
	tx.pending = nil
	tx.mu.Unlock()
	for _, it := range rest {
		if it.kind == txTask && it.task != nil {
			it.task.sess.drop(it.task)
		}
	}
	select {
	case tx.space <- struct{}{}:
	default:
	}
}

// errNOPTimeout reports a connection whose initiator did not answer a ping.
var errNOPTimeout = errors.New("iscsi: NOP-In ping not answered within NOPTimeout")

// ping implements target liveness checks (RFC 7143 §11.19): after
// NOPInterval of silence it sends a NOP-In with a fresh TTT; if nothing at
// all arrives within NOPTimeout after it, the connection is dead.
func (tx *transmitter) ping() error {
	c := tx.c
	now := time.Now().UnixNano()
	last := c.lastRx.Load()
	if tx.pingAt != 0 {
		if last >= tx.pingAt {
			tx.pingAt = 0
		} else if time.Duration(now-tx.pingAt) >= c.nop.NOPTimeout {
			return errNOPTimeout
		} else {
			return nil
		}
	}
	if time.Duration(now-last) < c.nop.NOPInterval {
		return nil
	}
	tx.pingTTT = c.sess.allocTTT()
	tx.pingAt = now
	n := pdu.NOPIn{InitiatorTaskTag: pdu.ReservedTag, TargetTransferTag: tx.pingTTT}
	var it txItem
	n.Marshal(&it.hdr)
	// Queued like any PDU (a direct writer may own the batch), past the
	// queue's limit: the loop that empties the queue must not wait for
	// room in it.
	tx.mu.Lock()
	if !tx.stopped {
		tx.pending = append(tx.pending, it)
	}
	tx.mu.Unlock()
	tx.poke()
	return nil
}

// write encodes the batch into one iovec list and writes it.
func (tx *transmitter) write() error {
	c := tx.c
	s := c.sess
	tx.slab = tx.slab[:0]
	tx.iov = tx.iov[:0]
	var closeErr error
	for i := range tx.batch {
		it := &tx.batch[i]
		switch it.kind {
		case txPDU:
			tx.addPDU(&it.hdr, it.advance, it.data)
			if it.closeErr != nil && closeErr == nil {
				closeErr = it.closeErr
			}
		case txTask:
			if !it.task.immediate {
				s.releaseCmdSN()
			}
			tx.addTask(it.task)
		}
	}
	// A write blocked longer than NOPTimeout + 20 s (give or take
	// deadlineRenew) ends the connection: the initiator stopped reading.
	if now := time.Now(); now.Sub(tx.deadlineAt) >= deadlineRenew {
		_ = c.nc.SetWriteDeadline(now.Add(c.nop.NOPTimeout + 20*time.Second + deadlineRenew))
		tx.deadlineAt = now
	}
	err := c.sio.writev(tx.iov)
	for i := range tx.batch {
		if it := &tx.batch[i]; it.kind == txTask {
			c.srv.putTask(it.task)
			it.task = nil
		}
	}
	tx.batch = tx.batch[:0]
	if err != nil {
		return err
	}
	if closeErr != nil {
		c.close(closeErr)
	}
	return nil
}

// reserve returns n bytes of slab. The slab only grows between batches, so
// slices handed out earlier in the batch stay valid: when it must grow, a
// new slab is started and the old one stays referenced by the iovecs.
func (tx *transmitter) reserve(n int) []byte {
	if len(tx.slab)+n > cap(tx.slab) {
		tx.slab = make([]byte, 0, max(2*cap(tx.slab), n+4096))
	}
	b := tx.slab[len(tx.slab) : len(tx.slab)+n]
	tx.slab = tx.slab[:len(tx.slab)+n]
	return b
}

// stamp fills StatSN (advancing it when the PDU carries status) and the
// window fields of an encoded target PDU.
func (tx *transmitter) stamp(h *pdu.BHS, advance bool) {
	s := tx.c.sess
	h.SetSN(tx.statSN, s.expCmdSN.Load(), s.maxCmdSN.Load())
	if advance {
		tx.statSN++
	}
}

// addPDU appends one PDU (header, header digest, data, padding, data
// digest) to the iovec list.
func (tx *transmitter) addPDU(h *pdu.BHS, advance bool, data []byte) {
	if h.Opcode() != pdu.OpDataIn || advance {
		tx.stamp(h, advance)
	} else {
		s := tx.c.sess
		h.SetWindow(s.expCmdSN.Load(), s.maxCmdSN.Load())
	}
	h.SetLengths(0, len(data))
	d := tx.c.digests
	n := pdu.BHSLen
	if d.Header {
		n += pdu.DigestLen
	}
	hb := tx.reserve(n)
	copy(hb, h[:])
	if d.Header {
		pdu.PutDigest(hb[pdu.BHSLen:], pdu.CRC32C(h[:]))
	}
	tx.iov = append(tx.iov, hb)
	if len(data) == 0 {
		return
	}
	tx.iov = append(tx.iov, data)
	tx.tail.Compute(d, data)
	if tb := tx.tail.Bytes(); len(tb) > 0 {
		b := tx.reserve(len(tb))
		copy(b, tb)
		tx.iov = append(tx.iov, b)
	}
}

// addTask appends a task's Data-In PDUs and status. Good status with data
// travels in the last Data-In (phase collapse, RFC 7143 §11.7.4); anything
// else is a SCSI Response carrying the sense data.
func (tx *transmitter) addTask(t *task) {
	p := &tx.c.params
	cmd := &t.cmd
	status := cmd.Status
	var overflow, underflow bool
	var residual uint32
	switch {
	case cmd.XferLen > t.edtl:
		overflow, residual = true, cmd.XferLen-t.edtl
	case cmd.XferLen < t.edtl:
		underflow, residual = true, t.edtl-cmd.XferLen
	}
	var n uint32
	if cmd.Dir == scsi.DirIn && (status == scsi.StatusGood || status == scsi.StatusConditionMet) {
		n = min(cmd.XferLen, t.edtl, uint32(len(cmd.DataIn)))
	}
	dataSN := uint32(0)
	if n > 0 {
		seg := uint32(p.InitiatorMaxRecvDataSegmentLength)
		burst := uint32(p.MaxBurstLength)
		var inBurst uint32
		for off := uint32(0); off < n; {
			l := min(seg, n-off, burst-inBurst)
			last := off+l == n
			inBurst += l
			di := pdu.DataIn{
				Final:             last || inBurst == burst,
				LUN:               t.lun,
				InitiatorTaskTag:  t.itt,
				TargetTransferTag: pdu.ReservedTag,
				DataSN:            dataSN,
				BufferOffset:      off,
			}
			if last {
				di.HasStatus = true
				di.Status = uint8(status)
				di.Overflow, di.Underflow = overflow, underflow
				di.ResidualCount = residual
			}
			if inBurst == burst {
				inBurst = 0
			}
			di.Marshal(&tx.hdr)
			tx.addPDU(&tx.hdr, last, cmd.DataIn[off:off+l])
			dataSN++
			off += l
		}
		return
	}
	resp := pdu.SCSIResponse{
		Response:         pdu.RespCommandCompleted,
		Status:           uint8(status),
		InitiatorTaskTag: t.itt,
		Overflow:         overflow,
		Underflow:        underflow,
		ResidualCount:    residual,
		ExpDataSN:        t.r2tSN,
	}
	resp.Marshal(&tx.hdr)
	var data []byte
	if cmd.SenseLen > 0 && status == scsi.StatusCheckCondition {
		// Sense data: a 2-byte SenseLength, then the sense (RFC 7143 §11.4.7).
		data = tx.reserve(2 + cmd.SenseLen)
		binary.BigEndian.PutUint16(data, uint16(cmd.SenseLen))
		copy(data[2:], cmd.Sense[:cmd.SenseLen])
	}
	tx.addPDU(&tx.hdr, true, data)
}
