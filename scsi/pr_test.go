package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// --- helpers ---

// prOut sends PERSISTENT RESERVE OUT with the basic parameter list.
func (e *env) prOut(n *Nexus, sa uint8, typ PRType, key, sakey uint64, flags byte) *Command {
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], sakey)
	p[20] = flags
	return e.prOutRaw(n, sa, byte(typ), p)
}

func (e *env) prOutRaw(n *Nexus, sa uint8, b2 byte, params []byte) *Command {
	cdb := []byte{byte(OpPersistentReserveOut), sa, b2, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(cdb[5:9], uint32(len(params)))
	return e.runOn(n, 0, cdb, params, 0)
}

func (e *env) prIn(n *Nexus, sa uint8, alloc uint16) *Command {
	cdb := []byte{byte(OpPersistentReserveIn), sa, 0, 0, 0, 0, 0, byte(alloc >> 8), byte(alloc), 0}
	return e.runOn(n, 0, cdb, nil, int(alloc))
}

func (e *env) readKeys(n *Nexus) (uint32, []uint64) {
	e.t.Helper()
	c := e.prIn(n, SAReadKeys, 4096)
	good(e.t, c)
	d := dataIn(c)
	gen := binary.BigEndian.Uint32(d[0:4])
	if l := binary.BigEndian.Uint32(d[4:8]); int(l) != len(d)-8 {
		e.t.Fatalf("READ KEYS additional length %d, %d bytes follow", l, len(d)-8)
	}
	var keys []uint64
	for p := 8; p+8 <= len(d); p += 8 {
		keys = append(keys, binary.BigEndian.Uint64(d[p:]))
	}
	return gen, keys
}

// readRes returns the reservation key and type, type 0 without one.
func (e *env) readRes(n *Nexus) (uint64, PRType) {
	e.t.Helper()
	c := e.prIn(n, SAReadReservation, 4096)
	good(e.t, c)
	d := dataIn(c)
	switch binary.BigEndian.Uint32(d[4:8]) {
	case 0:
		if len(d) != 8 {
			e.t.Fatalf("READ RESERVATION without reservation: %d bytes", len(d))
		}
		return 0, 0
	case 16:
		if len(d) != 24 || d[21]>>4 != 0 {
			e.t.Fatalf("READ RESERVATION: % x", d)
		}
		return binary.BigEndian.Uint64(d[8:16]), PRType(d[21] & 0x0F)
	}
	e.t.Fatalf("READ RESERVATION additional length %d", binary.BigEndian.Uint32(d[4:8]))
	return 0, 0
}

// nexus3 is a third initiator on the same target port.
func (e *env) nexus3() *Nexus {
	n := &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:init3", ISID: [6]byte{0x80, 0, 0, 0, 0, 3},
		TargetName: "iqn.2026-01.test:tgt", TPGT: 1}, RelativeTargetPortID: 1}
	e.r.NexusAdded(n)
	e.runOn(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	return n
}

func conflict(t testing.TB, c *Command) {
	t.Helper()
	check(t, c, StatusReservationConflict, 0, 0)
}

func illegal(t testing.TB, c *Command, asc ASC) {
	t.Helper()
	check(t, c, StatusCheckCondition, KeyIllegalRequest, asc)
}

func ua(t testing.TB, e *env, n *Nexus, asc ASC) {
	t.Helper()
	check(t, e.runOn(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), StatusCheckCondition, KeyUnitAttention, asc)
}

func noUA(t testing.TB, e *env, n *Nexus) {
	t.Helper()
	good(t, e.runOn(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
}

var allTypes = []PRType{PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegsOnly,
	PRExclusiveAccessRegsOnly, PRWriteExclusiveAllRegs, PRExclusiveAccessAllRegs}

// --- REGISTER ---

func TestPRRegister(t *testing.T) {
	e := newEnv(t, nil).login()
	// Unregistered nexus with a non-zero RESERVATION KEY: conflict.
	conflict(t, e.prOut(e.nx, SARegister, 0, 5, 7, 0))
	// Unregistered, SARK zero: GOOD, no registration, but the request
	// counts in PRgeneration (SPC-4 §6.16.2).
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0, 0))
	if gen, keys := e.readKeys(e.nx); gen != 1 || len(keys) != 0 {
		t.Fatalf("after no-op register: gen %d keys %x, want 1 []", gen, keys)
	}
	e.lu.pr.cur.Store(&prState{}) // start the count again for the checks below
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA1, 0))
	good(t, e.prOut(e.nx2, SARegisterIgnore, 0, 0xFFFF, 0xB2, 0)) // RK ignored
	if gen, keys := e.readKeys(e.nx); gen != 2 || !slices.Equal(keys, []uint64{0xA1, 0xB2}) {
		t.Fatalf("gen %d keys %x, want 2 [a1 b2]", gen, keys)
	}
	// Registered: wrong RK conflicts and changes nothing.
	conflict(t, e.prOut(e.nx, SARegister, 0, 0xA2, 0xA3, 0))
	// Correct RK changes the key in place.
	good(t, e.prOut(e.nx, SARegister, 0, 0xA1, 0xA3, 0))
	if gen, keys := e.readKeys(e.nx); gen != 3 || !slices.Equal(keys, []uint64{0xA3, 0xB2}) {
		t.Fatalf("gen %d keys %x, want 3 [a3 b2]", gen, keys)
	}
	// SPEC_I_PT from a registered nexus.
	spec := make([]byte, 28) // SPEC_I_PT with no TransportID
	binary.BigEndian.PutUint64(spec[0:], 0xA3)
	binary.BigEndian.PutUint64(spec[8:], 0xA4)
	spec[20] = 0x08
	illegal(t, e.prOutRaw(e.nx, SARegister, 0, spec), ASCInvalidFieldInParamList)
	// Unregister.
	good(t, e.prOut(e.nx, SARegister, 0, 0xA3, 0, 0))
	if gen, keys := e.readKeys(e.nx); gen != 4 || !slices.Equal(keys, []uint64{0xB2}) {
		t.Fatalf("gen %d keys %x, want 4 [b2]", gen, keys)
	}
	// The generation does not move on errors.
	conflict(t, e.prOut(e.nx2, SARegister, 0, 1, 2, 0))
	if gen, _ := e.readKeys(e.nx); gen != 4 {
		t.Fatalf("gen %d after a conflict, want 4", gen)
	}
}

