package scsi

import (
	"context"
	"math"
)

// maxCtlResponse caps the Data-In of the control commands whose
// allocation length is 32 bits wide, so that a planned transfer never
// exceeds what the command can produce (REPORT LUNS of 16384 LUs is the
// largest: 131080 bytes).
const maxCtlResponse = 256 << 10

// planDataIn sets up a Data-In of at most alloc bytes (SPC-4 §4.2.5.6: an
// allocation length of zero is not an error and transfers nothing).
func planDataIn(c *Command, alloc uint32) {
	if alloc == 0 {
		c.Dir, c.XferLen = DirNone, 0
		return
	}
	c.Dir, c.XferLen = DirIn, min(alloc, maxCtlResponse)
}

// respond copies the parameter data into the Data-In buffer, truncated to
// the allocation length, and records how many bytes the command
// transfers. The transport derives the residual from XferLen.
func respond(c *Command, data []byte) {
	n := min(uint32(len(data)), c.XferLen)
	copy(c.DataIn, data[:n])
	c.XferLen = n
}

// planNoData is the plan of commands without parameters and data that
// complete at once (TEST UNIT READY: SPC-4 §6.47; the dispatcher has
// already reported unit attentions and a missing medium).
func planNoData(*LU, *Command) error { return nil }

// --- REQUEST SENSE (SPC-4 §6.39) ---

func planRequestSense(_ *LU, c *Command) error {
	c.state.rs = decodeRequestSense(c.CDB)
	planDataIn(c, uint32(c.state.rs.AllocLen))
	return nil
}

// execRequestSense returns, as parameter data with GOOD status, the
// oldest pending unit attention (and clears it), else NOT READY when the
// medium is out, else NO SENSE. For a LUN without LU it is LOGICAL UNIT NOT
// SUPPORTED. The DESC bit selects the format.
func execRequestSense(_ context.Context, lu *LU, c *Command) error {
	var s Sense
	switch {
	case lu == nil:
		s = Sense{Key: KeyIllegalRequest, ASC: ASCLUNotSupported}
	default:
		if asc, ok := lu.takeUA(c.Nexus); ok {
			s = uaSense(asc)
		} else if lu.san.active.Load() {
			s = lu.san.inProgress()
		} else if lu.san.failed.Load() {
			s = ErrSanitizeFailed.(Sense)
		} else if lu.ejected.Load() {
			s = Sense{Key: KeyNotReady, ASC: ASCMediumNotPresent}
		}
	}
	var buf [descHeaderLen + infoDescLen + sksDescLen]byte
	n := s.encode(buf[:], c.state.rs.Desc)
	respond(c, buf[:n])
	return nil
}

// --- REPORT LUNS (SPC-4 §6.33) ---

func planReportLUNs(_ *LU, c *Command) error {
	q := decodeReportLUNs(c.CDB)
	c.state.rl = q
	if q.Select > 2 {
		return invalidCDB(2, -1)
	}
	if q.AllocLen < 16 {
		return invalidCDB(6, -1)
	}
	planDataIn(c, q.AllocLen)
	return nil
}

// execReportLUNs lists every LU for SELECT REPORT 00h and 02h; there are
// no well known LUs, so 01h reports an empty list.
func execReportLUNs(_ context.Context, _ *LU, c *Command) error {
	var lus []*LU
	if c.state.rl.Select != 1 {
		lus = c.state.r.tab.Load().sorted
	}
	out := make([]byte, 8+8*len(lus))
	be.PutUint32(out[0:4], uint32(8*len(lus)))
	for i, lu := range lus {
		be.PutUint64(out[8+8*i:], EncodeLUN(lu.id))
	}
	respond(c, out)
	return nil
}

// --- READ CAPACITY (SBC-4 §5.16, §5.17) ---

// checkPMI applies SBC-3's rule for the obsolete PMI and LBA fields: with
// PMI zero the LBA must be zero.
func checkPMI(q readCapCDB) error {
	if !q.PMI && q.LBA != 0 {
		return invalidCDB(2, -1)
	}
	return nil
}

func planReadCapacity10(_ *LU, c *Command) error {
	c.state.rc = decodeReadCapacity(c.CDB)
	if err := checkPMI(c.state.rc); err != nil {
		return err
	}
	planDataIn(c, 8)
	return nil
}

