package scsi

import (
	"encoding/binary"
	"testing"
)

// FuzzPROUT feeds PERSISTENT RESERVE OUT parameter lists (and the
// TransportIDs inside them) to the parser and to a live LU that already
// has registrations and a reservation. Properties: no panic; a parsed
// TransportID encodes and parses back to itself; the command ends with
// GOOD, CHECK CONDITION or RESERVATION CONFLICT; the state stays
// consistent (non-zero keys, no I_T nexus registered twice, the holder
// registered, READ KEYS lengths right).
func FuzzPROUT(f *testing.F) {
	basic := func(key, sakey uint64, flags byte) []byte {
		p := make([]byte, 24)
		binary.BigEndian.PutUint64(p[0:], key)
		binary.BigEndian.PutUint64(p[8:], sakey)
		p[20] = flags
		return p
	}
	tid := encodeTransportID("iqn.2026-01.test:init3", [6]byte{0x80, 0, 0, 0, 0, 3}, false)
	spec := basic(0, 0x5A, 0x08)
	spec = binary.BigEndian.AppendUint32(spec, uint32(len(tid)))
	spec = append(spec, tid...)
	move := basic(0xA, 0xC, 0)
	move[17] = 0x02
	binary.BigEndian.PutUint16(move[18:], 1)
	binary.BigEndian.PutUint32(move[20:], uint32(len(tid)))
	move = append(move, tid...)
	f.Add(SARegister, byte(0), basic(0, 0x5A, 0))
	f.Add(SARegisterIgnore, byte(0), basic(0, 0x5A, 0x04))
	f.Add(SARegister, byte(0), spec)
	f.Add(SARegister, byte(0), append(spec, encodeTransportID("iqn.x", [6]byte{}, true)...))
	f.Add(SAReserve, byte(PRWriteExclusive), basic(0xA, 0, 0))
	f.Add(SARelease, byte(PRWriteExclusive), basic(0xA, 0, 0))
	f.Add(SAClear, byte(0), basic(0xA, 0, 0))
	f.Add(SAPreempt, byte(PRExclusiveAccess), basic(0xA, 0xB, 0))
	f.Add(SAPreemptAndAbort, byte(PRExclusiveAccessAllRegs), basic(0xA, 0, 0))
	f.Add(SARegisterAndMove, byte(PRWriteExclusive), move)
	f.Fuzz(func(t *testing.T, sa, b2 byte, params []byte) {
		if len(params) > maxPROUTParamLen+8 {
			return
		}
		if p, err := parsePROUTParams(sa&saMask, params); err == nil {
			for _, x := range p.TIDs {
				enc := encodeTransportID(x.Name, x.ISID, x.AnyISID)
				y, n, err := parseTransportID(enc, 0)
				if err != nil || n != len(enc) || y.Name != x.Name || y.ISID != x.ISID || y.AnyISID != x.AnyISID {
					t.Fatalf("TransportID %+v: round trip %+v, %d of %d bytes, %v", x, y, n, len(enc), err)
				}
			}
		}
		e := newEnv(t, nil).login()
		good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
		good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
		good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusive, 0xB, 0, 0))
		c := e.prOutRaw(e.nx, sa&saMask|sa&0xE0, b2, params)
		switch c.Status {
		case StatusGood, StatusCheckCondition, StatusReservationConflict:
		default:
			t.Fatalf("status %v", c.Status)
		}
		s := e.lu.prState()
		for i, g := range s.regs {
			if g.Key == 0 {
				t.Fatalf("registration %d with key 0", i)
			}
			for _, o := range s.regs[:i] {
				if g.overlaps(o) {
					t.Fatalf("two registrations for one I_T nexus: %+v %+v", g, o)
				}
			}
		}
		if s.holder != nil && !containsReg(s.regs, s.holder) {
			t.Fatal("reservation holder is not registered")
		}
		if s.resType != prTypeNone && !s.resType.valid() {
			t.Fatalf("reservation type %d", s.resType)
		}
		if s.resType != prTypeNone && !s.resType.allRegistrants() && s.holder == nil {
			t.Fatal("reservation without holder")
		}
		if s.resType == prTypeNone && s.holder != nil {
			t.Fatal("holder without reservation")
		}
		for i := 0; i < uaQueueLen+1; i++ { // report pending unit attentions first
			if e.runOn(e.nx2, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0).Status == StatusGood {
				break
			}
		}
		e.readKeys(e.nx2)
	})
}

func containsReg(regs []*prReg, g *prReg) bool {
	for _, x := range regs {
		if x == g {
			return true
		}
	}
	return false
}