func TestPROutParameterErrors(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 1, 0))
	cases := []struct {
		name string
		sa   uint8
		b2   byte
		p    []byte
		asc  ASC
	}{
		{"short list", SARegister, 0, make([]byte, 23), ASCParamListLengthError},
		{"long list", SARegister, 0, make([]byte, 25), ASCParamListLengthError},
		{"scope", SAReserve, 0x11, make([]byte, 24), ASCInvalidFieldInCDB},
		{"type 2", SAReserve, 0x02, make([]byte, 24), ASCInvalidFieldInCDB},
		{"type 0 preempt", SAPreempt, 0x00, make([]byte, 24), ASCInvalidFieldInCDB},
		{"spec_i_pt reserve", SAReserve, 0x01, append(make([]byte, 20), 0x08, 0, 0, 0), ASCInvalidFieldInParamList},
		{"reserved bit", SARegister, 0, append(make([]byte, 20), 0x02, 0, 0, 0), ASCInvalidFieldInParamList},
		{"obsolete address", SARegister, 0, append(make([]byte, 16), 1, 0, 0, 0, 0, 0, 0, 0), ASCInvalidFieldInParamList},
		{"aptpl unsupported", SARegister, 0, append(make([]byte, 20), 0x01, 0, 0, 0), ASCInvalidFieldInParamList},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			illegal(t, e.prOutRaw(e.nx, tc.sa, tc.b2, tc.p), tc.asc)
		})
	}
	// Service actions 8-1Fh do not exist.
	for sa := uint8(8); sa < 0x20; sa++ {
		illegal(t, e.prOutRaw(e.nx, sa, 0, make([]byte, 24)), ASCInvalidFieldInCDB)
	}
	for sa := uint8(4); sa < 0x20; sa++ {
		illegal(t, e.prIn(e.nx, sa, 100), ASCInvalidFieldInCDB)
	}
}

// --- RESERVE, RELEASE and the access table ---

func TestPRReserveRelease(t *testing.T) {
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			e := newEnv(t, nil).login()
			conflict(t, e.prOut(e.nx, SAReserve, typ, 0, 0, 0)) // unregistered
			good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
			good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
			conflict(t, e.prOut(e.nx, SAReserve, typ, 0xB, 0, 0)) // wrong key
			good(t, e.prOut(e.nx, SAReserve, typ, 0xA, 0, 0))
			good(t, e.prOut(e.nx, SAReserve, typ, 0xA, 0, 0)) // again, same type
			other := PRWriteExclusive
			if typ == other {
				other = PRExclusiveAccess
			}
			conflict(t, e.prOut(e.nx, SAReserve, other, 0xA, 0, 0))
			key, got := e.readRes(e.nx)
			wantKey := uint64(0xA)
			if typ.allRegistrants() {
				wantKey = 0
			}
			if got != typ || key != wantKey {
				t.Fatalf("READ RESERVATION key %#x type %v, want %#x %v", key, got, wantKey, typ)
			}
			gen, _ := e.readKeys(e.nx)
			if typ.allRegistrants() {
				// Every registrant holds it: nx2 may RESERVE the same
				// type (a no-op) and RELEASE it.
				good(t, e.prOut(e.nx2, SAReserve, typ, 0xB, 0, 0))
			} else {
				conflict(t, e.prOut(e.nx2, SAReserve, typ, 0xB, 0, 0))
				good(t, e.prOut(e.nx2, SARelease, typ, 0xB, 0, 0)) // non-holder: no action
				if _, got := e.readRes(e.nx); got != typ {
					t.Fatalf("a non-holder's RELEASE released the reservation")
				}
			}
			illegal(t, e.prOut(e.nx, SARelease, other, 0xA, 0, 0), ASCInvalidReleaseOfPR)
			conflict(t, e.prOut(e.nx, SARelease, typ, 0xB, 0, 0))
			good(t, e.prOut(e.nx, SARelease, typ, 0xA, 0, 0))
			if _, got := e.readRes(e.nx); got != 0 {
				t.Fatalf("still reserved (%v) after RELEASE", got)
			}
			if g, _ := e.readKeys(e.nx); g != gen {
				t.Fatalf("RESERVE/RELEASE moved PRgeneration %d -> %d", gen, g)
			}
			// RESERVATIONS RELEASED goes to the other registrants of
			// registrants only and all registrants types only.
			if typ.registrantsOnly() {
				ua(t, e, e.nx2, ASCReservationsReleased)
			}
			noUA(t, e, e.nx2)
			noUA(t, e, e.nx)
			good(t, e.prOut(e.nx, SARelease, typ, 0xA, 0, 0)) // nothing to release
		})
	}
}

