package scsi

import (
	"context"
	"math"
)

// Mode page control values of MODE SENSE (SPC-4 §6.13, table 173).
const (
	pcCurrent    = 0
	pcChangeable = 1
	pcDefault    = 2
	pcSaved      = 3
)

// Page codes (SPC-4 §7.5, SBC-4 §6.5).
const (
	pageRWErrorRecovery = 0x01
	pageCaching         = 0x08
	pageControl         = 0x0A
	pageInfoExceptions  = 0x1C
	pageAll             = 0x3F
	subpageAll          = 0xFF
)

// modePage describes one mode page: its code, subpage, PAGE LENGTH (the
// bytes after the 2- or 4-byte header) and whether it holds saveable
// parameters.
type modePage struct {
	code, sub uint8
	length    int
	saveable  bool
	lbp       bool // only on LUs with provisioning thresholds
}

// modePages are the pages of a direct access LU in the order MODE SENSE
// returns them (ascending page code, then subpage: SPC-4 §6.13).
var modePages = []modePage{
	{code: pageRWErrorRecovery, length: 0x0A},
	{code: pageCaching, length: 0x12, saveable: true},
	{code: pageControl, length: 0x0A, saveable: true},
	{code: pageControl, sub: 0x01, length: 0x1C}, // Control Extension
	{code: pageInfoExceptions, length: 0x0A},
	{code: pageLBP, sub: subpageLBP, length: 0x14, saveable: true, lbp: true},
}

func (p modePage) hdrLen() int {
	if p.sub != 0 {
		return 4
	}
	return 2
}

// build returns the page as MODE SENSE reports it for values v, or its
// changeable mask. Byte offsets below are those of the standards' tables.
func (lu *LU) build(p modePage, v modeValues, changeable bool) []byte {
	b := make([]byte, p.hdrLen()+p.length)
	b[0] = p.code
	if p.saveable && lu.statePath != "" {
		b[0] |= 0x80 // PS
	}
	if p.sub != 0 {
		b[0] |= 0x40 // SPF
		b[1] = p.sub
		be.PutUint16(b[2:4], uint16(p.length))
	} else {
		b[1] = byte(p.length)
	}
	switch {
	case p.code == pageRWErrorRecovery: // SBC-4 §6.5.10
		if lu.hasThresholds() && !changeable {
			b[7] = 0x80 // LBPERE: threshold notification is always on
		}
	case p.code == pageLBP && p.sub == subpageLBP: // SBC-4 §6.5.9
		buildLBPPage(b, v, changeable)
	case p.code == pageCaching: // SBC-4 §6.5.5
		if changeable || v.WCE {
			b[2] |= 0x04 // WCE
		}
	case p.code == pageControl && p.sub == 0: // SPC-4 §7.5.7
		if changeable {
			b[2] = 0x04 // D_SENSE
			b[4] = 0x08 // SWP
			break
		}
		b[2] = 0x20 // TST 001b: one task set per I_T nexus
		if v.DSense {
			b[2] |= 0x04
		}
		b[3] = 0x10 // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR 00b
		if v.SWP {
			b[4] |= 0x08
		}
		b[5] = 0x40                   // TAS: other nexuses' aborted tasks end with TASK ABORTED
		be.PutUint16(b[8:10], 0xFFFF) // BUSY TIMEOUT PERIOD: unlimited
	case p.code == pageInfoExceptions: // SPC-4 §7.5.10
		if !changeable {
			b[2] = 0x08 // DEXCPT: no informational exceptions are reported
		}
	}
	return b
}

// parse extracts the changeable values of page image b into v.
func (p modePage) parse(b []byte, v *modeValues) {
	switch {
	case p.code == pageCaching:
		v.WCE = b[2]&0x04 != 0
	case p.code == pageControl && p.sub == 0:
		v.DSense = b[2]&0x04 != 0
		v.SWP = b[4]&0x08 != 0
	case p.code == pageLBP && p.sub == subpageLBP:
		parseLBPPage(b, v)
	}
}

// selectPages returns the pages a MODE SENSE page/subpage pair asks for:
// 3Fh/00h all pages without subpages, 3Fh/FFh all pages and subpages,
// xx/FFh all subpages of page xx (SPC-4 table 174).
func (lu *LU) selectPages(code, sub uint8) []modePage {
	var out []modePage
	for _, p := range modePages {
		if p.lbp && !lu.hasThresholds() {
			continue
		}
		if (code == pageAll || p.code == code) && (sub == subpageAll || p.sub == sub) {
			out = append(out, p)
		}
	}
	return out
}

