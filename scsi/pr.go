package scsi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// Persistent reservations (SPC-4 §5.13) and the SPC-2 RESERVE/RELEASE
// reservation (SPC-2 §5.5.1) of one logical unit.
//
// The state is an immutable snapshot (prState) behind an atomic pointer:
// the conflict check that runs for every command reads it without a lock.
// PERSISTENT RESERVE OUT, RESERVE, RELEASE, nexus loss and resets are the
// writers; they are serialised by prUnit.mu, build a new snapshot, write
// it to the APTPL state file when persistence is on (prstate.go) and only
// then publish it, so no command completes with GOOD before its effect is
// durable and no other command observes a state that could be lost.
//
// Registrations are keyed on the I_T nexus (initiator port = iSCSI name +
// ISID, target port = target name + TPGT, RFC 7143 §4.4.1), not on the
// session: they survive logout and nexus loss as SPC-4 requires; an SPC-2
// reservation does not.

// Operation codes of the reservation commands (SPC-4 §6.15-6.17, SPC-2
// §7.21-7.24).
const (
	OpReserve6             OpCode = 0x16 // RESERVE(6)
	OpRelease6             OpCode = 0x17 // RELEASE(6)
	OpReserve10            OpCode = 0x56 // RESERVE(10)
	OpRelease10            OpCode = 0x57 // RELEASE(10)
	OpPersistentReserveIn  OpCode = 0x5E // PERSISTENT RESERVE IN
	OpPersistentReserveOut OpCode = 0x5F // PERSISTENT RESERVE OUT
)

// PERSISTENT RESERVE IN service actions (SPC-4 §6.16.1, table 164).
const (
	SAReadKeys           uint8 = 0x00 // READ KEYS
	SAReadReservation    uint8 = 0x01 // READ RESERVATION
	SAReportCapabilities uint8 = 0x02 // REPORT CAPABILITIES
	SAReadFullStatus     uint8 = 0x03 // READ FULL STATUS
)

// PERSISTENT RESERVE OUT service actions (SPC-4 §6.17.2, table 174).
const (
	SARegister            uint8 = 0x00 // REGISTER
	SAReserve             uint8 = 0x01 // RESERVE
	SARelease             uint8 = 0x02 // RELEASE
	SAClear               uint8 = 0x03 // CLEAR
	SAPreempt             uint8 = 0x04 // PREEMPT
	SAPreemptAndAbort     uint8 = 0x05 // PREEMPT AND ABORT
	SARegisterIgnore      uint8 = 0x06 // REGISTER AND IGNORE EXISTING KEY
	SARegisterAndMove     uint8 = 0x07 // REGISTER AND MOVE
	maxPROUTServiceAction       = SARegisterAndMove
)

// Additional sense codes of persistent reservations (SPC-4 table 49).
const (
	ASCInvalidReleaseOfPR     ASC = 0x2604 // INVALID RELEASE OF PERSISTENT RESERVATION
	ASCReservationsPreempted  ASC = 0x2A03 // RESERVATIONS PREEMPTED
	ASCReservationsReleased   ASC = 0x2A04 // RESERVATIONS RELEASED
	ASCRegistrationsPreempted ASC = 0x2A05 // REGISTRATIONS PREEMPTED
)

// ErrReservationConflict ends a command with RESERVATION CONFLICT status
// and no sense data (SAM-5 §5.3.1). Handlers return it; only the
// dispatcher turns it into the status.
var ErrReservationConflict = errors.New("scsi: reservation conflict")

// PRType is a persistent reservation TYPE (SPC-4 §6.16.3.4, table 168).
type PRType uint8

// Persistent reservation types.
const (
	PRWriteExclusive          PRType = 0x1 // WRITE EXCLUSIVE
	PRExclusiveAccess         PRType = 0x3 // EXCLUSIVE ACCESS
	PRWriteExclusiveRegsOnly  PRType = 0x5 // WRITE EXCLUSIVE - REGISTRANTS ONLY
	PRExclusiveAccessRegsOnly PRType = 0x6 // EXCLUSIVE ACCESS - REGISTRANTS ONLY
	PRWriteExclusiveAllRegs   PRType = 0x7 // WRITE EXCLUSIVE - ALL REGISTRANTS
	PRExclusiveAccessAllRegs  PRType = 0x8 // EXCLUSIVE ACCESS - ALL REGISTRANTS
	prTypeNone                PRType = 0
)

