package scsi

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Logical block provisioning thresholds (SBC-4 §4.7.3.7): a thin LU whose
// device reports its allocation (backstore.AllocationReporter) offers one
// soft threshold on the used LBA mapping resources (threshold resource 02h,
// armed increasing), set through the Logical Block Provisioning mode page
// (1Ch/02h) and reported through the Logical Block Provisioning log page
// (0Ch). Resources are counted in threshold sets of 2^exp LBAs, exp being
// the THRESHOLD EXPONENT of VPD page B2h.
const (
	pageLBP          = 0x1C // with subpage 02h
	subpageLBP       = 0x02
	lbpDescOffset    = 16      // byte offset of the threshold descriptor in page 1Ch/02h
	thresholdSetSize = 1 << 20 // bytes per threshold set we aim for
	resourceUsed     = 0x02    // THRESHOLD RESOURCE: used LBA mapping resources
	armIncreasing    = 0x01    // THRESHOLD ARMING 001b
	logPageSupported = 0x00
	logPageLBP       = 0x0C
	logParamAvail    = 0x0001
	logParamUsed     = 0x0002
	logScopeLU       = 0x01 // SCOPE 01b: dedicated to this LU
	logScopeShared   = 0x02 // SCOPE 10b: may be shared with other LUs
)

// lbpThreshold is the threshold state of an LU. exp 0 means the LU has no
// thresholds (not thin, or its device cannot report allocation).
type lbpThreshold struct {
	exp   uint8
	alloc backstore.AllocationReporter

	// Current mode page values, read on the write path.
	enabled atomic.Bool
	situa   atomic.Bool
	count   atomic.Uint32

	// pending counts bytes written since the last sample; sampling is
	// held by the one command that samples.
	pending  atomic.Int64
	sampling atomic.Bool

	mu    sync.Mutex
	armed bool // the notification trigger (SBC-4 figure 8)
}

// initThreshold enables thresholds on a thin LU whose device reports its
// allocation, with threshold sets of thresholdSetSize bytes (smaller on
// LUs under 64 MiB) and a
// THRESHOLD COUNT that can express the whole capacity.
func (lu *LU) initThreshold(dev backstore.Device) {
	a, ok := dev.(backstore.AllocationReporter)
	if !lu.thin || !ok {
		return
	}
	if _, err := a.Allocation(); err != nil {
		return // a block device: allocation is the pool's business
	}
	// About 1 MiB per set, but at least 64 sets on small LUs.
	target := min(uint64(thresholdSetSize), lu.capacity.Load()<<lu.bsShift/64)
	exp := uint8(1)
	for uint64(1)<<exp*uint64(lu.bs) < target {
		exp++
	}
	for lu.capacity.Load()>>exp > 0xFFFFFFFF {
		exp++
	}
	lu.thr.exp, lu.thr.alloc = exp, a
	lu.thr.armed = true
}

// hasThresholds reports whether the LU supports provisioning thresholds.
func (lu *LU) hasThresholds() bool { return lu.thr.exp != 0 }

// setThreshold installs the current threshold values; a change re-arms
// the trigger.
func (lu *LU) setThreshold(v modeValues) {
	t := &lu.thr
	changed := t.enabled.Load() != v.ThreshEnabled || t.count.Load() != v.ThreshCount
	t.situa.Store(v.SITUA)
	t.count.Store(v.ThreshCount)
	t.enabled.Store(v.ThreshEnabled)
	if changed {
		t.mu.Lock()
		t.armed = true
		t.mu.Unlock()
	}
}

// rearmThreshold re-arms the trigger after a logical unit reset: the
// notification is once per crossing since the last reset (SBC-4
// §4.7.3.7.6).
func (lu *LU) rearmThreshold() {
	lu.thr.mu.Lock()
	lu.thr.armed = true
	lu.thr.mu.Unlock()
}

