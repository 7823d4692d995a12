package scsi

import (
	"bytes"
	"context"
	"sync"
)

// --- EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18) ---
//
// The LU that receives EXTENDED COPY is the copy manager. It copies
// between logical units of its own target (the Router): target
// descriptors are identification descriptors (E4h) naming an LU by one
// of its VPD page 83h designators, and segment descriptors are
// block-to-block (02h). Nothing leaves the target.

// Copy manager limits, reported by RECEIVE COPY RESULTS with OPERATING
// PARAMETERS (SPC-4 §6.18.4).
const (
	xcopyMaxTargets     = 8
	xcopyMaxSegments    = 64
	xcopyMaxDescListLen = 4096
	xcopyMaxSegmentLen  = 0xFFFF * largeBlockSize // the NUMBER OF BLOCKS field can never ask for more
	xcopyHeldResults    = 256                     // copy status entries kept per LU
)

// Descriptor layout (SPC-4 §6.4.5, §6.4.6).
const (
	xcopyHdrLen       = 16
	xcopyTargetLen    = 32   // every E0h-E9h target descriptor
	xcopyTargetIdent  = 0xE4 // identification descriptor target descriptor
	xcopySegB2B       = 0x02 // block device to block device
	xcopySegB2BLen    = 0x1C // 4-byte header + DESCRIPTOR LENGTH 0018h
	xcopyDesigMax     = 20   // designator bytes that fit in an E4h descriptor
	xcopyDeviceTypeSB = 0x00 // direct access block device
)

// LIST ID USAGE values (SPC-4 table 124).
const (
	listIDHold    = 0 // hold results for RECEIVE COPY RESULTS; list ID unique
	listIDNoHold  = 2 // do not hold; list ID unique
	listIDIgnored = 3 // do not hold; LIST IDENTIFIER not checked
)

// xcopyCDB is EXTENDED COPY(LID1).
type xcopyCDB struct{ ParamLen uint32 }

// rcrCDB is RECEIVE COPY RESULTS.
type rcrCDB struct {
	SA       uint8
	ListID   uint8
	AllocLen uint32
}

// Service actions of RECEIVE COPY RESULTS (SPC-4 table 169).
const (
	rcrCopyStatus uint8 = 0x00
	rcrOpParams   uint8 = 0x03
)

// xcopyTarget is a parsed identification descriptor target descriptor.
type xcopyTarget struct {
	off        int // offset in the parameter list, for sense pointers
	codeSet    uint8
	assocType  uint8 // ASSOCIATION and DESIGNATOR TYPE (byte 5 bits 5:0)
	designator []byte
	blockLen   uint32 // DISK BLOCK LENGTH
}

// xcopySegment is a parsed block-to-block segment descriptor.
type xcopySegment struct {
	off            int
	src, dst       uint16
	dc             bool // NUMBER OF BLOCKS counts destination blocks
	blocks         uint16
	srcLBA, dstLBA uint64
}

// xcopyList is a validated EXTENDED COPY parameter list.
type xcopyList struct {
	listID   uint8
	usage    uint8
	targets  []xcopyTarget
	segments []xcopySegment
}

// parseXCopy validates an EXTENDED COPY(LID1) parameter list of exactly
// the bytes received. Errors are ILLEGAL REQUEST sense values with field
// pointers into the list. It allocates at most one descriptor per 28
// bytes of input and never panics (FuzzXCopyParams).
func parseXCopy(p []byte) (xcopyList, error) {
	var l xcopyList
	if len(p) < xcopyHdrLen {
		return l, ErrParamListLength
	}
	l.listID = p[0]
	if p[1]&0xC0 != 0 {
		return l, invalidParam(1, 7)
	}
	l.usage = p[1] >> 3 & 0x03
	if l.usage == 1 {
		return l, invalidParam(1, 4)
	}
	if p[1]&0x20 != 0 { // STR: sequential striped, a stream device hint
		return l, invalidParam(1, 5)
	}
	tdl, sdl, inl := int(be.Uint16(p[2:4])), int64(be.Uint32(p[8:12])), int64(be.Uint32(p[12:16]))
	if int64(tdl)+sdl > xcopyMaxDescListLen {
		return l, ErrParamListLength
	}
	if inl != 0 {
		return l, invalidParam(12, -1) // MAXIMUM INLINE DATA LENGTH is zero
	}
	if xcopyHdrLen+int64(tdl)+sdl > int64(len(p)) {
		return l, ErrParamListLength
	}
	sd := int(sdl)
	for off := xcopyHdrLen; off < xcopyHdrLen+tdl; off += xcopyTargetLen {
		if len(l.targets) == xcopyMaxTargets {
			return l, Sense{Key: KeyIllegalRequest, ASC: ASCTooManyTargetDescs}
		}
		t, err := parseXCopyTarget(p, off, xcopyHdrLen+tdl)
		if err != nil {
			return l, err
		}
		l.targets = append(l.targets, t)
	}
	end := xcopyHdrLen + tdl + sd
	for off := xcopyHdrLen + tdl; off < end; {
		if len(l.segments) == xcopyMaxSegments {
			return l, Sense{Key: KeyIllegalRequest, ASC: ASCTooManySegmentDescs}
		}
		if off+4 > end {
			return l, ErrParamListLength
		}
		n := 4 + int(be.Uint16(p[off+2:off+4]))
		if p[off] != xcopySegB2B {
			return l, Sense{Key: KeyIllegalRequest, ASC: ASCUnsupportedSegmentDesc, FieldValid: true, FieldByte: uint16(off)}
		}
		if n != xcopySegB2BLen {
			return l, invalidParam(off+2, -1)
		}
		if off+n > end {
			return l, ErrParamListLength
		}
		d := p[off : off+n]
		l.segments = append(l.segments, xcopySegment{
			off: off, dc: d[1]&0x02 != 0,
			src: be.Uint16(d[4:6]), dst: be.Uint16(d[6:8]),
			blocks: be.Uint16(d[10:12]),
			srcLBA: be.Uint64(d[12:20]), dstLBA: be.Uint64(d[20:28]),
		})
		off += n
	}
	return l, nil
}

