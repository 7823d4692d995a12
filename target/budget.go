package target

import (
	"sync"
	"sync/atomic"
)

// budget bounds the memory lent to commands as data buffers, across all
// sessions of a server. A command that would exceed it waits (reads, and
// writes on a connection with nothing else to receive) or is answered TASK
// SET FULL (a write whose wait could stall data the connection still has
// to receive); it never allocates beyond the budget. A single request
// larger than the whole budget is admitted when nothing else is lent, so
// it cannot wait forever.
type budget struct {
	limit int64
	used  atomic.Int64

	mu       sync.Mutex
	waiters  []*budgetWaiter // FIFO
	nwaiters atomic.Int32

	waits   atomic.Uint64 // requests that had to wait
	refused atomic.Uint64 // writes answered TASK SET FULL
	peak    atomic.Int64  // the most ever lent at once
}

type budgetWaiter struct {
	n       int64
	ch      chan struct{}
	granted bool
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// try takes n bytes if they fit. Waiters go first: a newcomer does not
// overtake them.
func (b *budget) try(n int64) bool {
	if b.nwaiters.Load() > 0 {
		return false
	}
	return b.take(n)
}

func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u > 0 && u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

// acquire takes n bytes, waiting until they fit or done is closed; it
// reports whether it got them.
func (b *budget) acquire(n int64, done <-chan struct{}) bool {
	if b.try(n) {
		return true
	}
	b.waits.Add(1)
	w := &budgetWaiter{n: n, ch: make(chan struct{})}
	b.mu.Lock()
	b.waiters = append(b.waiters, w)
	b.nwaiters.Add(1)
	// Bytes released between try and here found no waiter: look again.
	b.grantLocked()
	b.mu.Unlock()
	select {
	case <-w.ch:
		return true
	case <-done:
	}
	b.mu.Lock()
	if w.granted {
		b.mu.Unlock()
		b.release(n)
		return false
	}
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			b.nwaiters.Add(-1)
			break
		}
	}
	// The head may have been blocking smaller requests behind it.
	b.grantLocked()
	b.mu.Unlock()
	return false
}

// release returns n bytes and wakes the waiters that now fit.
func (b *budget) release(n int64) {
	b.used.Add(-n)
	if b.nwaiters.Load() == 0 {
		return
	}
	b.mu.Lock()
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked admits waiters in order while the head fits; b.mu is held.
func (b *budget) grantLocked() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if !b.take(w.n) {
			return
		}
		w.granted = true
		close(w.ch)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.nwaiters.Add(-1)
	}
}