// prScopeLU is the only SCOPE value (SPC-4 §6.16.3.3).
const prScopeLU = 0

func (t PRType) valid() bool {
	switch t {
	case PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegsOnly,
		PRExclusiveAccessRegsOnly, PRWriteExclusiveAllRegs, PRExclusiveAccessAllRegs:
		return true
	}
	return false
}

// allRegistrants: every registered I_T nexus is a reservation holder.
func (t PRType) allRegistrants() bool {
	return t == PRWriteExclusiveAllRegs || t == PRExclusiveAccessAllRegs
}

// registrantsOnly: registrants may access as the holder does (RO and AR).
func (t PRType) registrantsOnly() bool {
	return t == PRWriteExclusiveRegsOnly || t == PRExclusiveAccessRegsOnly || t.allRegistrants()
}

// writeExclusive: non-holders keep read access.
func (t PRType) writeExclusive() bool {
	return t == PRWriteExclusive || t == PRWriteExclusiveRegsOnly || t == PRWriteExclusiveAllRegs
}

func (t PRType) String() string {
	switch t {
	case PRWriteExclusive:
		return "WRITE EXCLUSIVE"
	case PRExclusiveAccess:
		return "EXCLUSIVE ACCESS"
	case PRWriteExclusiveRegsOnly:
		return "WRITE EXCLUSIVE - REGISTRANTS ONLY"
	case PRExclusiveAccessRegsOnly:
		return "EXCLUSIVE ACCESS - REGISTRANTS ONLY"
	case PRWriteExclusiveAllRegs:
		return "WRITE EXCLUSIVE - ALL REGISTRANTS"
	case PRExclusiveAccessAllRegs:
		return "EXCLUSIVE ACCESS - ALL REGISTRANTS"
	}
	return "none"
}

// prReg is one registration: a reservation key for an I_T nexus. It is
// never modified once published; a change makes a new prReg.
type prReg struct {
	Key uint64
	// The initiator port. AnyISID (a TransportID of format 00b, SPC-4
	// §7.6.4.6) registers every initiator port of the name.
	Initiator string
	ISID      [6]byte
	AnyISID   bool
	// The target port. AllTgPt (ALL_TG_PT) registers every target port.
	TargetName string
	TPGT       uint16
	AllTgPt    bool
	// RelPort is the relative target port identifier reported by READ
	// FULL STATUS.
	RelPort uint16
}

// matches reports whether the registration covers the I_T nexus k. iSCSI
// names compare case-insensitively (RFC 3722 normalises them to lower
// case).
func (g *prReg) matches(k NexusKey) bool {
	return strings.EqualFold(g.Initiator, k.InitiatorName) && (g.AnyISID || g.ISID == k.ISID) &&
		(g.AllTgPt || (g.TargetName == k.TargetName && g.TPGT == k.TPGT))
}

// overlaps reports whether two registrations could cover the same I_T
// nexus; a nexus has at most one registration.
func (g *prReg) overlaps(o *prReg) bool {
	return strings.EqualFold(g.Initiator, o.Initiator) && (g.AnyISID || o.AnyISID || g.ISID == o.ISID) &&
		(g.AllTgPt || o.AllTgPt || (g.TargetName == o.TargetName && g.TPGT == o.TPGT))
}

// prState is one immutable snapshot of the LU's reservation state.
type prState struct {
	gen  uint32   // PRgeneration (SPC-4 §6.16.2)
	regs []*prReg // in registration order (READ KEYS lists them so)
	// resType is the persistent reservation type, prTypeNone without one.
	resType PRType
	// holder is the registration holding a reservation that is not of an
	// all registrants type; nil for all registrants (every registrant
	// holds it).
	holder *prReg
	aptpl  bool // activate persist through power loss
	// spc2 is the I_T nexus holding an SPC-2 reservation, or nil.
	spc2 *NexusKey
}

