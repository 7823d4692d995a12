package scsi

import "context"

// SPC-2 RESERVE and RELEASE (SPC-2 §7.21-7.24), logical unit reservations
// only: the third-party and extent forms are obsolete and their bits are
// outside the usage maps. The reservation belongs to one I_T nexus; LUN
// reset, target reset, I_T nexus loss and logout release it (SPC-2
// §5.5.1). It is never persistent.

// reserveUsage returns the usage map of RESERVE/RELEASE: every field is
// reserved or obsolete for a logical unit reservation.
func reserveUsage(op OpCode) []byte {
	if op == OpReserve6 || op == OpRelease6 {
		return u(byte(op), 0, 0, 0, 0, 0)
	}
	return u(byte(op), 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

// execReserve reserves the LU for the nexus (SPC-2 §7.21). The holder may
// reserve again; another nexus got RESERVATION CONFLICT in the dispatcher
// already, and so did everyone while persistent reservations exist.
func execReserve(_ context.Context, lu *LU, c *Command) error {
	k := nexusKeyOf(c.Nexus)
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	s := lu.prState()
	switch {
	case len(s.regs) > 0 || s.resType != prTypeNone:
		return ErrReservationConflict
	case s.spc2 != nil && *s.spc2 != k:
		return ErrReservationConflict
	case s.spc2 != nil:
		return nil
	}
	n := s.clone()
	n.spc2 = &k
	return lu.commitPR(n, false)
}

// execRelease releases the nexus's reservation; from any other nexus it
// is GOOD and does nothing (SPC-2 §7.23).
func execRelease(_ context.Context, lu *LU, c *Command) error {
	k := nexusKeyOf(c.Nexus)
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	s := lu.prState()
	if len(s.regs) > 0 || s.resType != prTypeNone {
		return ErrReservationConflict
	}
	if s.spc2 == nil || *s.spc2 != k {
		return nil
	}
	n := s.clone()
	n.spc2 = nil
	return lu.commitPR(n, false)
}

// releaseSPC2 drops the SPC-2 reservation when match accepts its holder.
func (lu *LU) releaseSPC2(match func(NexusKey) bool) {
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	s := lu.prState()
	if s.spc2 == nil || !match(*s.spc2) {
		return
	}
	n := s.clone()
	n.spc2 = nil
	_ = lu.commitPR(n, false) // not durable: cannot fail
}

// prNexusLost is the reservation side of I_T nexus loss and logout: the
// SPC-2 reservation of that nexus ends; persistent reservations stay.
func (lu *LU) prNexusLost(k NexusKey) {
	lu.releaseSPC2(func(h NexusKey) bool { return h == k })
}

// prReset is the reservation side of LOGICAL UNIT RESET and target
// resets: the SPC-2 reservation ends; persistent reservations stay (SPC-4
// §5.13.1).
func (lu *LU) prReset() {
	lu.releaseSPC2(func(NexusKey) bool { return true })
}