// execReadCapacity10 reports FFFFFFFFh as the last LBA when it does not
// fit, telling the initiator to use READ CAPACITY(16).
func execReadCapacity10(_ context.Context, lu *LU, c *Command) error {
	var out [8]byte
	last := lu.capacity.Load() - 1
	be.PutUint32(out[0:4], uint32(min(last, math.MaxUint32)))
	be.PutUint32(out[4:8], lu.bs)
	respond(c, out[:])
	return nil
}

func planReadCapacity16(_ *LU, c *Command) error {
	c.state.rc = decodeReadCapacity(c.CDB)
	if err := checkPMI(c.state.rc); err != nil {
		return err
	}
	planDataIn(c, c.state.rc.AllocLen)
	return nil
}

// execReadCapacity16 returns the 32-byte parameter data: last LBA, block
// length, RC BASIS 01b, the physical block exponent and the provisioning
// bits LBPME and LBPRZ (SBC-4 table 67). No protection information.
func execReadCapacity16(_ context.Context, lu *LU, c *Command) error {
	var out [32]byte
	be.PutUint64(out[0:8], lu.capacity.Load()-1)
	be.PutUint32(out[8:12], lu.bs)
	out[12] = 0x10 // RC BASIS 01b: RETURNED LOGICAL BLOCK ADDRESS is the last LBA
	out[13] = lu.lbppbExp & 0x0F
	if lu.thin {
		out[14] |= 0x80 // LBPME
		if lu.lbprz {
			out[14] |= 0x40 // LBPRZ
		}
	}
	respond(c, out[:])
	return nil
}

// --- START STOP UNIT (SBC-4 §5.25) ---

func planStartStop(_ *LU, c *Command) error {
	c.state.ssu = decodeStartStop(c.CDB)
	return nil
}

// execStartStop handles the medium of a removable LU. A non-zero POWER
// CONDITION makes START and LOEJ ignored; this virtual device has no power
// states, so it only flushes. LOEJ ejects (START=0) or loads (START=1),
// refused with MEDIUM REMOVAL PREVENTED while any nexus prevents removal.
// Stopping or ejecting flushes the write cache unless NO_FLUSH is set.
func execStartStop(ctx context.Context, lu *LU, c *Command) error {
	q := c.state.ssu
	if q.PowerCond != 0 || !q.LoEj {
		if (q.PowerCond != 0 || !q.Start) && !q.NoFlush {
			return lu.flush(ctx, c)
		}
		return nil
	}
	if !lu.removable {
		return invalidCDB(4, 1)
	}
	lu.mu.Lock()
	if lu.prevented() {
		lu.mu.Unlock()
		return ErrMediumRemovalPrevented
	}
	wasEjected := lu.ejected.Load()
	lu.ejected.Store(!q.Start)
	lu.mu.Unlock()
	if !q.Start {
		if !wasEjected {
			return lu.flush(ctx, c)
		}
		return nil
	}
	if wasEjected {
		lu.establishUA(ASCNotReadyToReadyChange, c.Nexus)
	}
	return nil
}

// flush makes completed writes durable (SYNCHRONIZE CACHE semantics).
func (lu *LU) flush(ctx context.Context, c *Command) error {
	if err := lu.dev.Flush(ctx); err != nil {
		return lu.ioError(c, err, ioFlush, 0, false)
	}
	return nil
}

// --- PREVENT ALLOW MEDIUM REMOVAL (SBC-4 §5.11) ---

func planPreventAllow(_ *LU, c *Command) error {
	c.state.pa = decodePrevent(c.CDB)
	if c.state.pa.Prevent > 1 {
		return invalidCDB(4, 1) // 10b and 11b are obsolete
	}
	return nil
}

// execPreventAllow records the prevention per I_T nexus; the medium may
// be removed only when no nexus prevents it.
func execPreventAllow(_ context.Context, lu *LU, c *Command) error {
	lu.mu.Lock()
	lu.stateFor(c.Nexus, true).prevent = c.state.pa.Prevent == 1
	lu.mu.Unlock()
	return nil
}

// --- READ DEFECT DATA (SBC-4 §5.19, §5.20) ---

func planReadDefectData(_ *LU, c *Command) error {
	q := decodeDefect(c.CDB)
	c.state.rdd = q
	if q.Format == 7 {
		if q.Twelve {
			return invalidCDB(1, 2)
		}
		return invalidCDB(2, 2)
	}
	planDataIn(c, q.AllocLen)
	return nil
}