// parseXCopyTarget parses the 32-byte target descriptor at off; end is
// where the target descriptor list ends.
func parseXCopyTarget(p []byte, off, end int) (xcopyTarget, error) {
	if off+xcopyTargetLen > end {
		return xcopyTarget{}, ErrParamListLength
	}
	d := p[off : off+xcopyTargetLen]
	if d[0] != xcopyTargetIdent {
		return xcopyTarget{}, Sense{Key: KeyIllegalRequest, ASC: ASCUnsupportedTargetDesc, FieldValid: true, FieldByte: uint16(off)}
	}
	// Byte 1: LU ID TYPE and NUL are obsolete in SPC-4 and ignored; the
	// PERIPHERAL DEVICE TYPE must be a block device.
	if d[1]&0x1F != xcopyDeviceTypeSB {
		return xcopyTarget{}, invalidParam(off+1, 4)
	}
	n := int(d[7])
	if n == 0 || n > xcopyDesigMax {
		return xcopyTarget{}, invalidParam(off+7, -1)
	}
	return xcopyTarget{
		off:        off,
		codeSet:    d[4] & 0x0F,
		assocType:  d[5] & 0x3F,
		designator: d[8 : 8+n],
		blockLen:   uint32(d[29])<<16 | uint32(d[30])<<8 | uint32(d[31]),
	}, nil
}

func planExtendedCopy(_ *LU, c *Command) error {
	q := xcopyCDB{ParamLen: be.Uint32(c.CDB[10:14])}
	c.state.xc = q
	if q.ParamLen == 0 {
		return errPlanDone // no copy (SPC-4 §6.4.1)
	}
	if q.ParamLen > xcopyHdrLen+xcopyMaxDescListLen {
		return ErrParamListLength
	}
	c.Dir, c.XferLen = DirOut, q.ParamLen
	return nil
}

// copyAborted is the COPY ABORTED sense with a segment pointer.
func copyAborted(asc ASC, seg int) error {
	return Sense{Key: KeyCopyAborted, ASC: asc, FieldValid: true, Segment: true, FieldByte: uint16(seg)}
}

// execExtendedCopy parses the list, resolves every target descriptor to
// an LU of this target, then processes the segments in order. The
// outcome is held for RECEIVE COPY RESULTS when LIST ID USAGE asks for it.
func execExtendedCopy(ctx context.Context, lu *LU, c *Command) error {
	data := c.DataOut[:min(len(c.DataOut), int(c.state.xc.ParamLen))]
	if len(data) < int(c.state.xc.ParamLen) {
		return ErrParamListLength
	}
	l, err := parseXCopy(data)
	if err != nil {
		return err
	}
	key := copyKey{nexus: nexusKeyOf(c.Nexus), id: l.listID}
	unique := l.usage != listIDIgnored
	if unique && !lu.copies.begin(key) {
		return Sense{Key: KeyIllegalRequest, ASC: ASCOperationInProgress}
	}
	st := copyStatus{}
	err = lu.runCopy(ctx, c, l, &st)
	if unique {
		lu.copies.end(key, st, err == nil, l.usage == listIDHold)
	}
	return err
}