func planModeSense(lu *LU, c *Command) error {
	q := decodeModeSense(c.CDB)
	c.state.ms = q
	if q.PC == pcSaved && lu.statePath == "" {
		return ErrSavingNotSupported
	}
	if q.Page == pageAll && q.Subpage != 0 && q.Subpage != subpageAll {
		return invalidCDB(3, -1)
	}
	if len(lu.selectPages(q.Page, q.Subpage)) == 0 {
		if len(lu.selectPages(q.Page, subpageAll)) > 0 {
			return invalidCDB(3, -1)
		}
		return invalidCDB(2, 5)
	}
	planDataIn(c, uint32(q.AllocLen))
	return nil
}

// execModeSense returns the mode parameter header, the block descriptor
// unless DBD is set (long LBA format when MODE SENSE(10) has LLBAA) and
// the pages. The device-specific parameter carries WP and DPOFUA (SBC-4
// §6.5.1). Changeable values have an all-zero block descriptor.
func execModeSense(_ context.Context, lu *LU, c *Command) error {
	q := c.state.ms
	var v modeValues
	switch q.PC {
	case pcCurrent:
		v = lu.current()
	case pcDefault:
		v = defaultModeValues
	case pcSaved:
		lu.mu.Lock()
		v = lu.saved
		lu.mu.Unlock()
	}
	hdrLen, bdLen := 4, 0
	long := q.Ten && q.LLBAA && !q.DBD
	if q.Ten {
		hdrLen = 8
	}
	if !q.DBD {
		bdLen = 8
		if long {
			bdLen = 16
		}
	}
	out := make([]byte, hdrLen+bdLen, 160)
	dsp := byte(0x10) // DPOFUA
	if lu.wp(c.Nexus) {
		dsp |= 0x80 // WP
	}
	if q.Ten {
		out[3] = dsp
		if long {
			out[4] = 0x01 // LONGLBA
		}
		be.PutUint16(out[6:8], uint16(bdLen))
	} else {
		out[2] = dsp
		out[3] = byte(bdLen)
	}
	if bdLen > 0 && q.PC != pcChangeable {
		bd := out[hdrLen:]
		capacity := lu.capacity.Load()
		if long {
			be.PutUint64(bd[0:8], capacity)
			be.PutUint32(bd[12:16], lu.bs)
		} else {
			be.PutUint32(bd[0:4], uint32(min(capacity, math.MaxUint32)))
			be.PutUint32(bd[4:8], lu.bs) // byte 4 reserved, LOGICAL BLOCK LENGTH in 5-7
		}
	}
	for _, p := range lu.selectPages(q.Page, q.Subpage) {
		out = append(out, lu.build(p, v, q.PC == pcChangeable)...)
	}
	if q.Ten {
		be.PutUint16(out[0:2], uint16(len(out)-2))
	} else {
		out[0] = byte(len(out) - 1)
	}
	respond(c, out)
	return nil
}

func planModeSelect(lu *LU, c *Command) error {
	q := decodeModeSelect(c.CDB)
	c.state.msel = q
	// A nexus fenced off by the single-writer lease must not change the
	// write cache (or anything else) under the writer's feet.
	if c.Nexus != nil && c.Nexus.ReadOnly() {
		return ErrWriteProtected
	}
	if q.SP && lu.statePath == "" {
		return invalidCDB(1, 0) // saved pages not implemented (SPC-4 §6.11)
	}
	if q.ParamLen == 0 {
		return errPlanDone // no data, not an error (SPC-4 §6.11)
	}
	c.Dir, c.XferLen = DirOut, uint32(q.ParamLen)
	return nil
}

