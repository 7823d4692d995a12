package scsi

import (
	"context"

	"github.com/sirupsen/logrus"
)

// PERSISTENT RESERVE OUT (SPC-4 §5.13.5-§5.13.11, §6.17).

// proutSAs are the service actions of PERSISTENT RESERVE OUT.
var proutSAs = []opEntry{
	{usage: proutUsage(SARegister), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SAReserve), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SARelease), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SAClear), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SAPreempt), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SAPreemptAndAbort), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SARegisterIgnore), plan: planPROut, exec: execPROut},
	{usage: proutUsage(SARegisterAndMove), plan: planPROut, exec: execPROut},
}

// proutUsage: SCOPE and TYPE in byte 2, PARAMETER LIST LENGTH in bytes
// 5-8 (SPC-4 table 173).
func proutUsage(sa uint8) []byte {
	return u(byte(OpPersistentReserveOut), sa, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0)
}

// usesType reports whether service action sa takes SCOPE and TYPE from
// the CDB; REGISTER, REGISTER AND IGNORE EXISTING KEY and CLEAR ignore
// them (SPC-4 §6.17.1).
func usesType(sa uint8) bool {
	switch sa {
	case SAReserve, SARelease, SAPreempt, SAPreemptAndAbort, SARegisterAndMove:
		return true
	}
	return false
}

func planPROut(_ *LU, c *Command) error {
	sa := c.CDB[1] & saMask
	if usesType(sa) {
		if c.CDB[2]>>4 != prScopeLU {
			return invalidCDB(2, 7)
		}
		if !PRType(c.CDB[2] & 0x0F).valid() {
			return invalidCDB(2, 3)
		}
	}
	n := be.Uint32(c.CDB[5:9])
	if n < proutBasicLen || n > maxPROUTParamLen {
		return ErrParamListLength
	}
	c.Dir, c.XferLen = DirOut, n
	return nil
}

// proutEffects are what a service action does besides changing the
// state: unit attentions to establish once the new state is committed,
// and nexuses whose tasks PREEMPT AND ABORT must abort.
type proutEffects struct {
	uas   []prUnitAttention
	abort []*prReg
}

// prUnitAttention is a unit attention for the nexuses of some
// registrations.
type prUnitAttention struct {
	regs []*prReg
	asc  ASC
}

func (f *proutEffects) ua(regs []*prReg, asc ASC) {
	if len(regs) > 0 {
		f.uas = append(f.uas, prUnitAttention{regs, asc})
	}
}

func execPROut(ctx context.Context, lu *LU, c *Command) error {
	sa := c.CDB[1] & saMask
	typ := PRType(c.CDB[2] & 0x0F)
	if uint32(len(c.DataOut)) < c.XferLen {
		return ErrParamListLength
	}
	p, err := parsePROUTParams(sa, c.DataOut[:c.XferLen])
	if err != nil {
		return err
	}
	if p.APTPL && lu.pr.path == "" {
		// PTPL_C is zero: persistence cannot be activated.
		if sa == SARegisterAndMove {
			return invalidParam(17, 0)
		}
		if sa == SARegister || sa == SARegisterIgnore {
			return invalidParam(20, 0)
		}
	}
	k := nexusKeyOf(c.Nexus)
	var rel uint16
	if c.Nexus != nil {
		rel = c.Nexus.RelativeTargetPortID
	}

	lu.pr.mu.Lock()
	old := lu.prState()
	if old.spc2 != nil {
		// SPC-4 §5.13.3 (SPC-3 §5.6.3): while an SPC-2 reservation exists,
		// every PERSISTENT RESERVE OUT conflicts, whoever sends it.
		lu.pr.mu.Unlock()
		return ErrReservationConflict
	}
	s := old.clone()
	var fx proutEffects
	changed := true
	switch sa {
	case SARegister, SARegisterIgnore:
		changed, err = s.register(k, rel, p, sa == SARegisterIgnore, &fx)
	case SAReserve:
		changed, err = s.reserve(k, p, typ)
	case SARelease:
		changed, err = s.release(k, p, typ, &fx)
	case SAClear:
		err = s.clearAll(k, p, &fx)
	case SAPreempt, SAPreemptAndAbort:
		err = s.preempt(k, p, typ, sa == SAPreemptAndAbort, &fx)
	case SARegisterAndMove:
		err = s.registerAndMove(k, rel, p, typ)
	}
	if err == nil && changed {
		err = lu.commitPR(s, true)
	}
	if err != nil {
		lu.pr.mu.Unlock()
		return err
	}
	for _, ua := range fx.uas {
		lu.prUA(ua.regs, ua.asc, k)
	}
	var victims []NexusKey
	if len(fx.abort) > 0 {
		victims = lu.liveNexuses(fx.abort, k)
	}
	lu.pr.mu.Unlock()
	if changed && lu.log.Logger.IsLevelEnabled(logrus.InfoLevel) {
		lu.log.WithFields(logrus.Fields{"initiator": k.InitiatorName, "action": proutName(sa),
			"generation": s.gen, "type": s.resType.String(), "registrations": len(s.regs)}).
			Info("persistent reservation changed")
	}
	if len(victims) > 0 {
		// Outside lu.pr.mu: the aborted tasks may be waiting for it.
		if f := c.state.r.taskAborter(); f != nil {
			f(ctx, lu.id, victims)
		}
	}
	return nil
}

