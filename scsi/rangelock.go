package scsi

import (
	"math/bits"
	"sync"
)

// Write ordering between commands (SBC-4 §4.29 atomic writes, §5.3
// COMPARE AND WRITE): a COMPARE AND WRITE, ORWRITE, WRITE ATOMIC or
// EXTENDED COPY must appear to happen all at once with respect to every
// other write to the same LBAs. Plain writes need no ordering among
// themselves (SIMPLE task attribute), so they share a stripe while the
// atomic commands take it exclusively.
//
// The LBA space is cut into stripes of stripeBytes; stripe s is guarded by
// lock s mod lockStripes. A command locks the set of locks its range
// touches in ascending index order, each once, so two commands never wait
// for each other in a cycle. A range spanning lockStripes stripes or more
// takes every lock. Reads take no lock.
const (
	lockStripes = 64
	stripeBytes = 1 << 20
)

// lockSet is a bitmap of stripe lock indices.
type lockSet uint64

type rangeLock struct {
	mu [lockStripes]sync.RWMutex
}

// set returns the locks covering blocks [lba, lba+n) for an LU whose
// blocks are 1<<bsShift bytes. n zero means no lock.
func (l *rangeLock) set(lba, n uint64, bsShift uint) lockSet {
	if n == 0 {
		return 0
	}
	shift := uint(bits.TrailingZeros(stripeBytes)) - bsShift
	first, last := lba>>shift, (lba+n-1)>>shift
	if last < first || last-first >= lockStripes-1 {
		return ^lockSet(0)
	}
	var s lockSet
	for i := first; i <= last; i++ {
		s |= 1 << (i % lockStripes)
	}
	return s
}

// all is the set of every lock (SANITIZE, whole-LU operations).
func (l *rangeLock) all() lockSet { return ^lockSet(0) }

// lock takes the locks of s: shared for plain writes, exclusive for
// atomic ones.
func (l *rangeLock) lock(s lockSet, exclusive bool) {
	for m := uint64(s); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		if exclusive {
			l.mu[i].Lock()
		} else {
			l.mu[i].RLock()
		}
	}
}

// unlock releases what lock took.
func (l *rangeLock) unlock(s lockSet, exclusive bool) {
	for m := uint64(s); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		if exclusive {
			l.mu[i].Unlock()
		} else {
			l.mu[i].RUnlock()
		}
	}
}

// lockWrite takes the stripes of [lba, lba+n): shared for a plain write,
// exclusive for an atomic command. Release them with unlockWrite and the
// same exclusive flag.
func (lu *LU) lockWrite(lba, n uint64, exclusive bool) lockSet {
	s := lu.ranges.set(lba, n, lu.bsShift)
	lu.ranges.lock(s, exclusive)
	return s
}

func (lu *LU) unlockWrite(s lockSet, exclusive bool) { lu.ranges.unlock(s, exclusive) }