// idle: nothing restricts any command.
func (s *prState) idle() bool { return len(s.regs) == 0 && s.resType == prTypeNone && s.spc2 == nil }

func (s *prState) clone() *prState {
	n := *s
	n.regs = append([]*prReg(nil), s.regs...)
	return &n
}

// regFor returns the registration of nexus k, or nil.
func (s *prState) regFor(k NexusKey) *prReg {
	for _, g := range s.regs {
		if g.matches(k) {
			return g
		}
	}
	return nil
}

// isHolder reports whether nexus k holds the persistent reservation.
func (s *prState) isHolder(k NexusKey) bool {
	switch {
	case s.resType == prTypeNone:
		return false
	case s.resType.allRegistrants():
		return s.regFor(k) != nil
	}
	return s.holder != nil && s.holder.matches(k)
}

// regHolds reports whether registration g holds the reservation.
func (s *prState) regHolds(g *prReg) bool {
	return s.resType != prTypeNone && (s.resType.allRegistrants() || s.holder == g)
}

// remove drops the registrations for which drop returns true and returns
// them. A removed holder of a non all-registrants reservation releases
// it; an all registrants reservation ends with its last registrant.
func (s *prState) remove(drop func(*prReg) bool) []*prReg {
	var gone []*prReg
	kept := s.regs[:0:0]
	for _, g := range s.regs {
		if drop(g) {
			gone = append(gone, g)
			if s.holder == g {
				s.holder, s.resType = nil, prTypeNone
			}
			continue
		}
		kept = append(kept, g)
	}
	s.regs = kept
	if s.resType.allRegistrants() && len(s.regs) == 0 {
		s.resType = prTypeNone
	}
	return gone
}

// replace swaps registration old for nw, keeping its position and the
// reservation it holds.
func (s *prState) replace(old, nw *prReg) {
	for i, g := range s.regs {
		if g == old {
			s.regs[i] = nw
		}
	}
	if s.holder == old {
		s.holder = nw
	}
}

// prUnit is the reservation part of an LU.
type prUnit struct {
	mu        sync.Mutex // serialises writers and the state file
	cur       atomic.Pointer[prState]
	path      string // APTPL state file; "" = APTPL not supported
	persisted bool   // the state file holds an APTPL state (guarded by mu)
	conflicts atomic.Uint64
}

// state returns the current snapshot (never nil).
func (lu *LU) prState() *prState {
	if s := lu.pr.cur.Load(); s != nil {
		return s
	}
	return &prState{}
}

// ReservationConflicts returns how many commands this LU ended with
// RESERVATION CONFLICT status (persistent or SPC-2 reservations).
func (lu *LU) ReservationConflicts() uint64 { return lu.pr.conflicts.Load() }

// nexusKeyOf returns the key of n (the zero key for a nil nexus, which
// only tests use).
func nexusKeyOf(n *Nexus) NexusKey {
	if n == nil {
		return NexusKey{}
	}
	return n.Key
}

// commitPR publishes s, first writing it to the APTPL state file when
// persistence is (or was until now) active and durable is set. lu.pr.mu
// must be held. On a write error nothing changes and the error is
// returned: the command fails instead of reporting an unsaved GOOD.
func (lu *LU) commitPR(s *prState, durable bool) error {
	if durable && (s.aptpl || lu.pr.persisted) {
		if err := savePRState(lu.pr.path, s); err != nil {
			return err
		}
		lu.pr.persisted = s.aptpl
	}
	lu.pr.cur.Store(s)
	return nil
}