// TestPRAccess checks READ and WRITE from the holder, a registered and an
// unregistered nexus for every type (SPC-4 table 66; the expectations of
// libiscsi's ProutReserve.Access* tests).
func TestPRAccess(t *testing.T) {
	type access struct{ regRead, regWrite, unregRead, unregWrite bool }
	want := map[PRType]access{
		PRExclusiveAccess:         {false, false, false, false},
		PRWriteExclusive:          {true, false, true, false},
		PRExclusiveAccessRegsOnly: {true, true, false, false},
		PRWriteExclusiveRegsOnly:  {true, true, true, false},
		PRExclusiveAccessAllRegs:  {true, true, false, false},
		PRWriteExclusiveAllRegs:   {true, true, true, false},
	}
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			e := newEnv(t, nil).login()
			nx3 := e.nexus3()
			good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
			good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
			good(t, e.prOut(e.nx, SAReserve, typ, 0xA, 0, 0))
			w := want[typ]
			expect := func(n *Nexus, cdb []byte, out []byte, in int, ok bool) {
				t.Helper()
				c := e.runOn(n, 0, cdb, out, in)
				if ok {
					good(t, c)
				} else {
					conflict(t, c)
				}
			}
			block := make([]byte, 512)
			for _, n := range []*Nexus{e.nx, e.nx2, nx3} {
				reg, rd, wr := n != nx3, true, true
				switch n {
				case e.nx2:
					rd, wr = w.regRead, w.regWrite
				case nx3:
					rd, wr = w.unregRead, w.unregWrite
				}
				_ = reg
				expect(n, cdb10(OpRead10, 0, 1, 1), nil, 512, rd)
				expect(n, cdb10(OpWrite10, 0, 1, 1), block, 0, wr)
				expect(n, cdb16(OpWrite16, 0, 1, 1), block, 0, wr)
				expect(n, cdb10(OpWriteSame10, 0, 1, 1), block, 0, wr)
				expect(n, cdb10(OpSyncCache10, 0, 0, 0), nil, 0, wr)
				expect(n, cdb10(OpVerify10, 0, 1, 1), nil, 0, rd)
				expect(n, modeSense6(false, 0, 0x3F, 0, 255), nil, 255, rd)
				// Allowed whatever the reservation.
				expect(n, []byte{0, 0, 0, 0, 0, 0}, nil, 0, true)
				expect(n, inquiryCDBBytes(false, 0, 96), nil, 96, true)
				expect(n, cdb10(OpReadCapacity10, 0, 0, 0), nil, 8, true)
				expect(n, readCap16CDB(32), nil, 32, true)
				expect(n, []byte{byte(OpPersistentReserveIn), 0, 0, 0, 0, 0, 0, 0, 100, 0}, nil, 100, true)
			}
			// The holder's registered peer may RELEASE (no action) only
			// when registered; the unregistered one conflicts.
			conflict(t, e.prOut(nx3, SARelease, typ, 0xC, 0, 0))
			if e.lu.ReservationConflicts() == 0 {
				t.Fatal("conflict counter did not move")
			}
		})
	}
}

// TestPROwnership: the holder unregistering releases a reservation that is
// not all registrants; an all registrants one stays with the others.
func TestPROwnership(t *testing.T) {
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			e := newEnv(t, nil).login()
			good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
			good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
			good(t, e.prOut(e.nx, SAReserve, typ, 0xA, 0, 0))
			good(t, e.prOut(e.nx, SARegister, 0, 0xA, 0, 0))
			_, got := e.readRes(e.nx)
			switch {
			case typ.allRegistrants():
				if got != typ {
					t.Fatalf("all registrants reservation gone (%v) with one registrant left", got)
				}
				good(t, e.prOut(e.nx2, SARelease, typ, 0xB, 0, 0))
			case got != 0:
				t.Fatalf("reservation %v survives its holder's unregistration", got)
			}
			if typ == PRWriteExclusiveRegsOnly || typ == PRExclusiveAccessRegsOnly {
				ua(t, e, e.nx2, ASCReservationsReleased)
			}
			noUA(t, e, e.nx2)
		})
	}
}

// --- CLEAR, PREEMPT, PREEMPT AND ABORT ---

func TestPRClear(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(e.nx, SAReserve, PRExclusiveAccess, 0xA, 0, 0))
	nx3 := e.nexus3()
	conflict(t, e.prOut(nx3, SAClear, 0, 0, 0, 0))     // unregistered
	conflict(t, e.prOut(e.nx2, SAClear, 0, 0xA, 0, 0)) // wrong key
	good(t, e.prOut(e.nx2, SAClear, 0, 0xB, 0, 0))     // a registered non-holder may clear
	if gen, keys := e.readKeys(e.nx2); gen != 3 || len(keys) != 0 {
		t.Fatalf("after CLEAR gen %d keys %x, want 3 []", gen, keys)
	}
	if _, typ := e.readRes(e.nx2); typ != 0 {
		t.Fatalf("reservation %v after CLEAR", typ)
	}
	ua(t, e, e.nx, ASCReservationsPreempted)
	noUA(t, e, e.nx2) // the sender gets none
	noUA(t, e, nx3)   // nor an unregistered nexus
}