// afterWrite is called after every successful write-class command. With
// the threshold disabled it costs one atomic load. Ordinary writes add
// their bytes and sample the allocation once a threshold set's worth has
// been written since the last sample; commands that allocate or free a
// lot at once (WRITE SAME, UNMAP) sample at once; EXTENDED COPY samples
// each destination LU and SANITIZE its LU when the operation ends, through
// allocationChanged.
func (lu *LU) afterWrite(c *Command) {
	t := &lu.thr
	if t.exp == 0 || !t.enabled.Load() {
		return
	}
	switch OpCode(c.CDB[0]) {
	case OpExtendedCopy, OpSanitize:
		return // runCopy samples its destination LUs, a sanitize its LU when it ends
	case OpWriteSame10, OpWriteSame16, OpUnmap:
	default:
		if t.pending.Add(int64(len(c.DataOut))) < int64(lu.bs)<<t.exp {
			return
		}
	}
	lu.sampleThreshold(c.Nexus)
}

// allocationChanged samples the allocation now when the threshold is
// enabled.
func (lu *LU) allocationChanged(n *Nexus) {
	if lu.thr.exp != 0 && lu.thr.enabled.Load() {
		lu.sampleThreshold(n)
	}
}

// sampleThreshold reads the device's allocation and applies the threshold.
// A sample already under way makes this one unnecessary.
func (lu *LU) sampleThreshold(n *Nexus) {
	t := &lu.thr
	if !t.sampling.CompareAndSwap(false, true) {
		return
	}
	defer t.sampling.Store(false)
	t.pending.Store(0)
	a, err := t.alloc.Allocation()
	if err != nil {
		lu.log.WithError(err).Warn("scsi: provisioning threshold: cannot read allocation")
		return
	}
	lu.applyThreshold(uint64(max(a.Used, 0))>>lu.bsShift, n)
}

// applyThreshold runs the armed increasing threshold of SBC-4 §4.7.3.7.5
// on used LBAs: the range is THRESHOLD COUNT threshold sets ± half a set.
// Crossing the maximum while armed notifies and disarms; dropping below
// the minimum re-arms. The notification is the unit attention THIN
// PROVISIONING SOFT THRESHOLD REACHED for every I_T nexus, or with SITUA
// only for the nexus whose command crossed it (§4.7.3.7.6).
func (lu *LU) applyThreshold(used uint64, n *Nexus) {
	t := &lu.thr
	if !t.enabled.Load() {
		return
	}
	set := uint64(1) << t.exp
	center := uint64(t.count.Load()) << t.exp
	lo, hi := center-min(center, set/2), center+set/2
	t.mu.Lock()
	fire := false
	switch {
	case used < lo:
		t.armed = true
	case t.armed && used > hi:
		t.armed, fire = false, true
	}
	t.mu.Unlock()
	if !fire {
		return
	}
	lu.log.WithField("used_lbas", used).Warn("scsi: thin provisioning soft threshold reached")
	if t.situa.Load() && n != nil {
		lu.mu.Lock()
		if ns := lu.stateFor(n, false); ns != nil {
			lu.pushUA(ns, ASCSoftThresholdReached)
		}
		lu.mu.Unlock()
		return
	}
	lu.establishUA(ASCSoftThresholdReached, nil)
}

// uaSense is the sense data of a pending unit attention. THIN
// PROVISIONING SOFT THRESHOLD REACHED carries the offset of the threshold
// descriptor in the mode page as INFORMATION (SBC-4 §4.7.3.7.6).
func uaSense(asc ASC) Sense {
	s := Sense{Key: KeyUnitAttention, ASC: asc}
	if asc == ASCSoftThresholdReached {
		s = s.withInfo(lbpDescOffset)
	}
	return s
}