func proutName(sa uint8) string {
	return [...]string{"REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT", "PREEMPT AND ABORT",
		"REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE"}[sa&7]
}

// register implements REGISTER and REGISTER AND IGNORE EXISTING KEY
// (SPC-4 §5.13.7, table 55).
func (s *prState) register(k NexusKey, rel uint16, p proutParams, ignore bool, fx *proutEffects) (bool, error) {
	g := s.regFor(k)
	if g == nil {
		if !ignore && p.Key != 0 {
			return false, ErrReservationConflict
		}
		if p.SAKey == 0 {
			// An unregistered nexus unregistering: GOOD and no action,
			// but PRgeneration counts every REGISTER that does not
			// fail (SPC-4 §6.16.2).
			s.gen++
			return true, nil
		}
		add := []*prReg{{Key: p.SAKey, Initiator: k.InitiatorName, ISID: k.ISID, TargetName: k.TargetName,
			TPGT: k.TPGT, AllTgPt: p.AllTgPt, RelPort: rel}}
		for _, t := range p.TIDs {
			add = append(add, &prReg{Key: p.SAKey, Initiator: t.Name, ISID: t.ISID, AnyISID: t.AnyISID,
				TargetName: k.TargetName, TPGT: k.TPGT, AllTgPt: p.AllTgPt, RelPort: rel})
		}
		for i, r := range add {
			for _, o := range append(s.regs[:len(s.regs):len(s.regs)], add[:i]...) {
				if r.overlaps(o) {
					// An I_T nexus named twice, or already registered.
					if i == 0 {
						return false, invalidParam(20, 2)
					}
					return false, invalidParam(proutTIDLenOffset+4, -1)
				}
			}
		}
		s.regs = append(s.regs, add...)
		s.aptpl = p.APTPL
		s.gen++
		return true, nil
	}
	if !ignore && p.Key != g.Key {
		return false, ErrReservationConflict
	}
	if p.SpecIPT {
		return false, invalidParam(20, 3)
	}
	if p.SAKey == 0 {
		typ, held := s.resType, s.holder == g
		s.remove(func(x *prReg) bool { return x == g })
		if held && (typ == PRWriteExclusiveRegsOnly || typ == PRExclusiveAccessRegsOnly) {
			// The holder of a registrants only reservation left: the
			// other registrants lose it (SPC-4 §5.13.11.2.2).
			fx.ua(s.regs, ASCReservationsReleased)
		}
	} else {
		n := *g
		n.Key = p.SAKey
		s.replace(g, &n)
	}
	s.aptpl = p.APTPL
	s.gen++
	return true, nil
}

// reserve implements RESERVE (SPC-4 §5.13.9). It does not change
// PRgeneration.
func (s *prState) reserve(k NexusKey, p proutParams, typ PRType) (bool, error) {
	g := s.regFor(k)
	if g == nil || g.Key != p.Key {
		return false, ErrReservationConflict
	}
	if s.resType != prTypeNone {
		if s.isHolder(k) && s.resType == typ {
			return false, nil
		}
		return false, ErrReservationConflict
	}
	s.resType, s.holder = typ, g
	if typ.allRegistrants() {
		s.holder = nil
	}
	return true, nil
}