// runCopy processes the segments, counting what was done in st.
func (lu *LU) runCopy(ctx context.Context, c *Command, l xcopyList, st *copyStatus) error {
	lus := make([]*LU, len(l.targets))
	for i, t := range l.targets {
		if lus[i] = c.state.r.findDesignator(t); lus[i] == nil {
			return copyAborted(ASCCopyTargetNotReachable, t.off)
		}
		if t.blockLen != lus[i].bs {
			return copyAborted(ASCCopyTargetNotReachable, t.off)
		}
	}
	// Destinations may be other LUs: each one samples its allocation for
	// its provisioning threshold once the copy ends (threshold.go).
	dsts := make(map[*LU]bool, 1)
	defer func() {
		for d := range dsts {
			d.allocationChanged(c.Nexus)
		}
	}()
	for _, s := range l.segments {
		if int(s.src) >= len(lus) || int(s.dst) >= len(lus) {
			return copyAborted(ASCCopyTargetNotReachable, s.off)
		}
		dsts[lus[s.dst]] = true
		n, err := lu.copySegment(ctx, c, lus[s.src], lus[s.dst], s)
		if err != nil {
			return err
		}
		st.segments++
		st.bytes += n
	}
	return nil
}

// copySegment copies one block-to-block segment and returns the bytes
// copied. The destination range is held exclusively, so the copy is
// atomic with respect to other writes to it.
func (lu *LU) copySegment(ctx context.Context, c *Command, src, dst *LU, s xcopySegment) (uint64, error) {
	unit := src.bs
	if s.dc {
		unit = dst.bs
	}
	total := uint64(s.blocks) * uint64(unit)
	if total%uint64(src.bs) != 0 || total%uint64(dst.bs) != 0 {
		return 0, copyAborted(ASCNoAdditionalSense, s.off)
	}
	sn, dn := total>>src.bsShift, total>>dst.bsShift
	if src.checkRange(s.srcLBA, sn) != nil || dst.checkRange(s.dstLBA, dn) != nil {
		return 0, copyAborted(ASCNoAdditionalSense, s.off)
	}
	if total == 0 {
		return 0, nil
	}
	for _, x := range []*LU{src, dst} {
		if x.ejected.Load() || x.san.active.Load() {
			return 0, copyAborted(ASCCopyTargetNotReachable, s.off)
		}
	}
	if err := dst.writeProtected(c.Nexus); err != nil {
		return 0, err
	}
	lk := dst.lockWrite(s.dstLBA, dn, true)
	defer dst.unlockWrite(lk, true)
	cp := dst.chunkPool.Get().(*[]byte)
	defer dst.chunkPool.Put(cp)
	chunk := uint64(len(*cp))
	srcOff, dstOff := s.srcLBA<<src.bsShift, s.dstLBA<<dst.bsShift
	// Copy backwards when the destination overlaps the source from above.
	backwards := src == dst && dstOff > srcOff && dstOff < srcOff+total
	flags := dst.writeFlags(false)
	for done := uint64(0); done < total; {
		if ctx.Err() != nil {
			return done, ErrCommandAborted
		}
		k := min(chunk, total-done)
		at := done
		if backwards {
			at = total - done - k
		}
		buf := (*cp)[:k]
		if err := src.dev.ReadAt(ctx, buf, int64(srcOff+at)); err != nil {
			return done, src.ioError(c, err, ioRead, (srcOff+at)>>src.bsShift, true)
		}
		if err := dst.dev.WriteAt(ctx, buf, int64(dstOff+at), flags); err != nil {
			return done, dst.ioError(c, err, ioWrite, (dstOff+at)>>dst.bsShift, true)
		}
		done += k
	}
	return total, nil
}

// findDesignator returns the LU of this target that carries the target
// descriptor's designator in its Device Identification VPD page.
func (r *Router) findDesignator(t xcopyTarget) *LU {
	for _, lu := range r.tab.Load().sorted {
		page := lu.deviceIDPage(nil)
		for p := 4; p+4 <= len(page); {
			n := int(page[p+3])
			if p+4+n > len(page) {
				break
			}
			if page[p]&0x0F == t.codeSet && page[p+1]&0x3F == t.assocType && bytes.Equal(page[p+4:p+4+n], t.designator) {
				return lu
			}
			p += 4 + n
		}
	}
	return nil
}

// --- copy results held per I_T nexus and list identifier ---

type copyKey struct {
	nexus NexusKey
	id    uint8
}

type copyStatus struct {
	done     bool
	failed   bool
	segments uint16
	bytes    uint64
}