// buildLBPPage fills the Logical Block Provisioning mode page (SBC-4
// §6.5.9) after its 4-byte header: SITUA and one soft threshold
// descriptor on used LBA mapping resources, armed increasing.
func buildLBPPage(b []byte, v modeValues, changeable bool) {
	d := b[lbpDescOffset:]
	if changeable {
		b[4] = 0x01 // SITUA
		d[0] = 0x80 // ENABLED
		be.PutUint32(d[4:8], 0xFFFFFFFF)
		return
	}
	if v.SITUA {
		b[4] = 0x01
	}
	d[0] = armIncreasing // THRESHOLD TYPE 000b: soft
	if v.ThreshEnabled {
		d[0] |= 0x80
	}
	d[1] = resourceUsed
	be.PutUint32(d[4:8], v.ThreshCount)
}

func parseLBPPage(b []byte, v *modeValues) {
	d := b[lbpDescOffset:]
	v.SITUA = b[4]&0x01 != 0
	v.ThreshEnabled = d[0]&0x80 != 0
	v.ThreshCount = be.Uint32(d[4:8])
}

// --- LOG SENSE (SPC-4 §6.8) ---

type logSenseCDB struct {
	page, sub uint8
	ptr       uint16
	alloc     uint16
}

// planLogSense accepts the Supported Log Pages page (00h/00h), the
// Supported Log Pages and Subpages page (00h/FFh) and, on LUs with
// thresholds, the Logical Block Provisioning page (0Ch/00h). SP and PPC
// are rejected by the usage map (no saved log parameters); every page
// control value returns the current values, which is all these pages have.
func planLogSense(lu *LU, c *Command) error {
	q := logSenseCDB{page: c.CDB[2] & 0x3F, sub: c.CDB[3], ptr: be.Uint16(c.CDB[5:7]), alloc: be.Uint16(c.CDB[7:9])}
	switch {
	case q.page == logPageSupported && (q.sub == 0 || q.sub == subpageAll):
		if q.ptr != 0 {
			return invalidCDB(5, -1)
		}
	case q.page == logPageLBP && lu.hasThresholds():
		if q.sub != 0 {
			return invalidCDB(3, -1)
		}
		if q.ptr > logParamUsed {
			return invalidCDB(5, -1)
		}
	default:
		return invalidCDB(2, 5)
	}
	c.state.logs = q
	planDataIn(c, uint32(q.alloc))
	return nil
}

func execLogSense(_ context.Context, lu *LU, c *Command) error {
	q := c.state.logs
	out := make([]byte, 4, 32)
	out[0], out[1] = q.page, q.sub
	switch {
	case q.page == logPageSupported && q.sub == 0:
		out = append(out, logPageSupported)
		if lu.hasThresholds() {
			out = append(out, logPageLBP)
		}
	case q.page == logPageSupported:
		out[0] |= 0x40 // SPF
		out = append(out, logPageSupported, 0, logPageSupported, subpageAll)
		if lu.hasThresholds() {
			out = append(out, logPageLBP, 0)
		}
	default:
		a, err := lu.thr.alloc.Allocation()
		if err != nil {
			return lu.ioError(c, err, ioRead, 0, false)
		}
		out[0] |= 0x80 // DS: not saveable
		availScope := byte(logScopeLU)
		if a.Shared {
			availScope = logScopeShared
		}
		for _, p := range []struct {
			code  uint16
			bytes int64
			scope byte
		}{{logParamAvail, a.Available, availScope}, {logParamUsed, a.Used, logScopeLU}} {
			if p.code < q.ptr {
				continue
			}
			prm := make([]byte, 12)
			be.PutUint16(prm[0:2], p.code)
			prm[2] = 0x03 // binary format list: FORMAT AND LINKING 11b
			prm[3] = 8
			be.PutUint32(prm[4:8], uint32(min(uint64(max(p.bytes, 0))>>lu.bsShift>>lu.thr.exp, 0xFFFFFFFF)))
			prm[8] = p.scope
			out = append(out, prm...)
		}
	}
	be.PutUint16(out[2:4], uint16(len(out)-4))
	respond(c, out)
	return nil
}