// prUA establishes unit attention asc for every live I_T nexus covered by
// one of regs, except the nexus except (SPC-4 §5.13.11, §5.13.12).
func (lu *LU) prUA(regs []*prReg, asc ASC, except NexusKey) {
	if len(regs) == 0 {
		return
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	for key, ns := range lu.nexus {
		if key == except {
			continue
		}
		for _, g := range regs {
			if g.matches(key) {
				lu.pushUA(ns, asc)
				break
			}
		}
	}
}

// liveNexuses returns the keys of live I_T nexuses covered by regs,
// except the one given.
func (lu *LU) liveNexuses(regs []*prReg, except NexusKey) []NexusKey {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	var out []NexusKey
	for key := range lu.nexus {
		if key == except {
			continue
		}
		for _, g := range regs {
			if g.matches(key) {
				out = append(out, key)
				break
			}
		}
	}
	return out
}

// initPR restores the APTPL state from path (LUConfig.PRStatePath).
func (lu *LU) initPR(path string) error {
	lu.pr.path = path
	s := &prState{}
	if path != "" {
		var err error
		if s, err = loadPRState(path); err != nil {
			return err
		}
		lu.pr.persisted = s.aptpl
		if len(s.regs) > 0 {
			lu.log.WithFields(logrus.Fields{"registrations": len(s.regs), "type": s.resType.String(),
				"generation": s.gen}).Info("persistent reservations restored (APTPL)")
		}
	}
	lu.pr.cur.Store(s)
	return nil
}

// TaskAborter aborts every task of the given I_T nexuses on the LU with
// LUN lun, as CLEAR TASK SET from each of them would, with TASK ABORTED
// status for the tasks (TAS=1), and returns once none of them is still
// executing. PREEMPT AND ABORT calls it (SPC-4 §5.13.11.2.5) after the
// preempted registrations are gone and before its own GOOD status, from
// the worker that executes the PERSISTENT RESERVE OUT; ctx is that
// command's context. It must not wait for the calling task itself.
type TaskAborter func(ctx context.Context, lun uint16, nexuses []NexusKey)

// SetTaskAborter installs the transport's TaskAborter. Without one,
// PREEMPT AND ABORT still removes the registrations and the reservation,
// and tasks of the preempted nexuses that have not started executing end
// with RESERVATION CONFLICT when they conflict (Router.Execute checks
// again), but tasks already executing run to completion.
func (r *Router) SetTaskAborter(f TaskAborter) {
	if f == nil {
		r.aborter.Store(nil)
		return
	}
	r.aborter.Store(&f)
}

func (r *Router) taskAborter() TaskAborter {
	if r == nil {
		return nil
	}
	if p := r.aborter.Load(); p != nil {
		return *p
	}
	return nil
}

// PRStatus is a snapshot of an LU's reservations, for operators (admin
// socket, logs); READ FULL STATUS gives the same to initiators.
type PRStatus struct {
	Generation    uint32
	APTPL         bool
	Registrations []PRRegistration
	// Type is the persistent reservation type, 0 without one.
	Type PRType
	// SPC2Holder is the initiator port holding an SPC-2 reservation, or "".
	SPC2Holder string
}

// PRRegistration is one registration in a PRStatus.
type PRRegistration struct {
	Key uint64
	// InitiatorPort is "name,i,0xISID", or the name alone for a
	// registration of every initiator port of the name.
	InitiatorPort string
	// TargetPort is "name,t,0xTPGT", or "" with AllTargetPorts.
	TargetPort     string
	AllTargetPorts bool
	Holder         bool
}

// ReservationStatus returns the current reservation state.
func (lu *LU) ReservationStatus() PRStatus {
	s := lu.prState()
	st := PRStatus{Generation: s.gen, APTPL: s.aptpl, Type: s.resType}
	for _, g := range s.regs {
		k := NexusKey{InitiatorName: g.Initiator, ISID: g.ISID, TargetName: g.TargetName, TPGT: g.TPGT}
		r := PRRegistration{Key: g.Key, InitiatorPort: k.InitiatorPortName(), AllTargetPorts: g.AllTgPt,
			Holder: s.regHolds(g)}
		if g.AnyISID {
			r.InitiatorPort = g.Initiator
		}
		if !g.AllTgPt {
			r.TargetPort = k.TargetPortName()
		}
		st.Registrations = append(st.Registrations, r)
	}
	if s.spc2 != nil {
		st.SPC2Holder = s.spc2.InitiatorPortName()
	}
	return st
}