// execReadDefectData reports empty primary and grown defect lists in the
// requested format: a virtual medium has no defects.
func execReadDefectData(_ context.Context, _ *LU, c *Command) error {
	q := c.state.rdd
	var out [8]byte
	out[1] = q.Format
	if q.PList {
		out[1] |= 0x10 // PLISTV
	}
	if q.GList {
		out[1] |= 0x08 // GLISTV
	}
	if q.Twelve {
		respond(c, out[:8])
	} else {
		respond(c, out[:4])
	}
	return nil
}

// --- REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35) ---

// Command timeouts descriptor (SPC-4 §6.35.4): zero timeouts mean "not
// specified".
const timeoutsDescLen = 12

func planRSOC(_ *LU, c *Command) error {
	q := decodeRSOC(c.CDB)
	c.state.rsoc = q
	if q.Options > 3 {
		return invalidCDB(2, 2)
	}
	planDataIn(c, q.AllocLen)
	return nil
}

func execRSOC(_ context.Context, lu *LU, c *Command) error {
	q := c.state.rsoc
	ops := c.state.r.ops
	if q.Options == 0 {
		respond(c, allCommands(ops, lu, q.RCTD))
		return nil
	}
	e := &ops[q.Opcode]
	var found *opEntry
	switch {
	case e.sas != nil && q.Options == 1:
		return invalidCDB(3, -1) // the opcode has service actions
	case e.sas != nil:
		for i := range e.sas {
			if uint16(e.sas[i].usage[1]&saMask) == q.SA && e.sas[i].supportedOn(lu) {
				found = &e.sas[i]
			}
		}
	case q.Options == 2:
		return invalidCDB(3, -1) // the opcode has no service actions
	case q.Options == 3 && q.SA != 0:
		// no such service action: not supported
	case e.plan != nil && e.supportedOn(lu):
		found = e
	}
	if found == nil {
		respond(c, []byte{0, 0x01, 0, 0}) // SUPPORT 001b: not supported
		return nil
	}
	out := make([]byte, 4, 4+len(found.usage)+timeoutsDescLen)
	out[1] = 0x03 // SUPPORT 011b: supported as the standard says
	if q.RCTD {
		out[1] |= 0x80 // CTDP
	}
	be.PutUint16(out[2:4], uint16(len(found.usage)))
	out = append(out, found.usage...)
	if q.RCTD {
		out = appendTimeouts(out)
	}
	respond(c, out)
	return nil
}

// allCommands builds the all_commands parameter data: one descriptor per
// supported opcode and service action, in opcode order.
func allCommands(ops *[256]opEntry, lu *LU, rctd bool) []byte {
	out := make([]byte, 4, 1024)
	add := func(e *opEntry) {
		var d [8]byte
		d[0] = e.usage[0]
		if e.hasSA() {
			be.PutUint16(d[2:4], uint16(e.usage[1]&saMask))
			d[5] |= 0x01 // SERVACTV
		}
		if rctd {
			d[5] |= 0x02 // CTDP
		}
		be.PutUint16(d[6:8], uint16(len(e.usage)))
		out = append(out, d[:]...)
		if rctd {
			out = appendTimeouts(out)
		}
	}
	for i := range ops {
		e := &ops[i]
		for j := range e.sas {
			if e.sas[j].supportedOn(lu) {
				add(&e.sas[j])
			}
		}
		if e.sas == nil && e.plan != nil && e.supportedOn(lu) {
			add(e)
		}
	}
	be.PutUint32(out[0:4], uint32(len(out)-4))
	return out
}

func appendTimeouts(out []byte) []byte {
	var t [timeoutsDescLen]byte
	be.PutUint16(t[0:2], timeoutsDescLen-2)
	return append(out, t[:]...)
}

// --- REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36) ---

// supportedTMFs is byte 0 of the parameter data: ABORT TASK, ABORT TASK
// SET, LOGICAL UNIT RESET and (I_T nexus / target) reset, which the iSCSI
// transport implements.
const supportedTMFs = 0x80 | 0x40 | 0x08 | 0x02 // ATS, ATSS, LURS, TRS

func planRSTMF(_ *LU, c *Command) error {
	c.state.tmf = decodeRSTMF(c.CDB)
	planDataIn(c, c.state.tmf.AllocLen)
	return nil
}

func execRSTMF(_ context.Context, _ *LU, c *Command) error {
	var out [16]byte
	out[0] = supportedTMFs
	if !c.state.tmf.REPD {
		respond(c, out[:4])
		return nil
	}
	out[3] = 0x0C // ADDITIONAL DATA LENGTH of the extended format
	respond(c, out[:])
	return nil
}
