package scsi

import (
	"sync/atomic"
	"time"
)

// Statistics of the device server. Every counter is an atomic updated
// where a command completes (Router.finish), so the I/O path allocates
// nothing and takes no lock for them; LU.Stats and Router.Stats copy them
// into plain values for an exporter (the metrics package) to read at scrape
// time. The scsi package knows nothing about Prometheus.

// CommandClass groups operation codes for statistics.
type CommandClass uint8

// Command classes.
const (
	ClassRead  CommandClass = iota // READ(6/10/12/16)
	ClassWrite                     // WRITE(6/10/12/16), WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE
	ClassFlush                     // SYNCHRONIZE CACHE(10/16)
	ClassUnmap                     // UNMAP, WRITE SAME(10/16)
	ClassOther                     // everything else (INQUIRY, TEST UNIT READY, MODE SENSE, ...)
	// NumCommandClasses is the number of classes.
	NumCommandClasses = int(iota)
)

var classNames = [NumCommandClasses]string{"read", "write", "flush", "unmap", "other"}

// String returns the class name used as a metric label.
func (k CommandClass) String() string {
	if int(k) < NumCommandClasses {
		return classNames[k]
	}
	return "other"
}

// commandClass maps an operation code to its class. Immutable.
var commandClass = func() (t [256]CommandClass) {
	for i := range t {
		t[i] = ClassOther
	}
	for _, op := range []OpCode{OpRead6, OpRead10, OpRead12, OpRead16} {
		t[op] = ClassRead
	}
	for _, op := range []OpCode{OpWrite6, OpWrite10, OpWrite12, OpWrite16, OpWriteAndVerify10,
		OpWriteAndVerify12, OpWriteAndVerify16, OpCompareAndWrite, OpORWrite16} {
		t[op] = ClassWrite
	}
	t[OpSyncCache10], t[OpSyncCache16] = ClassFlush, ClassFlush
	t[OpUnmap], t[OpWriteSame10], t[OpWriteSame16] = ClassUnmap, ClassUnmap, ClassUnmap
	return t
}()

// ClassOf returns the statistics class of a CDB's operation code.
func ClassOf(op OpCode) CommandClass { return commandClass[op] }

// latencyBounds are the upper bounds, in nanoseconds, of the command
// latency histogram buckets: 50 µs to 30 s, roughly three per decade. The
// last bucket (+Inf) is implicit.
var latencyBounds = [...]int64{
	50e3, 100e3, 250e3, 500e3,
	1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6,
	1e9, 2.5e9, 5e9, 10e9, 30e9,
}

// LatencyBuckets returns the upper bounds, in seconds, of the buckets of
// Histogram.Counts (without the final +Inf bucket).
func LatencyBuckets() []float64 {
	b := make([]float64, len(latencyBounds))
	for i, ns := range latencyBounds {
		b[i] = float64(ns) / 1e9
	}
	return b
}

// histogram is a fixed-bucket latency histogram of atomics.
type histogram struct {
	counts [len(latencyBounds) + 1]atomic.Uint64
	sumNS  atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	// A linear scan: 18 bounds, most I/O lands in the first few.
	i := 0
	for i < len(latencyBounds) && ns > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(uint64(ns))
}

// Histogram is a snapshot of a latency histogram. Counts[i] is the number
// of observations in bucket i (not cumulative): bucket i holds latencies
// at most LatencyBuckets()[i] and above the previous bound; the last
// element counts those above every bound.
type Histogram struct {
	Counts []uint64
	// Count is the sum of Counts.
	Count uint64
	// Sum is the total of all observations in seconds.
	Sum float64
}