func TestPRPreemptRegistrations(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	// No reservation: SARK zero is invalid, an unknown key conflicts.
	illegal(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xB, 0, 0), ASCInvalidFieldInParamList)
	conflict(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xB, 0xC, 0))
	conflict(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xC, 0xA, 0)) // wrong RK
	good(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xB, 0xA, 0))
	if gen, keys := e.readKeys(e.nx2); gen != 3 || !slices.Equal(keys, []uint64{0xB}) {
		t.Fatalf("gen %d keys %x, want 3 [b]", gen, keys)
	}
	if _, typ := e.readRes(e.nx2); typ != 0 {
		t.Fatalf("PREEMPT without reservation created one (%v)", typ)
	}
	ua(t, e, e.nx, ASCRegistrationsPreempted)
	noUA(t, e, e.nx2)
	// The preempted nexus is no longer registered.
	conflict(t, e.prOut(e.nx, SARegister, 0, 0xA, 0xA, 0))
}

func TestPRPreemptReservation(t *testing.T) {
	e := newEnv(t, nil).login()
	nx3 := e.nexus3()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(nx3, SARegister, 0, 0, 0xC, 0))
	good(t, e.prOut(e.nx, SAReserve, PRWriteExclusive, 0xA, 0, 0))
	// nx2 preempts the holder with another type: nx loses its registration
	// and reservation, nx3 keeps its registration and learns the type
	// changed.
	good(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccessRegsOnly, 0xB, 0xA, 0))
	if key, typ := e.readRes(e.nx2); key != 0xB || typ != PRExclusiveAccessRegsOnly {
		t.Fatalf("reservation %#x %v, want b EXCLUSIVE ACCESS - REGISTRANTS ONLY", key, typ)
	}
	if _, keys := e.readKeys(e.nx2); !slices.Equal(keys, []uint64{0xB, 0xC}) {
		t.Fatalf("keys %x, want [b c]", keys)
	}
	ua(t, e, e.nx, ASCRegistrationsPreempted)
	ua(t, e, nx3, ASCReservationsReleased)
	noUA(t, e, e.nx2)
	// A key that is not the holder's removes registrations only.
	good(t, e.prOut(e.nx2, SAPreempt, PRWriteExclusive, 0xB, 0xC, 0))
	if key, typ := e.readRes(e.nx2); key != 0xB || typ != PRExclusiveAccessRegsOnly {
		t.Fatalf("reservation changed to %#x %v by preempting a non-holder", key, typ)
	}
	ua(t, e, nx3, ASCRegistrationsPreempted)
	// The holder may preempt itself to change the type.
	good(t, e.prOut(e.nx2, SAPreempt, PRWriteExclusive, 0xB, 0xB, 0))
	if key, typ := e.readRes(e.nx2); key != 0xB || typ != PRWriteExclusive {
		t.Fatalf("self-preempt: %#x %v", key, typ)
	}
	if gen, _ := e.readKeys(e.nx); gen != 6 {
		t.Fatalf("gen %d, want 6", gen)
	}
}

func TestPRPreemptAllRegistrants(t *testing.T) {
	e := newEnv(t, nil).login()
	nx3 := e.nexus3()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(nx3, SARegister, 0, 0, 0xC, 0))
	good(t, e.prOut(e.nx, SAReserve, PRExclusiveAccessAllRegs, 0xA, 0, 0))
	// A non-zero key removes that registration; the reservation stays.
	good(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xB, 0xC, 0))
	if _, typ := e.readRes(e.nx2); typ != PRExclusiveAccessAllRegs {
		t.Fatalf("type %v", typ)
	}
	// Zero: everyone else goes and nx2 holds the new type alone.
	good(t, e.prOut(e.nx2, SAPreempt, PRExclusiveAccess, 0xB, 0, 0))
	if key, typ := e.readRes(e.nx2); key != 0xB || typ != PRExclusiveAccess {
		t.Fatalf("reservation %#x %v, want b EXCLUSIVE ACCESS", key, typ)
	}
	if _, keys := e.readKeys(e.nx2); !slices.Equal(keys, []uint64{0xB}) {
		t.Fatalf("keys %x", keys)
	}
	ua(t, e, e.nx, ASCRegistrationsPreempted)
	ua(t, e, nx3, ASCRegistrationsPreempted)
}

