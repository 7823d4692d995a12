package scsi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// luTable is an immutable LU inventory. Commands read the current table
// with one atomic load; AddLU and RemoveLU publish a new one.
type luTable struct {
	byID   map[uint16]*LU
	sorted []*LU // by LUN, for REPORT LUNS
}

func newLUTable(lus []*LU) (*luTable, error) {
	t := &luTable{byID: make(map[uint16]*LU, len(lus))}
	for _, lu := range lus {
		if lu == nil {
			return nil, errors.New("scsi: nil LU")
		}
		if _, dup := t.byID[lu.id]; dup {
			return nil, fmt.Errorf("scsi: duplicate LUN %d", lu.id)
		}
		t.byID[lu.id] = lu
		t.sorted = append(t.sorted, lu)
	}
	slices.SortFunc(t.sorted, func(a, b *LU) int { return int(a.id) - int(b.id) })
	return t, nil
}

// routerUpdate serialises inventory changes with nexus registration, so a
// login racing with AddLU is registered with the new LU exactly once.
type routerUpdate struct {
	mu   sync.Mutex
	live map[*Nexus]struct{} // live I_T nexuses
}

// track records a nexus as live (or gone). mu must be held.
func (u *routerUpdate) track(n *Nexus, live bool) {
	if live {
		if u.live == nil {
			u.live = make(map[*Nexus]struct{})
		}
		u.live[n] = struct{}{}
		return
	}
	delete(u.live, n)
}

// LUNs returns the logical units, ordered by LUN.
func (r *Router) LUNs() []*LU { return slices.Clone(r.tab.Load().sorted) }

// LU returns the logical unit with the given LUN, or nil.
func (r *Router) LU(id uint16) *LU { return r.tab.Load().byID[id] }

// AddLU adds a logical unit while the router serves commands. Every live
// I_T nexus first sees POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on
// the new LU, and REPORTED LUNS DATA HAS CHANGED on the existing ones
// (SPC-4 §6.33: the inventory changed).
func (r *Router) AddLU(lu *LU) error {
	if lu == nil {
		return errors.New("scsi: nil LU")
	}
	r.upd.mu.Lock()
	defer r.upd.mu.Unlock()
	old := r.tab.Load()
	if _, dup := old.byID[lu.id]; dup {
		return fmt.Errorf("scsi: duplicate LUN %d", lu.id)
	}
	tab, err := newLUTable(append(slices.Clone(old.sorted), lu))
	if err != nil {
		return err
	}
	for n := range r.upd.live {
		lu.addNexus(n)
	}
	r.tab.Store(tab)
	for _, other := range old.sorted {
		other.establishUA(ASCReportedLUNsDataChanged, nil)
	}
	lu.log.Info("LUN added")
	return nil
}

// RemoveLU takes LUN id out of service while the router serves commands:
// new commands to it get LOGICAL UNIT NOT SUPPORTED, the remaining LUs
// report REPORTED LUNS DATA HAS CHANGED to every nexus, and RemoveLU waits
// (until ctx ends) for the commands still executing on it. It returns the
// LU, which the caller closes. When ctx ends first the LU is out of the
// inventory but still busy; RemoveLU then returns it with ctx's error and
// the caller must not close it yet (Drain waits again).
func (r *Router) RemoveLU(ctx context.Context, id uint16) (*LU, error) {
	r.upd.mu.Lock()
	old := r.tab.Load()
	lu := old.byID[id]
	if lu == nil {
		r.upd.mu.Unlock()
		return nil, ErrUnknownLUN
	}
	rest := make([]*LU, 0, len(old.sorted)-1)
	for _, x := range old.sorted {
		if x != lu {
			rest = append(rest, x)
		}
	}
	tab, err := newLUTable(rest)
	if err != nil {
		r.upd.mu.Unlock()
		return nil, err
	}
	r.tab.Store(tab)
	for _, other := range rest {
		other.establishUA(ASCReportedLUNsDataChanged, nil)
	}
	r.upd.mu.Unlock()
	lu.log.Info("LUN removed")
	return lu, lu.Drain(ctx)
}

// Refresh re-reads the size of every LU (LU.Refresh): a grown backing file
// or block device raises CAPACITY DATA HAS CHANGED.
func (r *Router) Refresh() error {
	var errs []error
	for _, lu := range r.tab.Load().sorted {
		errs = append(errs, lu.Refresh())
	}
	return errors.Join(errs...)
}

// luLife counts the commands executing on an LU. Once retired, no command
// enters; Drain waits for those inside.
type luLife struct {
	n       atomic.Int64 // executing commands, plus retiredBit
	mu      sync.Mutex
	drained *sync.Cond
}

const retiredBit = 1 << 62

func (l *luLife) enter() bool {
	if l.n.Add(1)&retiredBit != 0 {
		l.exit()
		return false
	}
	return true
}

func (l *luLife) exit() {
	if l.n.Add(-1) == retiredBit {
		l.mu.Lock()
		if l.drained != nil {
			l.drained.Broadcast()
		}
		l.mu.Unlock()
	}
}

// Drain retires the LU (commands that have not started executing get
// LOGICAL UNIT NOT SUPPORTED) and waits until no command executes on it or
// ctx ends.
func (lu *LU) Drain(ctx context.Context) error {
	l := &lu.life
	l.mu.Lock()
	if l.drained == nil {
		l.drained = sync.NewCond(&l.mu)
	}
	for {
		v := l.n.Load()
		if v&retiredBit != 0 {
			break
		}
		if l.n.CompareAndSwap(v, v|retiredBit) {
			break
		}
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.drained.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	for l.n.Load() != retiredBit {
		if err := ctx.Err(); err != nil {
			l.mu.Unlock()
			return fmt.Errorf("scsi: LUN %d: commands still executing: %w", lu.id, err)
		}
		l.drained.Wait()
	}
	l.mu.Unlock()
	return nil
}
