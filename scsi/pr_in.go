package scsi

import "context"

// PERSISTENT RESERVE IN (SPC-4 §6.16). Every service action reads one
// snapshot of the state, so its parameter data is self-consistent.

// prinSAs are the service actions of PERSISTENT RESERVE IN; any other
// service action is INVALID FIELD IN CDB (lookupOp).
var prinSAs = []opEntry{
	{usage: prinUsage(SAReadKeys), plan: planPRIn, exec: execReadKeys},
	{usage: prinUsage(SAReadReservation), plan: planPRIn, exec: execReadReservation},
	{usage: prinUsage(SAReportCapabilities), plan: planPRIn, exec: execReportCapabilities},
	{usage: prinUsage(SAReadFullStatus), plan: planPRIn, exec: execReadFullStatus},
}

// prinUsage: bytes 7-8 are the ALLOCATION LENGTH; everything else is
// reserved.
func prinUsage(sa uint8) []byte {
	return u(byte(OpPersistentReserveIn), sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0)
}

func planPRIn(_ *LU, c *Command) error {
	planDataIn(c, uint32(be.Uint16(c.CDB[7:9])))
	return nil
}

// execReadKeys returns PRgeneration and every registered key (SPC-4
// §6.16.2). A key registered through several I_T nexuses appears once per
// registration.
func execReadKeys(_ context.Context, lu *LU, c *Command) error {
	s := lu.prState()
	out := make([]byte, 8, 8+8*len(s.regs))
	be.PutUint32(out[0:4], s.gen)
	be.PutUint32(out[4:8], uint32(8*len(s.regs)))
	for _, g := range s.regs {
		out = be.AppendUint64(out, g.Key)
	}
	respond(c, out)
	return nil
}

// execReadReservation returns the persistent reservation, if any (SPC-4
// §6.16.3). The key of an all registrants reservation is zero.
func execReadReservation(_ context.Context, lu *LU, c *Command) error {
	s := lu.prState()
	out := make([]byte, 8, 24)
	be.PutUint32(out[0:4], s.gen)
	if s.resType != prTypeNone {
		be.PutUint32(out[4:8], 16)
		var d [16]byte
		if !s.resType.allRegistrants() && s.holder != nil {
			be.PutUint64(d[0:8], s.holder.Key)
		}
		d[13] = prScopeLU<<4 | byte(s.resType)
		out = append(out, d[:]...)
	}
	respond(c, out)
	return nil
}

// Report capabilities bits (SPC-4 §6.16.4, table 170).
const (
	capSIPC  = 0x08 // SPEC_I_PT capable
	capATPC  = 0x04 // ALL_TG_PT capable
	capPTPLC = 0x01 // persist through power loss capable
	capTMV   = 0x80 // type mask valid
	capPTPLA = 0x01 // persist through power loss activated
	// capAllowCommands 011b: TEST UNIT READY passes Write Exclusive and
	// Exclusive Access reservations, and MODE SENSE, READ DEFECT DATA,
	// RECEIVE COPY RESULTS and the REPORT SUPPORTED commands pass Write
	// Exclusive ones (the classes of prconflict.go).
	capAllowCommands = 0x3 << 4
	// capTypeMask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX (byte 4)
	// and EX_AC_AR (byte 5).
	capTypeMask = 0xEA01
)

func execReportCapabilities(_ context.Context, lu *LU, c *Command) error {
	s := lu.prState()
	var out [8]byte
	be.PutUint16(out[0:2], 8)
	out[2] = capSIPC | capATPC
	if lu.pr.path != "" {
		out[2] |= capPTPLC
	}
	out[3] = capTMV | capAllowCommands
	if s.aptpl {
		out[3] |= capPTPLA
	}
	be.PutUint16(out[4:6], capTypeMask)
	respond(c, out[:])
	return nil
}

// execReadFullStatus returns one descriptor per registration: key, holder
// flag, type, relative target port and the initiator's TransportID (SPC-4
// §6.16.5).
func execReadFullStatus(_ context.Context, lu *LU, c *Command) error {
	s := lu.prState()
	out := make([]byte, 8, 256)
	be.PutUint32(out[0:4], s.gen)
	for _, g := range s.regs {
		var d [24]byte
		be.PutUint64(d[0:8], g.Key)
		if g.AllTgPt {
			d[12] |= 0x02
		}
		if s.regHolds(g) {
			d[12] |= 0x01 // R_HOLDER
			d[13] = prScopeLU<<4 | byte(s.resType)
		}
		if !g.AllTgPt {
			be.PutUint16(d[18:20], g.RelPort)
		}
		tid := encodeTransportID(g.Initiator, g.ISID, g.AnyISID)
		be.PutUint32(d[20:24], uint32(len(tid)))
		out = append(out, d[:]...)
		out = append(out, tid...)
	}
	be.PutUint32(out[4:8], uint32(len(out)-8))
	respond(c, out)
	return nil
}