func TestPRPreemptAndAbort(t *testing.T) {
	e := newEnv(t, nil).login()
	nx3 := e.nexus3()
	var mu sync.Mutex
	var calls [][]NexusKey
	e.r.SetTaskAborter(func(_ context.Context, lun uint16, keys []NexusKey) {
		mu.Lock()
		defer mu.Unlock()
		if lun != 0 {
			t.Errorf("abort on LUN %d", lun)
		}
		calls = append(calls, keys)
	})
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(nx3, SARegister, 0, 0, 0xB, 0)) // same key as nx2
	good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusive, 0xB, 0, 0))
	good(t, e.prOut(e.nx, SAPreemptAndAbort, PRExclusiveAccess, 0xA, 0xB, 0))
	mu.Lock()
	got := calls
	mu.Unlock()
	if len(got) != 1 || len(got[0]) != 2 {
		t.Fatalf("aborter calls %v, want one with nx2 and nx3", got)
	}
	slices.SortFunc(got[0], func(a, b NexusKey) int { return bytes.Compare(a.ISID[:], b.ISID[:]) })
	if got[0][0] != e.nx2.Key || got[0][1] != nx3.Key {
		t.Fatalf("aborted %v", got[0])
	}
	if key, typ := e.readRes(e.nx); key != 0xA || typ != PRExclusiveAccess {
		t.Fatalf("reservation %#x %v", key, typ)
	}
	// The victims learn it, then their commands conflict.
	ua(t, e, e.nx2, ASCRegistrationsPreempted)
	conflict(t, e.runOn(e.nx2, 0, cdb10(OpRead10, 0, 0, 1), nil, 512))
	// No victim, no call.
	good(t, e.prOut(e.nx, SAPreemptAndAbort, PRExclusiveAccess, 0xA, 0xA, 0))
	mu.Lock()
	n := len(calls)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("aborter called %d times, want 1", n)
	}
}

// TestPRExecuteRechecks: a command planned before a PREEMPT that makes it
// conflict ends with RESERVATION CONFLICT instead of writing.
func TestPRExecuteRechecks(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusive, 0xB, 0, 0))
	c := &Command{Nexus: e.nx2, LUN: EncodeLUN(0), CDB: cdb10(OpWrite10, 0, 3, 1), ExpectedLength: 512}
	e.r.Plan(c)
	if c.Done() {
		t.Fatalf("write planned with status %v", c.Status)
	}
	good(t, e.prOut(e.nx, SAPreempt, PRWriteExclusive, 0xA, 0xB, 0))
	c.DataOut = fill(512, 0x77)
	e.r.Execute(context.Background(), c)
	conflict(t, c)
	rd := e.run(cdb10(OpRead10, 0, 3, 1), nil, 512)
	good(t, rd)
	if bytes.Contains(dataIn(rd), []byte{0x77}) {
		t.Fatal("the preempted write reached the medium")
	}
}

// --- REGISTER AND MOVE, SPEC_I_PT, ALL_TG_PT, READ FULL STATUS ---

func tidPort(name string, isid [6]byte) []byte {
	return encodeTransportID(name, isid, false)
}

func TestPRRegisterAndMove(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx, SAReserve, PRWriteExclusive, 0xA, 0, 0))
	move := func(n *Nexus, typ PRType, key, sakey uint64, unreg bool, rel uint16, tid []byte) *Command {
		p := make([]byte, 24, 24+len(tid))
		binary.BigEndian.PutUint64(p[0:], key)
		binary.BigEndian.PutUint64(p[8:], sakey)
		if unreg {
			p[17] = 0x02
		}
		binary.BigEndian.PutUint16(p[18:], rel)
		binary.BigEndian.PutUint32(p[20:], uint32(len(tid)))
		return e.prOutRaw(n, SARegisterAndMove, byte(typ), append(p, tid...))
	}
	dest := tidPort(e.nx2.Key.InitiatorName, e.nx2.Key.ISID)
	conflict(t, move(e.nx2, PRWriteExclusive, 0, 0xB, false, 1, dest)) // unregistered sender
	illegal(t, move(e.nx, PRWriteExclusive, 0xA, 0, false, 1, dest), ASCInvalidFieldInParamList)
	illegal(t, move(e.nx, PRWriteExclusive, 0xA, 0xB, false, 9, dest), ASCInvalidFieldInParamList)
	illegal(t, move(e.nx, PRWriteExclusive, 0xA, 0xB, false, 1, tidPort(e.nx.Key.InitiatorName, e.nx.Key.ISID)), ASCInvalidFieldInParamList)
	good(t, move(e.nx, PRExclusiveAccess, 0xA, 0xB, true, 1, dest))
	if key, typ := e.readRes(e.nx2); key != 0xB || typ != PRExclusiveAccess {
		t.Fatalf("after move: %#x %v", key, typ)
	}
	if gen, keys := e.readKeys(e.nx2); gen != 2 || !slices.Equal(keys, []uint64{0xB}) {
		t.Fatalf("after move gen %d keys %x, want 2 [b]", gen, keys)
	}
	// nx2 holds it now.
	good(t, e.runOn(e.nx2, 0, cdb10(OpWrite10, 0, 1, 1), fill(512, 1), 0))
	conflict(t, e.run(cdb10(OpRead10, 0, 1, 1), nil, 512))
	// All registrants reservations cannot move.
	good(t, e.prOut(e.nx2, SARelease, PRExclusiveAccess, 0xB, 0, 0))
	good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusiveAllRegs, 0xB, 0, 0))
	conflict(t, move(e.nx2, PRWriteExclusive, 0xB, 0xA, false, 1, tidPort(e.nx.Key.InitiatorName, e.nx.Key.ISID)))
}