// release implements RELEASE (SPC-4 §5.13.11.2.2).
func (s *prState) release(k NexusKey, p proutParams, typ PRType, fx *proutEffects) (bool, error) {
	g := s.regFor(k)
	if g == nil || g.Key != p.Key {
		return false, ErrReservationConflict
	}
	if s.resType == prTypeNone || !s.isHolder(k) {
		return false, nil
	}
	if typ != s.resType {
		return false, Sense{Key: KeyIllegalRequest, ASC: ASCInvalidReleaseOfPR}
	}
	old := s.resType
	s.resType, s.holder = prTypeNone, nil
	if old.registrantsOnly() {
		fx.ua(s.regs, ASCReservationsReleased)
	}
	return true, nil
}

// clearAll implements CLEAR (SPC-4 §5.13.11.2.6).
func (s *prState) clearAll(k NexusKey, p proutParams, fx *proutEffects) error {
	g := s.regFor(k)
	if g == nil || g.Key != p.Key {
		return ErrReservationConflict
	}
	fx.ua(s.regs, ASCReservationsPreempted)
	s.regs, s.resType, s.holder = nil, prTypeNone, nil
	s.gen++
	return nil
}

// preempt implements PREEMPT and PREEMPT AND ABORT (SPC-4 §5.13.11.2.4,
// §5.13.11.2.5).
func (s *prState) preempt(k NexusKey, p proutParams, typ PRType, abort bool, fx *proutEffects) error {
	g := s.regFor(k)
	if g == nil || g.Key != p.Key {
		return ErrReservationConflict
	}
	byKey := func(x *prReg) bool { return x != g && x.Key == p.SAKey }
	var gone []*prReg
	switch {
	case s.resType != prTypeNone && s.resType.allRegistrants() && p.SAKey == 0:
		// Preempting an all registrants reservation: every other
		// registration goes, the preempter holds a new reservation.
		gone = s.remove(func(x *prReg) bool { return x != g })
		s.establish(g, typ)
	case s.resType != prTypeNone && !s.resType.allRegistrants() && s.holder != nil && p.SAKey == s.holder.Key:
		oldType := s.resType
		gone = s.remove(byKey)
		s.establish(g, typ)
		if oldType != typ {
			fx.ua(others(s.regs, g), ASCReservationsReleased)
		}
	default:
		// No reservation, or a key that does not hold it: only
		// registrations are removed (SPC-4 §5.13.11.2.4.2, .4.4).
		if p.SAKey == 0 {
			return invalidParam(8, -1)
		}
		gone = s.remove(byKey)
		if len(gone) == 0 {
			return ErrReservationConflict
		}
	}
	fx.ua(gone, ASCRegistrationsPreempted)
	if abort {
		fx.abort = gone
	}
	s.gen++
	return nil
}

// establish makes g hold a new reservation of type typ.
func (s *prState) establish(g *prReg, typ PRType) {
	s.resType, s.holder = typ, g
	if typ.allRegistrants() {
		s.holder = nil
	}
}

func others(regs []*prReg, g *prReg) []*prReg {
	var out []*prReg
	for _, x := range regs {
		if x != g {
			out = append(out, x)
		}
	}
	return out
}

// registerAndMove implements REGISTER AND MOVE (SPC-4 §5.13.8): the
// reservation moves to the I_T nexus of the TransportID on the target
// port of RELATIVE TARGET PORT IDENTIFIER, which is registered if it is
// not yet.
func (s *prState) registerAndMove(k NexusKey, rel uint16, p proutParams, typ PRType) error {
	g := s.regFor(k)
	if g == nil || g.Key != p.Key {
		return ErrReservationConflict
	}
	if s.resType == prTypeNone || s.resType.allRegistrants() || s.holder != g {
		return ErrReservationConflict
	}
	if p.SAKey == 0 {
		return invalidParam(8, -1)
	}
	if p.RelPort != rel {
		// The only target port we can name is the one of this nexus.
		return invalidParam(18, -1)
	}
	t := p.TIDs[0]
	dest := &prReg{Key: p.SAKey, Initiator: t.Name, ISID: t.ISID, AnyISID: t.AnyISID,
		TargetName: k.TargetName, TPGT: k.TPGT, RelPort: rel}
	if dest.matches(k) {
		return invalidParam(proutBasicLen, -1) // moving to oneself
	}
	var d *prReg
	for _, x := range s.regs {
		if x.overlaps(dest) {
			d = x
			break
		}
	}
	if d == g {
		return invalidParam(proutBasicLen, -1)
	}
	if d == nil {
		d = dest
		s.regs = append(s.regs, d)
	}
	s.establish(d, typ)
	if p.Unreg {
		s.remove(func(x *prReg) bool { return x == g })
	}
	s.aptpl = p.APTPL
	s.gen++
	return nil
}
