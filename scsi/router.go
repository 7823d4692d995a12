package scsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Router is the device server of one SCSI target: it routes commands to
// its logical units by LUN and answers for LUNs that do not exist (SPC-4
// §6.6.2, §6.33, §6.39). A Router holds no global state, so several can
// live in one process.
type Router struct {
	// tab is the current LU inventory; AddLU and RemoveLU replace it
	// while commands run (router_update.go).
	tab atomic.Pointer[luTable]
	upd routerUpdate
	ops *[256]opEntry
	log *logrus.Entry
	// panics counts commands that panicked; each became HARDWARE ERROR.
	panics     atomic.Uint64
	unknownLUN atomic.Uint64 // commands for a LUN without LU (stats.go)
	// aborter aborts the tasks of preempted nexuses (SetTaskAborter).
	aborter atomic.Pointer[TaskAborter]
	// reaper ends already lost nexuses before a conflict is reported
	// (SetNexusReaper, reaper.go).
	reaper atomic.Pointer[NexusReaper]
}

// ErrUnknownLUN is returned by LogicalUnitReset for a LUN without LU.
var ErrUnknownLUN = errors.New("scsi: no such logical unit")

// NewRouter returns a router over lus. Two LUs with the same ID are an
// error.
func NewRouter(lus []*LU) (*Router, error) {
	r := &Router{ops: &sbcOps}
	tab, err := newLUTable(lus)
	if err != nil {
		return nil, err
	}
	r.tab.Store(tab)
	l := logrus.New()
	l.SetOutput(io.Discard)
	r.log = logrus.NewEntry(l)
	if len(tab.sorted) > 0 {
		r.log = tab.sorted[0].baseLog
	}
	return r, nil
}

// Panics returns how many commands panicked (and were failed with
// HARDWARE ERROR instead of crashing the daemon).
func (r *Router) Panics() uint64 { return r.panics.Load() }

// EncodeLUN returns the 8-byte SAM LUN of id: peripheral device addressing
// below 256, flat space addressing up to 16383 (SAM-5 §4.7).
func EncodeLUN(id uint16) uint64 {
	if id < 256 {
		return uint64(id) << 48
	}
	return (0x40|uint64(id>>8)&0x3F)<<56 | uint64(id&0xFF)<<48
}

// DecodeLUN is the inverse of EncodeLUN. It accepts single level
// peripheral (bus 0) and flat space addresses and rejects everything else
// (other address methods, non-zero second to fourth levels).
func DecodeLUN(raw uint64) (uint16, bool) {
	if raw&0x0000FFFFFFFFFFFF != 0 {
		return 0, false
	}
	b0, b1 := byte(raw>>56), byte(raw>>48)
	switch b0 >> 6 {
	case 0: // peripheral device addressing; bus identifier must be 0
		if b0 != 0 {
			return 0, false
		}
		return uint16(b1), true
	case 1: // flat space addressing
		return uint16(b0&0x3F)<<8 | uint16(b1), true
	}
	return 0, false
}

func (r *Router) lookup(raw uint64) *LU {
	id, ok := DecodeLUN(raw)
	if !ok {
		return nil
	}
	return r.tab.Load().byID[id]
}

// LUNExists reports whether the raw LUN addresses a logical unit.
func (r *Router) LUNExists(rawLUN uint64) bool { return r.lookup(rawLUN) != nil }

// Plan resolves the LU, decodes and validates the CDB and reports either a
// final status (Done) or the data transfer to set up (Dir, XferLen). The
// checks run in this order: LUN, operation code, unit attention, medium,
// CDB fields, write protection, command-specific rules (SAM-5 §5.14 puts
// unit attentions before command-specific errors).
func (r *Router) Plan(c *Command) {
	c.done, c.Status, c.SenseLen, c.Dir, c.XferLen = false, StatusGood, 0, DirNone, 0
	st := &c.state
	st.r, st.lu, st.op, st.start = r, nil, nil, time.Now()
	defer r.recoverPanic(c)
	if len(c.CDB) == 0 {
		r.finish(c, invalidCDB(0, -1))
		return
	}
	lu := r.lookup(c.LUN)
	st.lu = lu
	e, err := lookupOp(r.ops, c.CDB)
	if err != nil {
		if lu == nil {
			err = ErrLUNotSupported
		}
		r.finish(c, err)
		return
	}
	st.op = e
	err = r.precheck(lu, e, c)
	if nexusConflict(err) && r.reap() {
		c.Dir, c.XferLen = DirNone, 0
		err = r.precheck(lu, e, c)
	}
	if err != nil {
		c.Dir, c.XferLen = DirNone, 0
		r.finish(c, err)
		return
	}
	if e.exec == nil {
		r.finish(c, nil)
	}
}

