package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

var tur = []byte{0, 0, 0, 0, 0, 0}

func requestSense(desc bool, alloc byte) []byte {
	c := []byte{0x03, 0, 0, 0, alloc, 0}
	if desc {
		c[1] = 1
	}
	return c
}

func TestRequestSense(t *testing.T) {
	e := newEnv(t, nil)
	e.r.NexusAdded(e.nx)
	c := e.run(requestSense(false, 252), nil, 252)
	good(t, c)
	if want := hexb("70 00 06 00 00 00 00 0a 00 00 00 00 29 00 00 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("got % x", dataIn(c))
	}
	c = e.run(requestSense(false, 252), nil, 252) // the unit attention is gone
	good(t, c)
	if want := hexb("70 00 00 00 00 00 00 0a 00 00 00 00 00 00 00 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("got % x", dataIn(c))
	}
	c = e.run(requestSense(true, 252), nil, 252)
	if want := hexb("72 00 00 00 00 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("descriptor: got % x", dataIn(c))
	}
	c = e.run(requestSense(false, 8), nil, 8)
	if len(dataIn(c)) != 8 {
		t.Fatalf("allocation length 8: %d bytes", len(dataIn(c)))
	}
	c = e.runOn(e.nx, 9, requestSense(false, 18), nil, 18)
	good(t, c)
	if k, a, _, _ := parseSense(dataIn(c)); k != KeyIllegalRequest || a != ASCLUNotSupported {
		t.Fatalf("LUN without LU: %v/%v", k, a)
	}
}

