package scsi

import "errors"

// NexusReaper is supplied by the transport: it ends, before returning,
// the I_T nexuses whose initiator has already gone (a closed TCP
// connection the transport has not processed yet).
type NexusReaper func()

// SetNexusReaper installs the transport's NexusReaper (nil removes it).
// The device server calls it before it reports a conflict caused by
// another I_T nexus (RESERVATION CONFLICT, MEDIUM REMOVAL PREVENTED) and
// then checks the command once more, so that the state of a nexus that is
// already lost does not refuse a command (SAM-5 §6.3.4).
func (r *Router) SetNexusReaper(f NexusReaper) {
	if f == nil {
		r.reaper.Store(nil)
		return
	}
	r.reaper.Store(&f)
}

// nexusConflict reports whether err may be caused by the state another
// I_T nexus left behind.
func nexusConflict(err error) bool {
	return errors.Is(err, ErrReservationConflict) || err == ErrMediumRemovalPrevented
}

// reap runs the reaper, if there is one, and reports whether it ran.
func (r *Router) reap() bool {
	p := r.reaper.Load()
	if p == nil {
		return false
	}
	(*p)()
	return true
}