// precheck runs the generic checks and the command's own plan.
func (r *Router) precheck(lu *LU, e *opEntry, c *Command) error {
	if lu == nil && e.flags&flagNoLU == 0 {
		return ErrLUNotSupported
	}
	if lu != nil {
		if e.flags&flagNoUA == 0 {
			if asc, ok := lu.takeUA(c.Nexus); ok {
				return uaSense(asc)
			}
		}
		if err := lu.sanitizeCheck(e, c); err != nil {
			return err
		}
		if e.flags&flagMedium != 0 && lu.ejected.Load() {
			return ErrMediumNotPresent
		}
	}
	if err := e.checkUsage(c.CDB); err != nil {
		return err
	}
	if lu != nil {
		if err := lu.checkReservation(c); err != nil {
			return err
		}
	}
	if lu != nil && e.flags&flagWrite != 0 {
		if err := lu.writeProtected(c.Nexus); err != nil {
			return err
		}
	}
	if !e.supportedOn(lu) {
		if e.hasSA() {
			return invalidCDB(1, 4) // the opcode exists, this service action not here
		}
		return ErrInvalidOpcode
	}
	return e.plan(lu, c)
}

// errPlanDone is returned by a plan function that completed the command
// with GOOD status (for example a zero-length READ).
var errPlanDone = errors.New("scsi: completed in plan")

// Execute runs a planned command once its Data-Out (if any) is in
// c.DataOut, or fills c.DataIn. It sets Status, Sense and, for Data-In
// commands, the final XferLen. A cancelled ctx aborts the command.
//
// Under a backstore.NoWait context a Quick read whose data the backing
// store does not hold at hand is left undone (Done reports false, nothing
// is counted): the transport calls Execute again where it may wait.
func (r *Router) Execute(ctx context.Context, c *Command) {
	if c.done {
		return
	}
	defer r.recoverPanic(c)
	st := &c.state
	if st.op == nil || st.op.exec == nil {
		r.finish(c, ErrInternalTargetFailure)
		return
	}
	if ctx.Err() != nil {
		r.finish(c, ErrCommandAborted)
		return
	}
	if st.lu != nil {
		// RemoveLU waits for executing commands; later ones find no LU.
		if !st.lu.life.enter() {
			r.finish(c, ErrLUNotSupported)
			return
		}
		defer st.lu.life.exit()
		// Again at execution: a PREEMPT may have come in between.
		err := st.lu.checkReservation(c)
		if nexusConflict(err) && r.reap() {
			err = st.lu.checkReservation(c)
		}
		if err != nil {
			r.finish(c, err)
			return
		}
	}
	err := st.op.exec(ctx, st.lu, c)
	if err == backstore.ErrWouldBlock {
		return
	}
	if err == ErrMediumRemovalPrevented && ctx.Err() == nil && r.reap() {
		err = st.op.exec(ctx, st.lu, c) // START STOP UNIT refused before changing anything
	}
	if err == nil && st.lu != nil && st.op.flags&flagWrite != 0 {
		st.lu.afterWrite(c)
	}
	r.finish(c, err)
}

// finish completes the command: GOOD, or CHECK CONDITION with the sense
// data of err in the LU's format. Errors that are not Sense values are our
// bugs or environment failures: they become HARDWARE ERROR / INTERNAL
// TARGET FAILURE and are logged.
func (r *Router) finish(c *Command, err error) {
	c.done = true
	defer r.account(c) // statistics, once the status is final (stats.go)
	lu := c.state.lu
	if err == nil || err == errPlanDone {
		c.Status = StatusGood
		r.debug(c, nil)
		return
	}
	if errors.Is(err, ErrReservationConflict) {
		c.Status, c.SenseLen = StatusReservationConflict, 0
		if c.Dir == DirIn {
			c.XferLen = 0
		}
		if lu != nil {
			lu.pr.conflicts.Add(1)
		}
		r.debug(c, err)
		return
	}
	var s Sense
	if !errors.As(err, &s) {
		r.logFor(lu).WithFields(r.fields(c)).WithError(err).Error("scsi: command failed")
		s = Sense{Key: KeyHardwareError, ASC: ASCInternalTargetFailure}
	}
	c.Status = StatusCheckCondition
	c.SenseLen = s.encode(c.Sense[:], lu != nil && lu.dsense.Load())
	if c.Dir == DirIn {
		c.XferLen = 0 // no Data-In accompanies a CHECK CONDITION here
	}
	r.debug(c, err)
}