func TestUnitAttentionQueue(t *testing.T) {
	e := newEnv(t, nil).login()
	// Oldest first, one per command, and REPORT LUNS / INQUIRY leave them.
	e.lu.establishUA(ASCModeParametersChanged, nil)
	e.lu.establishUA(ASCCapacityDataChanged, nil)
	e.lu.establishUA(ASCModeParametersChanged, nil) // duplicate: not queued twice
	good(t, e.run(inquiryCDBBytes(false, 0, 36), nil, 36))
	good(t, e.run([]byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256))
	check(t, e.run(tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	check(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), StatusCheckCondition, KeyUnitAttention, ASCCapacityDataChanged)
	good(t, e.run(tur, nil, 0))
	// The other nexus still has both.
	check(t, e.runOn(e.nx2, 0, tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	// A reset condition supersedes what is queued.
	if err := e.r.LogicalUnitReset(EncodeLUN(0)); err != nil {
		t.Fatal(err)
	}
	check(t, e.runOn(e.nx2, 0, tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCBusDeviceResetOccurred)
	good(t, e.runOn(e.nx2, 0, tur, nil, 0))
	// The queue is bounded.
	for i := 0; i < 3*uaQueueLen; i++ {
		e.lu.establishUA(ASC(0x3F00+i), nil)
	}
	n := 0
	for e.run(tur, nil, 0).Status == StatusCheckCondition {
		n++
	}
	if n != uaQueueLen { // the LU reset UA and what else fitted
		t.Fatalf("%d unit attentions reported, want %d", n, uaQueueLen)
	}
	if e.lu.uaCount.Load() != uaQueueLen {
		t.Fatalf("uaCount %d after draining nexus 1", e.lu.uaCount.Load())
	}
	e.r.NexusLost(e.nx2)
	if e.lu.uaCount.Load() != 0 {
		t.Fatalf("uaCount %d after losing nexus 2", e.lu.uaCount.Load())
	}
}

func TestResets(t *testing.T) {
	e := newEnv(t, nil).login()
	e.r.TargetReset(false)
	check(t, e.run(tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSCSIBusResetOccurred)
	e.r.TargetReset(true)
	check(t, e.runOn(e.nx2, 0, tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnOccurred)
	if err := e.r.LogicalUnitReset(EncodeLUN(5)); err != ErrUnknownLUN {
		t.Fatalf("reset of a missing LUN: %v", err)
	}
}

func TestReportLUNs(t *testing.T) {
	var lus []*LU
	for _, id := range []uint16{300, 0, 7} {
		lu, err := NewLU(LUConfig{ID: id, Device: backstore.NewMemory(1 << 20), Serial: "S"})
		if err != nil {
			t.Fatal(err)
		}
		lus = append(lus, lu)
	}
	r, err := NewRouter(lus)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRouter(append(lus, lus[1])); err == nil {
		t.Fatal("duplicate LUN accepted")
	}
	e := &env{t: t, r: r}
	rl := func(sel byte, alloc uint32) []byte {
		c := []byte{0xA0, 0, sel, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(c[6:], alloc)
		return c
	}
	all := hexb("00 00 00 18 00 00 00 00  00 00 00 00 00 00 00 00  00 07 00 00 00 00 00 00  41 2c 00 00 00 00 00 00")
	tests := []struct {
		name  string
		lun   uint16
		cdb   []byte
		want  []byte
		asc   ASC
		alloc int
	}{
		{"all", 0, rl(0, 256), all, 0, 256},
		{"select 2 from a LUN without LU", 99, rl(2, 256), all, 0, 256},
		{"well known only", 0, rl(1, 256), hexb("00 00 00 00 00 00 00 00"), 0, 256},
		{"truncated", 0, rl(0, 16), all[:16], 0, 16},
		{"allocation length below 16", 0, rl(0, 15), nil, ASCInvalidFieldInCDB, 15},
		{"unknown select report", 0, rl(0x10, 256), nil, ASCInvalidFieldInCDB, 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.runOn(nil, tt.lun, tt.cdb, nil, tt.alloc)
			if tt.asc != 0 {
				check(t, c, StatusCheckCondition, KeyIllegalRequest, tt.asc)
				return
			}
			good(t, c)
			if !bytes.Equal(dataIn(c), tt.want) {
				t.Fatalf("got  % x\nwant % x", dataIn(c), tt.want)
			}
		})
	}
}

func TestMissingLUN(t *testing.T) {
	e := newEnv(t, nil)
	for _, cdb := range [][]byte{tur, cdb10(OpRead10, 0, 0, 1), modeSense6(false, 0, 0x3F, 0, 255), {0xC5, 0, 0, 0, 0, 0}, {0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		check(t, e.runOn(e.nx, 42, cdb, nil, 255), StatusCheckCondition, KeyIllegalRequest, ASCLUNotSupported)
	}
	if e.r.LUNExists(EncodeLUN(42)) || !e.r.LUNExists(EncodeLUN(0)) || e.r.LUNExists(0x0100_0000_0000_0000) {
		t.Fatal("LUNExists")
	}
	check(t, e.run([]byte{0xC5, 0, 0, 0, 0, 0}, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidOpcode)
	check(t, e.run(nil, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestReadCapacity(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run([]byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	good(t, c)
	if want := hexb("00 00 07 ff 00 00 02 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("READ CAPACITY(10): % x", dataIn(c))
	}
	c = e.run(readCap16CDB(32), nil, 32)
	good(t, c)
	if want := cat(hexb("00 00 00 00 00 00 07 ff 00 00 02 00 10 03 00 00"), make([]byte, 16)); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("READ CAPACITY(16): % x", dataIn(c))
	}
	th := newEnv(t, func(c *LUConfig) { c.Thin, c.BlockSize = true, 4096 })
	c = th.run(readCap16CDB(16), nil, 16)
	if want := hexb("00 00 00 00 00 00 07 ff 00 00 10 00 10 00 c0 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("thin READ CAPACITY(16): % x", dataIn(c))
	}
	for alloc := 0; alloc < 16; alloc++ {
		c := e.run(readCap16CDB(uint32(alloc)), nil, alloc)
		good(t, c)
		if int(c.XferLen) != alloc {
			t.Fatalf("alloc %d: XferLen %d", alloc, c.XferLen)
		}
	}
	check(t, e.run([]byte{0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0}, nil, 8), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	good(t, e.run([]byte{0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0}, nil, 8)) // PMI
	// 2^32 blocks and more: READ CAPACITY(10) says FFFFFFFFh.
	e.lu.capacity.Store(1 << 32)
	c = e.run([]byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	if want := hexb("ff ff ff ff 00 00 02 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("large READ CAPACITY(10): % x", dataIn(c))
	}
	e.lu.capacity.Store(1<<32 - 1)
	c = e.run([]byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	if want := hexb("ff ff ff fe 00 00 02 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("READ CAPACITY(10) of 2^32-1 blocks: % x", dataIn(c))
	}
}

func startStop(immed bool, pc byte, noFlush, loej, start bool) []byte {
	c := []byte{0x1B, 0, 0, 0, pc << 4, 0}
	if immed {
		c[1] = 1
	}
	if noFlush {
		c[4] |= 4
	}
	if loej {
		c[4] |= 2
	}
	if start {
		c[4] |= 1
	}
	return c
}

var preventOn, preventOff = []byte{0x1E, 0, 0, 0, 1, 0}, []byte{0x1E, 0, 0, 0, 0, 0}

func TestRemovableMedium(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Removable = true }).login()
	eject, load := startStop(false, 0, false, true, false), startStop(false, 0, false, true, true)
	good(t, e.run(eject, nil, 0))
	if e.dev.flushes != 1 {
		t.Fatalf("eject did not flush: %d", e.dev.flushes)
	}
	for _, cdb := range [][]byte{tur, cdb10(OpRead10, 0, 0, 1), cdb10(OpWrite10, 0, 0, 1), cdb10(OpSyncCache10, 0, 0, 0),
		readCap16CDB(32), cdb16(OpServiceActionIn, SAGetLBAStatus, 0, 24), cdb10(OpPreFetch10, 0, 0, 1), ws10(0, 0, 1)} {
		check(t, e.run(cdb, make([]byte, 512), 512), StatusCheckCondition, KeyNotReady, ASCMediumNotPresent)
	}
	good(t, e.run(inquiryCDBBytes(false, 0, 36), nil, 36))
	good(t, e.run(modeSense6(false, 0, 0x3F, 0, 255), nil, 255))
	c := e.run(requestSense(false, 18), nil, 18)
	if k, a, _, _ := parseSense(dataIn(c)); k != KeyNotReady || a != ASCMediumNotPresent {
		t.Fatalf("REQUEST SENSE while ejected: %v/%v", k, a)
	}
	good(t, e.run(preventOn, nil, 0))
	check(t, e.run(load, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCMediumRemovalPrevented)
	good(t, e.run(preventOff, nil, 0))
	good(t, e.run(load, nil, 0))
	good(t, e.run(tur, nil, 0))
	check(t, e.runOn(e.nx2, 0, tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCNotReadyToReadyChange)

	// Prevention by one nexus holds for all; losing that nexus lifts it.
	good(t, e.run(preventOn, nil, 0))
	check(t, e.runOn(e.nx2, 0, eject, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCMediumRemovalPrevented)
	check(t, e.run(eject, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCMediumRemovalPrevented)
	e.r.NexusLost(e.nx)
	good(t, e.runOn(e.nx2, 0, eject, nil, 0))
	good(t, e.runOn(e.nx2, 0, load, nil, 0))
	// LU reset lifts it too.
	good(t, e.runOn(e.nx2, 0, preventOn, nil, 0))
	_ = e.r.LogicalUnitReset(EncodeLUN(0))
	check(t, e.runOn(e.nx2, 0, tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCBusDeviceResetOccurred)
	good(t, e.runOn(e.nx2, 0, eject, nil, 0))
	good(t, e.runOn(e.nx2, 0, eject, nil, 0)) // ejecting twice is fine
	good(t, e.runOn(e.nx2, 0, load, nil, 0))

	// Power conditions ignore LOEJ and START (libiscsi StartStopUnit.PwrCnd).
	for pc := byte(1); pc < 16; pc++ {
		good(t, e.runOn(e.nx2, 0, startStop(true, pc, false, true, false), nil, 0))
		good(t, e.runOn(e.nx2, 0, tur, nil, 0))
	}
	// LOEJ=0 never ejects.
	for _, cdb := range [][]byte{startStop(false, 0, false, false, false), startStop(true, 0, true, false, true)} {
		good(t, e.runOn(e.nx2, 0, cdb, nil, 0))
		good(t, e.runOn(e.nx2, 0, tur, nil, 0))
	}
	check(t, e.run([]byte{0x1E, 0, 0, 0, 2, 0}, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestStartStopFixedMedium(t *testing.T) {
	e := newEnv(t, nil)
	check(t, e.run(startStop(false, 0, false, true, false), nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	good(t, e.run(startStop(false, 0, false, false, false), nil, 0)) // stop: flush, stay ready
	good(t, e.run(startStop(false, 0, true, false, false), nil, 0))  // NO_FLUSH
	good(t, e.run(startStop(false, 0, false, false, true), nil, 0))
	if e.dev.flushes != 1 {
		t.Fatalf("%d flushes, want 1", e.dev.flushes)
	}
	good(t, e.run(tur, nil, 0))
	good(t, e.run(preventOn, nil, 0))
}

func TestReportSupportedOpcodes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run(rsocBytes(false, 0, 0, 0, 65535), nil, 65535)
	good(t, c)
	all := dataIn(c)
	if int(binary.BigEndian.Uint32(all)) != len(all)-4 || (len(all)-4)%8 != 0 {
		t.Fatalf("COMMAND DATA LENGTH %d for %d bytes", binary.BigEndian.Uint32(all), len(all))
	}
	type desc struct {
		op       byte
		sa       uint16
		servactv bool
		cdbLen   int
	}
	var descs []desc
	for p := 4; p < len(all); p += 8 {
		d := all[p : p+8]
		if d[5]&0x02 != 0 {
			t.Fatal("CTDP without RCTD")
		}
		descs = append(descs, desc{d[0], binary.BigEndian.Uint16(d[2:]), d[5]&1 != 0, int(binary.BigEndian.Uint16(d[6:]))})
	}
	seen := map[byte]bool{}
	for _, d := range descs {
		seen[d.op] = true
		if !d.servactv && d.sa != 0 {
			t.Fatalf("opcode %02x: SA without SERVACTV", d.op)
		}
		// libiscsi ReportSupportedOpcodes.OneCommand: options 1 and 2
		// succeed exactly when the opcode has (no) service actions.
		c1 := e.run(rsocBytes(false, 1, d.op, d.sa, 65535), nil, 65535)
		c2 := e.run(rsocBytes(false, 2, d.op, d.sa, 65535), nil, 65535)
		one, bad := c1, c2
		if d.servactv {
			one, bad = c2, c1
		}
		good(t, one)
		check(t, bad, StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
		if bad.Sense[15]&0x80 == 0 || binary.BigEndian.Uint16(bad.Sense[16:]) == 1 {
			t.Fatalf("opcode %02x: the field pointer must exist and not be byte 1 (libiscsi reads that as unsupported)", d.op)
		}
		r := dataIn(one)
		if r[1] != 0x03 || int(binary.BigEndian.Uint16(r[2:])) != d.cdbLen || r[4] != d.op || len(r) != 4+d.cdbLen {
			t.Fatalf("one command %02x/%02x: % x", d.op, d.sa, r)
		}
	}
	for _, op := range []byte{0x00, 0x03, 0x12, 0x1A, 0x28, 0x2A, 0x35, 0x41, 0x88, 0x8A, 0x93, 0x9E, 0xA0, 0xA3} {
		if !seen[op] {
			t.Errorf("opcode %02x not reported", op)
		}
	}
	if seen[0x42] {
		t.Error("UNMAP reported on a fully provisioned LU")
	}
	// RCTD: every descriptor carries a 12-byte timeouts descriptor.
	c = e.run(rsocBytes(true, 0, 0, 0, 65535), nil, 65535)
	r := dataIn(c)
	if len(r)-4 != 20*len(descs) {
		t.Fatalf("RCTD: %d bytes for %d commands", len(r), len(descs))
	}
	for p := 4; p < len(r); p += 20 {
		if r[p+5]&0x02 == 0 || binary.BigEndian.Uint16(r[p+8:]) != 0x0A {
			t.Fatalf("RCTD descriptor % x", r[p:p+20])
		}
	}
	// Linux sd: WRITE SAME(16) with options 1 and a 20-byte allocation.
	c = e.run(rsocBytes(false, 1, 0x93, 0, 20), nil, 20)
	if want := cat(hexb("00 03 00 10"), u16(0x93, 0xF9, 0x3F)); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("WRITE SAME(16): % x", dataIn(c))
	}
	c = e.run(rsocBytes(true, 3, 0x9E, 0x10, 64), nil, 64)
	if want := cat(hexb("00 83 00 10"), sbcOps[0x9E].sas[0].usage, hexb("00 0a 00 00 00 00 00 00 00 00 00 00")); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("READ CAPACITY(16) with RCTD: % x", dataIn(c))
	}
	for _, q := range [][]byte{rsocBytes(false, 1, 0xA2, 0, 64), rsocBytes(false, 1, 0x42, 0, 64), rsocBytes(false, 3, 0x28, 1, 64), rsocBytes(false, 2, 0x9E, 0x11, 64)} {
		c := e.run(q, nil, 64)
		good(t, c)
		if !bytes.Equal(dataIn(c), hexb("00 01 00 00")) {
			t.Fatalf("unsupported %x: % x", q, dataIn(c))
		}
	}
	good(t, e.run(rsocBytes(false, 3, 0x28, 0, 64), nil, 64))
	check(t, e.run(rsocBytes(false, 4, 0, 0, 64), nil, 64), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	th := newEnv(t, thin)
	c = th.run(rsocBytes(false, 1, 0x42, 0, 64), nil, 64)
	if dataIn(c)[1] != 0x03 {
		t.Fatal("UNMAP not supported on a thin LU")
	}
}

func TestReportSupportedTMFs(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run([]byte{0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0}, nil, 16)
	if want := hexb("ca 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("got % x", dataIn(c))
	}
	c = e.run([]byte{0xA3, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0}, nil, 16)
	if want := hexb("ca 00 00 0c 00 00 00 00 00 00 00 00 00 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("REPD: got % x", dataIn(c))
	}
}

func TestReadDefectData(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run([]byte{0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0}, nil, 32)
	good(t, c)
	if want := hexb("00 18 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("(10): % x", dataIn(c))
	}
	c = e.run([]byte{0xB7, 0x05, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, 32)
	if want := hexb("00 05 00 00 00 00 00 00"); !bytes.Equal(dataIn(c), want) {
		t.Fatalf("(12): % x", dataIn(c))
	}
	check(t, e.run([]byte{0x37, 0, 0x07, 0, 0, 0, 0, 0, 32, 0}, nil, 32), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
}