func TestPRSpecIPT(t *testing.T) {
	e := newEnv(t, nil).login()
	nx3 := e.nexus3()
	tids := append(tidPort(e.nx2.Key.InitiatorName, e.nx2.Key.ISID),
		encodeTransportID(nx3.Key.InitiatorName, [6]byte{}, true)...)
	p := make([]byte, 28, 28+len(tids))
	binary.BigEndian.PutUint64(p[8:], 0x5A)
	p[20] = 0x08
	binary.BigEndian.PutUint32(p[24:], uint32(len(tids)))
	p = append(p, tids...)
	// A bad TRANSPORTID PARAMETER DATA LENGTH.
	bad := slices.Clone(p)
	binary.BigEndian.PutUint32(bad[24:], uint32(len(tids)+4))
	illegal(t, e.prOutRaw(e.nx, SARegister, 0, bad), ASCParamListLengthError)
	// SPEC_I_PT with REGISTER AND IGNORE EXISTING KEY.
	illegal(t, e.prOutRaw(e.nx, SARegisterIgnore, 0, p), ASCInvalidFieldInParamList)
	good(t, e.prOutRaw(e.nx, SARegister, 0, p))
	if gen, keys := e.readKeys(e.nx); gen != 1 || !slices.Equal(keys, []uint64{0x5A, 0x5A, 0x5A}) {
		t.Fatalf("gen %d keys %x, want 1 and three 5a", gen, keys)
	}
	// nx2 and nx3 (by name, any ISID) are registered: they may reserve.
	good(t, e.prOut(nx3, SAReserve, PRWriteExclusive, 0x5A, 0, 0))
	good(t, e.prOut(nx3, SARelease, PRWriteExclusive, 0x5A, 0, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0x5A, 0, 0))
	// Naming an already registered nexus fails as a whole.
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0, 0))
	illegal(t, e.prOutRaw(e.nx2, SARegister, 0, func() []byte {
		q := make([]byte, 28)
		binary.BigEndian.PutUint64(q[8:], 0x77)
		q[20] = 0x08
		tid := tidPort(e.nx.Key.InitiatorName, e.nx.Key.ISID)
		binary.BigEndian.PutUint32(q[24:], uint32(len(tid)))
		return append(q, tid...)
	}()), ASCInvalidFieldInParamList)
	if _, keys := e.readKeys(e.nx); len(keys) != 2 {
		t.Fatalf("keys %x after a failed SPEC_I_PT, want two", keys)
	}
}

func TestPRAllTgPtAndFullStatus(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0x04)) // ALL_TG_PT
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusive, 0xB, 0, 0))
	// The same initiator port through another target port is registered.
	other := &Nexus{Key: e.nx.Key, RelativeTargetPortID: 2}
	other.Key.TPGT = 2
	e.r.NexusAdded(other)
	e.runOn(other, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	good(t, e.prOut(other, SARegister, 0, 0xA, 0xAA, 0))

	c := e.prIn(e.nx, SAReadFullStatus, 4096)
	good(t, c)
	d := dataIn(c)
	if gen := binary.BigEndian.Uint32(d[0:4]); gen != 3 {
		t.Fatalf("gen %d", gen)
	}
	if n := binary.BigEndian.Uint32(d[4:8]); int(n) != len(d)-8 {
		t.Fatalf("additional length %d for %d bytes", n, len(d)-8)
	}
	type desc struct {
		key           uint64
		allTgPt, hold bool
		typ           byte
		rel           uint16
		tid           []byte
	}
	var got []desc
	for p := 8; p < len(d); {
		n := int(binary.BigEndian.Uint32(d[p+20 : p+24]))
		got = append(got, desc{binary.BigEndian.Uint64(d[p:]), d[p+12]&2 != 0, d[p+12]&1 != 0, d[p+13],
			binary.BigEndian.Uint16(d[p+18:]), d[p+24 : p+24+n]})
		p += 24 + n
	}
	want := []desc{
		{0xAA, true, false, 0, 0, tidPort(e.nx.Key.InitiatorName, e.nx.Key.ISID)},
		{0xB, false, true, byte(PRWriteExclusive), 1, tidPort(e.nx2.Key.InitiatorName, e.nx2.Key.ISID)},
	}
	if len(got) != len(want) {
		t.Fatalf("%d descriptors, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.key != w.key || g.allTgPt != w.allTgPt || g.hold != w.hold || g.typ != w.typ || g.rel != w.rel || !bytes.Equal(g.tid, w.tid) {
			t.Errorf("descriptor %d: %+v, want %+v", i, g, w)
		}
	}
	// A TransportID of format 01b, iSCSI, NUL-padded to a multiple of 4.
	tid := want[1].tid
	if tid[0] != 0x45 || len(tid)%4 != 0 || !bytes.HasPrefix(tid[4:], []byte("iqn.2026-01.test:init2,i,0x800000000002\x00")) {
		t.Fatalf("TransportID % x", tid)
	}
}