func (r *Router) logFor(lu *LU) *logrus.Entry {
	if lu != nil {
		return lu.log
	}
	return r.log
}

func (r *Router) fields(c *Command) logrus.Fields {
	f := logrus.Fields{"itt": c.Tag}
	if len(c.CDB) > 0 {
		f["op"] = OpCode(c.CDB[0]).String()
	}
	if c.state.lu == nil {
		if id, ok := DecodeLUN(c.LUN); ok {
			f["lun"] = id
		}
	}
	return f
}

// debug logs the outcome of every command at Debug level only.
func (r *Router) debug(c *Command, err error) {
	l := r.logFor(c.state.lu)
	if !l.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return
	}
	e := l.WithFields(r.fields(c)).WithField("status", c.Status.String())
	if err != nil {
		e = e.WithField("sense", err.Error())
	}
	e.Debug("scsi command")
}

// recoverPanic turns a panic in a handler into HARDWARE ERROR, logs it
// with the stack and counts it.
func (r *Router) recoverPanic(c *Command) {
	v := recover()
	if v == nil {
		return
	}
	r.panics.Add(1)
	r.logFor(c.state.lu).WithFields(r.fields(c)).WithField("panic", fmt.Sprint(v)).
		WithField("stack", string(debug.Stack())).Error("scsi: command panicked")
	c.Dir, c.XferLen = DirNone, 0
	r.finish(c, ErrInternalTargetFailure)
}

// NexusAdded registers a new I_T nexus: every LU reports POWER ON, RESET,
// OR BUS DEVICE RESET OCCURRED to it first (SAM-5 §5.14).
func (r *Router) NexusAdded(n *Nexus) {
	if n == nil {
		return
	}
	r.upd.mu.Lock()
	defer r.upd.mu.Unlock()
	r.upd.track(n, true)
	for _, lu := range r.tab.Load().sorted {
		lu.addNexus(n)
	}
}

// NexusLost drops everything the LUs keep for n: pending unit attentions,
// the medium removal prevention it held (SBC-4 §5.11) and its SPC-2
// reservation (SPC-2 §5.5.1). The target calls it when the session ends,
// by logout or by connection loss. Persistent reservations stay.
func (r *Router) NexusLost(n *Nexus) {
	if n == nil {
		return
	}
	r.upd.mu.Lock()
	defer r.upd.mu.Unlock()
	r.upd.track(n, false)
	for _, lu := range r.tab.Load().sorted {
		if lu.dropNexus(n) {
			lu.prNexusLost(n.Key)
		}
	}
}

// LogicalUnitReset applies the device server's part of LOGICAL UNIT RESET
// (SAM-5 §7.7): unit attention BUS DEVICE RESET FUNCTION OCCURRED for every
// nexus, PREVENT state cleared, mode pages back to saved values, SPC-2
// reservation released. The transport aborts the tasks.
func (r *Router) LogicalUnitReset(rawLUN uint64) error {
	lu := r.lookup(rawLUN)
	if lu == nil {
		return ErrUnknownLUN
	}
	lu.reset(ASCBusDeviceResetOccurred)
	return nil
}

// TargetReset applies a TARGET WARM RESET (cold=false: SCSI BUS RESET
// OCCURRED) or TARGET COLD RESET (cold=true: POWER ON OCCURRED) to every
// LU (RFC 7143 §11.5.1, SAM-5 §6.3).
func (r *Router) TargetReset(cold bool) {
	asc := ASCSCSIBusResetOccurred
	if cold {
		asc = ASCPowerOnOccurred
	}
	for _, lu := range r.tab.Load().sorted {
		lu.reset(asc)
	}
}

// Flush makes every LU's completed writes durable (used at shutdown).
func (r *Router) Flush(ctx context.Context) error {
	var errs []error
	for _, lu := range r.tab.Load().sorted {
		if err := lu.dev.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("scsi: LUN %d: flush: %w", lu.id, err))
		}
	}
	return errors.Join(errs...)
}

// Close flushes and closes every LU.
func (r *Router) Close() error {
	var errs []error
	for _, lu := range r.tab.Load().sorted {
		errs = append(errs, lu.Close())
	}
	return errors.Join(errs...)
}