func (h *histogram) snapshot() Histogram {
	s := Histogram{Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = float64(h.sumNS.Load()) / 1e9
	return s
}

// classCounters are the counters of one command class of one LU.
type classCounters struct {
	commands atomic.Uint64
	bytes    atomic.Uint64
	latency  histogram
}

// luStats are the counters of one LU.
type luStats struct {
	classes [NumCommandClasses]classCounters
	// errors counts CHECK CONDITION by sense key.
	errors [16]atomic.Uint64
	// busy counts BUSY and TASK SET FULL statuses.
	busy atomic.Uint64
}

// ClassStats is a snapshot of one command class of an LU.
type ClassStats struct {
	// Commands completed, whatever their status.
	Commands uint64
	// Bytes of data moved by commands that completed with GOOD status:
	// Data-In for reads, Data-Out for writes (only ClassRead and
	// ClassWrite count bytes).
	Bytes uint64
	// Latency from the command's planning (its CDB received) to its
	// status, data transfers included.
	Latency Histogram
}

// LUStats is a snapshot of a logical unit's counters (LU.Stats).
type LUStats struct {
	// ID is the LUN.
	ID uint16
	// Classes is indexed by CommandClass.
	Classes [NumCommandClasses]ClassStats
	// Errors counts commands that ended in CHECK CONDITION, by sense key
	// (index = SenseKey).
	Errors [16]uint64
	// ReservationConflicts counts commands answered RESERVATION CONFLICT
	// (counted by Router.finish in pr's counter).
	ReservationConflicts uint64
	// PRRegistrations is the number of persistent reservation
	// registrations; PRReserved reports a persistent reservation,
	// SPC2Reserved an SPC-2 RESERVE.
	PRRegistrations int
	PRReserved      bool
	SPC2Reserved    bool
	// Busy counts commands answered BUSY or TASK SET FULL.
	Busy uint64
	// CapacityBytes is the current capacity.
	CapacityBytes uint64
}

// Stats returns a snapshot of the LU's counters.
func (lu *LU) Stats() LUStats {
	s := LUStats{ID: lu.id, CapacityBytes: lu.capacity.Load() << lu.bsShift}
	st := &lu.stats
	for i := range st.classes {
		c := &st.classes[i]
		s.Classes[i] = ClassStats{Commands: c.commands.Load(), Bytes: c.bytes.Load(), Latency: c.latency.snapshot()}
	}
	for i := range st.errors {
		s.Errors[i] = st.errors[i].Load()
	}
	s.ReservationConflicts = lu.ReservationConflicts()
	pr := lu.prState()
	s.PRRegistrations, s.PRReserved, s.SPC2Reserved = len(pr.regs), pr.resType != 0, pr.spc2 != nil
	s.Busy = st.busy.Load()
	return s
}

// RouterStats is a snapshot of a Router's counters (Router.Stats).
type RouterStats struct {
	// LUs holds one entry per logical unit, by LUN.
	LUs []LUStats
	// Panics counts commands whose handler panicked (answered HARDWARE
	// ERROR).
	Panics uint64
	// UnknownLUN counts commands addressed to a LUN without a logical
	// unit.
	UnknownLUN uint64
}

// Stats returns a snapshot of the router's and its LUs' counters.
func (r *Router) Stats() RouterStats {
	lus := r.tab.Load().sorted
	s := RouterStats{Panics: r.panics.Load(), UnknownLUN: r.unknownLUN.Load(), LUs: make([]LUStats, 0, len(lus))}
	for _, lu := range lus {
		s.LUs = append(s.LUs, lu.Stats())
	}
	return s
}

// account records a completed command; Router.finish calls it once per
// command, after the status is final.
func (r *Router) account(c *Command) {
	lu := c.state.lu
	if lu == nil {
		r.unknownLUN.Add(1)
		return
	}
	var op OpCode
	if len(c.CDB) > 0 {
		op = OpCode(c.CDB[0])
	}
	class := commandClass[op]
	st := &lu.stats
	cc := &st.classes[class]
	cc.commands.Add(1)
	if !c.state.start.IsZero() {
		cc.latency.observe(time.Since(c.state.start))
	}
	switch c.Status {
	case StatusGood, StatusConditionMet:
		switch {
		case class == ClassRead && c.Dir == DirIn:
			cc.bytes.Add(uint64(min(int(c.XferLen), len(c.DataIn))))
		case class == ClassWrite && c.Dir == DirOut:
			cc.bytes.Add(uint64(min(int(c.XferLen), len(c.DataOut))))
		}
	case StatusCheckCondition:
		st.errors[senseKeyOf(c.SenseData())].Add(1)
	case StatusBusy, StatusTaskSetFull:
		st.busy.Add(1)
	}
}

// senseKeyOf returns the sense key of fixed (70h/71h) or descriptor
// (72h/73h) format sense data; 0 for anything else.
func senseKeyOf(b []byte) SenseKey {
	if len(b) == 0 {
		return KeyNoSense
	}
	switch b[0] & 0x7F {
	case 0x70, 0x71:
		if len(b) > 2 {
			return SenseKey(b[2] & 0x0F)
		}
	case 0x72, 0x73:
		if len(b) > 1 {
			return SenseKey(b[1] & 0x0F)
		}
	}
	return KeyNoSense
}