// execModeSelect validates the whole parameter list against the
// changeable masks before changing anything: a field that is not
// changeable must keep its current value (SPC-4 §6.11: INVALID FIELD IN
// PARAMETER LIST), a truncated page is a PARAMETER LIST LENGTH ERROR. New
// values take effect at once; the other I_T nexuses get MODE PARAMETERS
// CHANGED. SP=1 also saves them to the state file.
func execModeSelect(_ context.Context, lu *LU, c *Command) error {
	q := c.state.msel
	data := c.DataOut[:min(len(c.DataOut), int(q.ParamLen))]
	lu.mu.Lock()
	cur := lu.current()
	v, err := lu.parseModeSelect(q, data, cur)
	if err == nil && q.SP {
		if err = saveModeValues(lu.statePath, v); err == nil {
			lu.saved = v
		}
	}
	if err == nil {
		lu.setCurrent(v)
	}
	lu.mu.Unlock()
	if err != nil {
		return err
	}
	if v != cur {
		lu.establishUA(ASCModeParametersChanged, c.Nexus)
	}
	if v.ThreshEnabled && lu.hasThresholds() && (!cur.ThreshEnabled || v.ThreshCount != cur.ThreshCount) {
		lu.sampleThreshold(c.Nexus) // a threshold set below the current usage is reached now
	}
	return nil
}

// parseModeSelect checks a MODE SELECT parameter list and returns the
// resulting current values.
func (lu *LU) parseModeSelect(q modeSelectCDB, data []byte, cur modeValues) (modeValues, error) {
	hdrLen, bdLen, long := 4, 0, false
	if q.Ten {
		hdrLen = 8
	}
	if len(data) < hdrLen {
		return cur, ErrParamListLength
	}
	if q.Ten {
		bdLen = int(be.Uint16(data[6:8]))
		long = data[4]&0x01 != 0
	} else {
		bdLen = int(data[3])
	}
	if hdrLen+bdLen > len(data) {
		return cur, ErrParamListLength
	}
	if err := lu.checkBlockDescriptor(data[hdrLen:hdrLen+bdLen], hdrLen, long); err != nil {
		return cur, err
	}
	pos := hdrLen + bdLen
	if !q.PF && pos < len(data) {
		return cur, invalidCDB(1, 4) // pages need the page format
	}
	v := cur
	for pos < len(data) {
		if len(data)-pos < 2 {
			return cur, ErrParamListLength
		}
		code, sub := data[pos]&0x3F, uint8(0)
		hl, plen := 2, int(data[pos+1])
		if data[pos]&0x40 != 0 {
			if len(data)-pos < 4 {
				return cur, ErrParamListLength
			}
			hl, sub, plen = 4, data[pos+1], int(be.Uint16(data[pos+2:pos+4]))
		}
		if pos+hl+plen > len(data) {
			return cur, ErrParamListLength
		}
		p, ok := lu.findPage(code, sub)
		if !ok {
			return cur, invalidParam(pos, 5)
		}
		if plen != p.length {
			return cur, invalidParam(pos+hl-1, -1)
		}
		img := data[pos : pos+hl+plen]
		now, mask := lu.build(p, cur, false), lu.build(p, cur, true)
		for i := hl; i < len(img); i++ {
			if diff := (img[i] ^ now[i]) &^ mask[i]; diff != 0 {
				bit := 7
				for diff&0x80 == 0 {
					diff <<= 1
					bit--
				}
				return cur, invalidParam(pos+i, bit)
			}
		}
		p.parse(img, &v)
		pos += hl + plen
	}
	return v, nil
}

func (lu *LU) findPage(code, sub uint8) (modePage, bool) {
	for _, p := range modePages {
		if p.code == code && p.sub == sub && (!p.lbp || lu.hasThresholds()) {
			return p, true
		}
	}
	return modePage{}, false
}

// checkBlockDescriptor accepts no descriptor or one that restates the
// block length (changing it is not supported) with NUMBER OF LOGICAL
// BLOCKS either zero or the current capacity (SBC-4 §6.5.2).
func (lu *LU) checkBlockDescriptor(bd []byte, off int, long bool) error {
	switch {
	case len(bd) == 0:
		return nil
	case long && len(bd) == 16:
		if n := be.Uint64(bd[0:8]); n != 0 && n != lu.capacity.Load() {
			return invalidParam(off, -1)
		}
		if be.Uint32(bd[12:16]) != lu.bs {
			return invalidParam(off+12, -1)
		}
	case !long && len(bd) == 8:
		if n := be.Uint32(bd[0:4]); n != 0 && uint64(n) != min(lu.capacity.Load(), math.MaxUint32) {
			return invalidParam(off, -1)
		}
		if be.Uint32(bd[4:8])&0xFFFFFF != lu.bs {
			return invalidParam(off+5, -1)
		}
	default:
		if long {
			return invalidParam(6, -1)
		}
		return invalidParam(3, -1)
	}
	return nil
}