// copyManager holds the status of EXTENDED COPY commands: the list IDs
// in use, and the outcome of finished ones for RECEIVE COPY RESULTS, at
// most xcopyHeldResults of them (the oldest is dropped first).
type copyManager struct {
	mu     sync.Mutex
	active map[copyKey]bool
	held   map[copyKey]copyStatus
	order  []copyKey
}

// begin marks key in use; false when a copy with that list ID runs.
func (m *copyManager) begin(k copyKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active[k] {
		return false
	}
	if m.active == nil {
		m.active = map[copyKey]bool{}
	}
	m.active[k] = true
	return true
}

// end releases key and, when hold is set, records the outcome.
func (m *copyManager) end(k copyKey, st copyStatus, ok, hold bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.active, k)
	if !hold {
		return
	}
	st.done, st.failed = true, !ok
	if m.held == nil {
		m.held = map[copyKey]copyStatus{}
	}
	if _, dup := m.held[k]; !dup {
		m.order = append(m.order, k)
	}
	m.held[k] = st
	for len(m.order) > xcopyHeldResults {
		delete(m.held, m.order[0])
		m.order = m.order[1:]
	}
}

// status returns the held or running status of key.
func (m *copyManager) status(k copyKey) (copyStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active[k] {
		return copyStatus{}, true
	}
	st, ok := m.held[k]
	return st, ok
}

// forget drops what is held for nexus n (I_T nexus loss).
func (m *copyManager) forget(n NexusKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.order[:0]
	for _, k := range m.order {
		if k.nexus == n {
			delete(m.held, k)
			continue
		}
		kept = append(kept, k)
	}
	m.order = kept
}

// --- RECEIVE COPY RESULTS ---

func planReceiveCopy(_ *LU, c *Command) error {
	q := rcrCDB{SA: c.CDB[1] & saMask, ListID: c.CDB[2], AllocLen: be.Uint32(c.CDB[10:14])}
	c.state.rcr = q
	planDataIn(c, q.AllocLen)
	return nil
}

// Copy manager status codes (SPC-4 table 173).
const (
	copyOK       = 0x00
	copyFailed   = 0x01
	copyRunning  = 0x10 // in progress, foreground
	copyUnitsB   = 0x00 // TRANSFER COUNT UNITS: bytes
	copyUnitsKiB = 0x01 // kibibytes
)

func execReceiveCopy(_ context.Context, lu *LU, c *Command) error {
	q := c.state.rcr
	switch q.SA {
	case rcrOpParams:
		respond(c, copyOperatingParams(lu))
		return nil
	case rcrCopyStatus:
		st, ok := lu.copies.status(copyKey{nexus: nexusKeyOf(c.Nexus), id: q.ListID})
		if !ok {
			return invalidCDB(2, -1) // no copy with this list identifier
		}
		out := make([]byte, 12)
		be.PutUint32(out[0:4], 8)
		switch {
		case !st.done:
			out[4] = copyRunning
		case st.failed:
			out[4] = copyFailed
		default:
			out[4] = copyOK
		}
		be.PutUint16(out[5:7], st.segments)
		if st.bytes <= 0xFFFFFFFF {
			out[7] = copyUnitsB
			be.PutUint32(out[8:12], uint32(st.bytes))
		} else {
			out[7] = copyUnitsKiB
			be.PutUint32(out[8:12], uint32(min(st.bytes>>10, 0xFFFFFFFF)))
		}
		respond(c, out)
		return nil
	}
	return invalidCDB(1, 4)
}

// copyOperatingParams is the OPERATING PARAMETERS parameter data.
func copyOperatingParams(lu *LU) []byte {
	impl := []byte{xcopySegB2B, xcopyTargetIdent}
	out := make([]byte, 44, 44+len(impl))
	out[4] = 0x01 // SNLID: LIST ID USAGE 11b is supported
	be.PutUint16(out[8:10], xcopyMaxTargets)
	be.PutUint16(out[10:12], xcopyMaxSegments)
	be.PutUint32(out[12:16], xcopyMaxDescListLen)
	be.PutUint32(out[16:20], xcopyMaxSegmentLen)
	// MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT and MAXIMUM STREAM
	// DEVICE TRANSFER SIZE are zero: no inline data, no held data, no
	// stream devices.
	// TOTAL and MAXIMUM CONCURRENT COPIES: the copy manager sets no limit
	// of its own (the iSCSI command window bounds them); report the
	// largest values the fields hold.
	be.PutUint16(out[34:36], 0xFFFF)
	out[36] = 0xFF
	out[37] = byte(lu.bsShift) // DATA SEGMENT GRANULARITY (log2 bytes): one block
	out[43] = byte(len(impl))
	out = append(out, impl...)
	be.PutUint32(out[0:4], uint32(len(out)-4))
	return out
}