func TestPRReportCapabilities(t *testing.T) {
	e := newEnv(t, nil).login()
	c := e.prIn(e.nx, SAReportCapabilities, 8)
	good(t, c)
	if got, want := dataIn(c), []byte{0, 8, 0x0C, 0xB0, 0xEA, 0x01, 0, 0}; !bytes.Equal(got, want) {
		t.Fatalf("REPORT CAPABILITIES % x, want % x", got, want)
	}
	dir := t.TempDir()
	e = newEnv(t, func(c *LUConfig) { c.PRStatePath = filepath.Join(dir, "pr.json") }).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 1, 0x01))
	c = e.prIn(e.nx, SAReportCapabilities, 8)
	if got, want := dataIn(c), []byte{0, 8, 0x0D, 0xB1, 0xEA, 0x01, 0, 0}; !bytes.Equal(got, want) {
		t.Fatalf("REPORT CAPABILITIES with APTPL % x, want % x", got, want)
	}
	// Truncation to the allocation length.
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 2, 0x01))
	c = e.prIn(e.nx, SAReadKeys, 12)
	good(t, c)
	if d := dataIn(c); len(d) != 12 || binary.BigEndian.Uint32(d[4:8]) != 16 {
		t.Fatalf("truncated READ KEYS % x", d)
	}
}

func TestPRSurvivesNexusLossAndReset(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx, SAReserve, PRExclusiveAccess, 0xA, 0, 0))
	e.r.NexusLost(e.nx)
	if err := e.r.LogicalUnitReset(EncodeLUN(0)); err != nil {
		t.Fatal(err)
	}
	e.r.NexusAdded(e.nx)
	ua(t, e, e.nx, ASCPowerOnResetOccurred)
	if key, typ := e.readRes(e.nx); key != 0xA || typ != PRExclusiveAccess {
		t.Fatalf("reservation %#x %v after nexus loss and reset", key, typ)
	}
	good(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512))
	ua(t, e, e.nx2, ASCBusDeviceResetOccurred)
	conflict(t, e.runOn(e.nx2, 0, cdb10(OpRead10, 0, 0, 1), nil, 512))
}

// --- the conflict table covers every implemented command ---

func TestPRConflictTableCoversOpcodes(t *testing.T) {
	check := func(e *opEntry) {
		t.Helper()
		cdb := make([]byte, max(len(e.usage), 16))
		copy(cdb, e.usage)
		if r := prRuleFor(cdb); r.class == prUnlisted {
			t.Errorf("%v (service action %#x) has no reservation conflict rule", OpCode(e.usage[0]), e.usage[1]&saMask)
		}
	}
	n := 0
	for i := range sbcOps {
		e := &sbcOps[i]
		for j := range e.sas {
			check(&e.sas[j])
			n++
		}
		if e.sas == nil && e.plan != nil {
			check(e)
			n++
		}
	}
	if n < 40 {
		t.Fatalf("walked only %d entries", n)
	}
	for _, op := range []byte{0x83, 0x84, 0x48, 0x9C, 0x89, 0x8B, 0x41, 0x93, 0x42, 0x2E, 0xAE, 0x8E} {
		if prRules[op].class == prUnlisted {
			t.Errorf("opcode %#x has no rule", op)
		}
	}
	// Write-class commands of the table must never pass a reservation.
	for i := range sbcOps {
		if e := &sbcOps[i]; e.flags&flagWrite != 0 && prRules[i].class != prWrite {
			t.Errorf("%v writes the medium but its class is %d", OpCode(i), prRules[i].class)
		}
	}
}

// TestPRConcurrent runs reservation changes against I/O from other
// nexuses, for the race detector; every command must end with GOOD or
// RESERVATION CONFLICT.
func TestPRConcurrent(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			c := &Command{Nexus: e.nx2, LUN: EncodeLUN(0), CDB: cdb10(OpWrite10, 0, uint32(i%8), 1), ExpectedLength: 512}
			e.r.Plan(c)
			if !c.Done() {
				c.DataOut = make([]byte, 512)
				e.r.Execute(context.Background(), c)
			}
			if c.Status != StatusGood && c.Status != StatusReservationConflict && c.Status != StatusCheckCondition {
				t.Errorf("write: %v", c.Status)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 100; i++ {
			typ := allTypes[i%len(allTypes)]
			p := make([]byte, 24)
			binary.BigEndian.PutUint64(p, 0xA)
			for _, sa := range []uint8{SAReserve, SARelease} {
				cdb := []byte{byte(OpPersistentReserveOut), sa, byte(typ), 0, 0, 0, 0, 0, 24, 0}
				c := &Command{Nexus: e.nx, LUN: EncodeLUN(0), CDB: cdb, ExpectedLength: 24}
				e.r.Plan(c)
				if !c.Done() {
					c.DataOut = p
					e.r.Execute(context.Background(), c)
				}
				if c.Status != StatusGood {
					t.Errorf("PROUT %x: %v", sa, c.Status)
				}
			}
		}
	}()
	wg.Wait()
}

func TestTransportIDParse(t *testing.T) {
	tid := func(b0 byte, body string, addl int) []byte {
		out := make([]byte, 4+addl)
		out[0] = b0
		binary.BigEndian.PutUint16(out[2:], uint16(addl))
		copy(out[4:], body)
		return out
	}
	cases := []struct {
		name string
		b    []byte
		want transportID
		ok   bool
	}{
		{"port", tid(0x45, "iqn.2026-01.test:a,i,0x800000000001", 36), transportID{"iqn.2026-01.test:a", [6]byte{0x80, 0, 0, 0, 0, 1}, false}, true},
		{"port upper case", tid(0x45, "iqn.2026-01.test:a,I,0X80000000000A", 36), transportID{"iqn.2026-01.test:a", [6]byte{0x80, 0, 0, 0, 0, 0x0A}, false}, true},
		{"name", tid(0x05, "iqn.2026-01.test:a", 20), transportID{Name: "iqn.2026-01.test:a", AnyISID: true}, true},
		{"utf-8 name", tid(0x45, "iqn.2026-01.test:ǅǆ,i,0x800000000001", 40), transportID{"iqn.2026-01.test:ǅǆ", [6]byte{0x80, 0, 0, 0, 0, 1}, false}, true},
		{"not iscsi", tid(0x46, "iqn.2026-01.test:a,i,0x800000000001", 36), transportID{}, false},
		{"format 10b", tid(0x85, "iqn.2026-01.test:a", 20), transportID{}, false},
		{"short isid", tid(0x45, "iqn.2026-01.test:a,i,0x8000000001", 36), transportID{}, false},
		{"no separator", tid(0x45, "iqn.2026-01.test:abcde800000000001", 36), transportID{}, false},
		{"no NUL", tid(0x05, "iqn.2026-01.test:abcdefghijklmnopqrst", 20), transportID{}, false},
		{"garbage after NUL", append(tid(0x05, "iqn.x", 20)[:23], 'x'), transportID{}, false},
		{"length not multiple of 4", tid(0x05, "iqn.2026-01.test:a", 21), transportID{}, false},
		{"length past the end", tid(0x05, "iqn.2026-01.test:a", 20)[:20], transportID{}, false},
		{"comma in name", tid(0x05, "iqn.x,y", 20), transportID{}, false},
		{"empty name", tid(0x05, "", 20), transportID{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := parseTransportID(tc.b, 24)
			if !tc.ok {
				illegal := Sense{}
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				if !errors.As(err, &illegal) || illegal.ASC != ASCInvalidFieldInParamList || illegal.FieldByte < 24 {
					t.Fatalf("error %v, want INVALID FIELD IN PARAMETER LIST at byte >= 24", err)
				}
				return
			}
			if err != nil || got != tc.want || n != len(tc.b) {
				t.Fatalf("got %+v, %d bytes, %v; want %+v, %d", got, n, err, tc.want, len(tc.b))
			}
		})
	}
}

// TestPRPreemptEveryType preempts a reservation of each type with each
// type, naming the holder's key.
func TestPRPreemptEveryType(t *testing.T) {
	for _, old := range allTypes {
		for _, nw := range allTypes {
			t.Run(old.String()+" by "+nw.String(), func(t *testing.T) {
				e := newEnv(t, nil).login()
				good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
				good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
				good(t, e.prOut(e.nx2, SAReserve, old, 0xB, 0, 0))
				good(t, e.prOut(e.nx, SAPreempt, nw, 0xA, 0xB, 0))
				key, typ := e.readRes(e.nx)
				if old.allRegistrants() {
					// A non-zero key only removes registrations; the all
					// registrants reservation stays with the remaining one.
					if key != 0 || typ != old {
						t.Fatalf("reservation %#x %v, want 0 %v", key, typ, old)
					}
				} else {
					wantKey := uint64(0xA)
					if nw.allRegistrants() {
						wantKey = 0
					}
					if key != wantKey || typ != nw {
						t.Fatalf("reservation %#x %v, want %#x %v", key, typ, wantKey, nw)
					}
				}
				if gen, keys := e.readKeys(e.nx); gen != 3 || !slices.Equal(keys, []uint64{0xA}) {
					t.Fatalf("gen %d keys %x, want 3 [a]", gen, keys)
				}
				ua(t, e, e.nx2, ASCRegistrationsPreempted)
				noUA(t, e, e.nx2)
				// nx2 is unregistered now: writes conflict unless the type
				// lets everybody write (none does).
				conflict(t, e.runOn(e.nx2, 0, cdb10(OpWrite10, 0, 0, 1), fill(512, 1), 0))
				good(t, e.run(cdb10(OpWrite10, 0, 0, 1), fill(512, 2), 0))
			})
		}
	}
}

func TestReservationStatus(t *testing.T) {
	e := newEnv(t, nil).login()
	if st := e.lu.ReservationStatus(); st.Generation != 0 || len(st.Registrations) != 0 || st.Type != 0 || st.SPC2Holder != "" {
		t.Fatalf("idle status %+v", st)
	}
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0x04))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(e.nx2, SAReserve, PRWriteExclusiveRegsOnly, 0xB, 0, 0))
	st := e.lu.ReservationStatus()
	want := []PRRegistration{
		{Key: 0xA, InitiatorPort: "iqn.2026-01.test:init1,i,0x800000000001", AllTargetPorts: true},
		{Key: 0xB, InitiatorPort: "iqn.2026-01.test:init2,i,0x800000000002", TargetPort: "iqn.2026-01.test:tgt,t,0x0001", Holder: true},
	}
	if st.Generation != 2 || st.Type != PRWriteExclusiveRegsOnly || !slices.Equal(st.Registrations, want) {
		t.Fatalf("status %+v, want generation 2, type 5, registrations %+v", st, want)
	}
}
