package scsi

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// The test device is 2048 blocks of 512 bytes: threshold sets of 1/64 of
// it, 32 LBAs (16 KiB, THRESHOLD EXPONENT 5).
const testSetLBAs = 32

func logSense(page, sub byte, ptr, alloc uint16) []byte {
	return []byte{byte(OpLogSense), 0, 0x40 | page, sub, 0, byte(ptr >> 8), byte(ptr), byte(alloc >> 8), byte(alloc), 0}
}

// lbpSelect is a MODE SELECT(10) list with the Logical Block Provisioning
// page: SITUA, ENABLED and THRESHOLD COUNT as given.
func lbpSelect(situa, enabled bool, count uint32) (cdb, list []byte) {
	page := make([]byte, 24)
	page[0], page[1], page[3] = 0x40|0x1C, 0x02, 0x14
	if situa {
		page[4] = 1
	}
	page[16], page[17] = 0x01, 0x02
	if enabled {
		page[16] |= 0x80
	}
	page[20], page[21], page[22], page[23] = byte(count>>24), byte(count>>16), byte(count>>8), byte(count)
	list = append(make([]byte, 8), page...)
	return []byte{byte(OpModeSelect10), 0x10, 0, 0, 0, 0, 0, 0, byte(len(list)), 0}, list
}

func TestLBPModePageBytes(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Thin = true; c.StatePath = filepath.Join(t.TempDir(), "mode") })
	for _, tt := range []struct {
		pc   byte
		want string
	}{
		{pcCurrent, "dc 02 00 14 00 00 00 00 00 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00"},
		{pcChangeable, "dc 02 00 14 01 00 00 00 00 00 00 00 00 00 00 00 80 00 00 00 ff ff ff ff"},
		{pcDefault, "dc 02 00 14 00 00 00 00 00 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00"},
	} {
		c := e.run(modeSense6(true, tt.pc, 0x1C, 0x02, 255), nil, 255)
		good(t, c)
		if got := dataIn(c)[4:]; !bytes.Equal(got, hexb(tt.want)) {
			t.Fatalf("PC %d:\n got % x\nwant %s", tt.pc, got, tt.want)
		}
	}
	// LBPERE in the Read-Write Error Recovery page: notification is on.
	c := e.run(modeSense6(true, pcCurrent, 0x01, 0, 255), nil, 255)
	good(t, c)
	if got := dataIn(c)[4:]; got[7] != 0x80 {
		t.Fatalf("page 01h % x: LBPERE not set", got)
	}
	// Not on a thick LU: the page does not exist and B2h has no exponent.
	thick := newEnv(t, nil)
	check(t, thick.run(modeSense6(true, pcCurrent, 0x1C, 0x02, 255), nil, 255), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	c = thick.run(modeSense6(true, pcCurrent, 0x01, 0, 255), nil, 255)
	if got := dataIn(c)[4:]; got[7] != 0 {
		t.Fatalf("thick page 01h % x: LBPERE set", got)
	}
}

func TestLBPThresholdExponent(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*LUConfig)
		exp  byte
	}{
		{"thin 512", thin, 5},
		{"thin 4096", func(c *LUConfig) { c.Thin, c.BlockSize = true, 4096 }, 5}, // 8 MiB: 128 KiB sets
		{"thick", nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			c := e.run(inquiryCDBBytes(true, 0xB2, 255), nil, 255)
			good(t, c)
			if got := dataIn(c); got[4] != tt.exp {
				t.Fatalf("B2h % x: exponent %d, want %d", got, got[4], tt.exp)
			}
		})
	}
}

func TestLBPLogSense(t *testing.T) {
	e := newEnv(t, thin)
	// 3 sets written, in 4 KiB granules of the Memory device.
	good(t, e.run(cdb10(OpWrite10, 0, 0, 3*testSetLBAs), make([]byte, 3*testSetLBAs*512), 0))
	c := e.run(logSense(0x0C, 0, 0, 512), nil, 512)
	good(t, c)
	want := hexb("8c 00 00 18" +
		" 00 01 03 08 00 00 00 3d 01 00 00 00" + // available: 64-3 sets, dedicated
		" 00 02 03 08 00 00 00 03 01 00 00 00") // used: 3 sets, dedicated
	if got := dataIn(c); !bytes.Equal(got, want) {
		t.Fatalf("log page 0Ch\n got % x\nwant % x", got, want)
	}
	// PARAMETER POINTER 2 skips the available count.
	c = e.run(logSense(0x0C, 0, 2, 512), nil, 512)
	good(t, c)
	if got := dataIn(c); !bytes.Equal(got, append(hexb("8c 00 00 0c"), want[16:]...)) {
		t.Fatalf("pointer 2: % x", got)
	}
	check(t, e.run(logSense(0x0C, 0, 3, 512), nil, 512), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	// UNMAP gives the sets back.
	good(t, e.run(unmapCDBBytes(24), unmapParams([2]uint64{0, 2 * testSetLBAs}), 0))
	c = e.run(logSense(0x0C, 0, 2, 512), nil, 512)
	if got := dataIn(c); got[11] != 1 {
		t.Fatalf("used after UNMAP % x", got)
	}
	// Supported pages, and the subpage list.
	c = e.run(logSense(0, 0, 0, 512), nil, 512)
	good(t, c)
	if got := dataIn(c); !bytes.Equal(got, hexb("00 00 00 02 00 0c")) {
		t.Fatalf("supported pages % x", got)
	}
	c = e.run(logSense(0, 0xFF, 0, 512), nil, 512)
	good(t, c)
	if got := dataIn(c); !bytes.Equal(got, hexb("40 ff 00 06 00 00 00 ff 0c 00")) {
		t.Fatalf("supported subpages % x", got)
	}
	// Allocation length truncates.
	c = e.run(logSense(0x0C, 0, 0, 6), nil, 6)
	good(t, c)
	if got := dataIn(c); !bytes.Equal(got, want[:6]) {
		t.Fatalf("truncated % x", got)
	}
	// SP is not supported; other pages are invalid.
	check(t, e.run([]byte{byte(OpLogSense), 1, 0x4C, 0, 0, 0, 0, 2, 0, 0}, nil, 512), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(logSense(0x0D, 0, 0, 512), nil, 512), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	// A thick LU lists page 00h only.
	thick := newEnv(t, nil)
	c = thick.run(logSense(0, 0, 0, 512), nil, 512)
	good(t, c)
	if got := dataIn(c); !bytes.Equal(got, hexb("00 00 00 01 00")) {
		t.Fatalf("thick supported pages % x", got)
	}
	check(t, thick.run(logSense(0x0C, 0, 0, 512), nil, 512), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestLBPLogSenseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "thin.img")
	dev, err := backstore.OpenFile(path, backstore.FileOptions{CreateSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !dev.Info().CanUnmap {
		dev.Close()
		t.Skip("file system cannot punch holes") // reported as a skip, not a pass
	}
	lu, err := NewLU(LUConfig{Device: dev, Thin: true, Serial: "F1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRouter([]*LU{lu})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, lu: lu, r: r, nx: &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:f"}}}
	defer lu.Close()
	// 4 MiB: sets of 64 KiB (128 LBAs, exponent 7). Write 256 KiB.
	good(t, e.run(cdb10(OpWrite10, 0, 0, 512), bytes.Repeat([]byte{7}, 256<<10), 0))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	used := fi.Sys().(*syscall.Stat_t).Blocks * 512
	c := e.run(logSense(0x0C, 0, 0, 512), nil, 512)
	good(t, c)
	got := dataIn(c)
	if u := be.Uint32(got[20:24]); uint64(u) != uint64(used)>>9>>7 || u < 4 {
		t.Fatalf("used %d sets, st_blocks says %d bytes", u, used)
	}
	if got[24] != logScopeLU || got[12] != logScopeShared {
		t.Fatalf("scopes % x", got)
	}
}

func TestLBPThresholdUA(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Thin, c.StatePath = true, filepath.Join(t.TempDir(), "mode") }).login()
	// Threshold at 4 sets: notification above 4.5 sets of used LBAs. Saved,
	// so that a reset keeps it.
	cdb, list := lbpSelect(false, true, 4)
	cdb[1] |= 0x01
	good(t, e.run(cdb, list, 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	write := func(n *Nexus, lba uint32, sets int) *Command {
		return e.runOn(n, 0, cdb10(OpWrite10, 0, lba, uint16(sets*testSetLBAs)), make([]byte, sets*testSetLBAs*512), 0)
	}
	good(t, write(e.nx, 0, 4)) // 4 sets: inside the range, no notification
	good(t, e.run(make([]byte, 6), nil, 0))
	good(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0))
	good(t, write(e.nx, 4*testSetLBAs, 1)) // 5 sets: crossed
	for _, n := range []*Nexus{e.nx, e.nx2} {
		c := e.runOn(n, 0, make([]byte, 6), nil, 0)
		check(t, c, StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
		if _, _, info, ok := parseSense(c.SenseData()); !ok || info != lbpDescOffset {
			t.Fatalf("INFORMATION %d valid %v, want %d", info, ok, lbpDescOffset)
		}
		good(t, e.runOn(n, 0, make([]byte, 6), nil, 0))
	}
	// Still above: no second notification.
	good(t, write(e.nx, 5*testSetLBAs, 2))
	good(t, e.run(make([]byte, 6), nil, 0))
	good(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0))
	// Down to 2 sets (below 3.5): re-armed; back up to 6: notified again.
	good(t, e.run(unmapCDBBytes(24), unmapParams([2]uint64{2 * testSetLBAs, 5 * testSetLBAs}), 0))
	good(t, e.run(make([]byte, 6), nil, 0))
	good(t, write(e.nx2, 2*testSetLBAs, 4))
	check(t, e.run(make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)

	// A logical unit reset re-arms it: the next sample above notifies.
	if err := e.r.LogicalUnitReset(EncodeLUN(0)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Nexus{e.nx, e.nx2} {
		check(t, e.runOn(n, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCBusDeviceResetOccurred)
	}
	good(t, e.run(cdb16(OpWriteSame16, 0, 0, 1), make([]byte, 512), 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
	check(t, e.run(make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)

	// SITUA: only the nexus that crossed it hears about it.
	cdb, list = lbpSelect(true, true, 8)
	good(t, e.run(cdb, list, 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	good(t, e.runOn(e.nx2, 0, cdb16(OpWriteSame16, 0, 6*testSetLBAs, 4*testSetLBAs), bytes.Repeat([]byte{1}, 512), 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
	good(t, e.run(make([]byte, 6), nil, 0))
}

func TestLBPThresholdDisabled(t *testing.T) {
	e := newEnv(t, thin).login()
	cdb, list := lbpSelect(false, false, 1)
	good(t, e.run(cdb, list, 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	good(t, e.run(cdb10(OpWrite10, 0, 0, 8*testSetLBAs), make([]byte, 8*testSetLBAs*512), 0))
	good(t, e.run(make([]byte, 6), nil, 0))
	good(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0))
	// Enabling it below the current usage notifies at once.
	cdb, list = lbpSelect(false, true, 1)
	good(t, e.run(cdb, list, 0))
	check(t, e.run(make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
}

func TestLBPThresholdPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mode")
	e := newEnv(t, func(c *LUConfig) { c.Thin, c.StatePath = true, path })
	cdb, list := lbpSelect(true, true, 0x01020304)
	cdb[1] |= 0x01 // SP
	good(t, e.run(cdb, list, 0))
	if b, err := os.ReadFile(path); err != nil || !bytes.Contains(b, []byte(`"lbp_threshold_count":16909060`)) {
		t.Fatalf("state file %s (%v)", b, err)
	}
	e2 := newEnv(t, func(c *LUConfig) { c.Thin, c.StatePath = true, path })
	for _, pc := range []byte{pcCurrent, pcSaved} {
		c := e2.run(modeSense6(true, pc, 0x1C, 0x02, 255), nil, 255)
		good(t, c)
		want := hexb("dc 02 00 14 01 00 00 00 00 00 00 00 00 00 00 00 81 02 00 00 01 02 03 04")
		if got := dataIn(c)[4:]; !bytes.Equal(got, want) {
			t.Fatalf("PC %d after NewLU\n got % x\nwant % x", pc, got, want)
		}
	}
	// Other fields of the page are not changeable.
	cdb, list = lbpSelect(false, true, 1)
	list[8+17] = 0x01 // THRESHOLD RESOURCE 01h
	c := e2.run(cdb, list, 0)
	check(t, c, StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInParamList)
	// An older state file without the fields loads with the defaults.
	if err := os.WriteFile(path, []byte(`{"version":1,"mode":{"wce":false}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := loadModeValues(path)
	if err != nil || v.WCE || v.ThreshEnabled || v.ThreshCount != 0 {
		t.Fatalf("old file: %+v %v", v, err)
	}
}

func TestRSOCListsLogSense(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run(rsocBytes(false, 1, byte(OpLogSense), 0, 64), nil, 64)
	good(t, c)
	got := dataIn(c)
	if got[1]&0x07 != 0x03 || !bytes.Equal(got[4:], sbcOps[OpLogSense].usage) {
		t.Fatalf("RSOC LOG SENSE % x", got)
	}
	if r := prRuleFor([]byte{byte(OpLogSense)}); r.class != prAllowed {
		t.Fatalf("conflict class %v", r.class)
	}
}

// newThinHotPath is newHotPath on a thin LU over dev, with the soft
// threshold enabled far above what the test writes when on is set.
func newThinHotPath(tb testing.TB, dev backstore.Device, size int, on bool) *hotPath {
	tb.Helper()
	lu, err := NewLU(LUConfig{Device: dev, Thin: true, Serial: "BENCH"})
	if err != nil {
		tb.Fatal(err)
	}
	if !lu.hasThresholds() {
		tb.Fatal("no thresholds on the thin LU")
	}
	lu.setCurrent(modeValues{WCE: true, ThreshEnabled: on, ThreshCount: 1 << 30})
	r, err := NewRouter([]*LU{lu})
	if err != nil {
		tb.Fatal(err)
	}
	h := &hotPath{r: r, nx: &Nexus{Key: NexusKey{InitiatorName: "iqn.bench"}}, buf: make([]byte, size), ctx: context.Background()}
	r.NexusAdded(h.nx)
	h.do(OpTestUnitReady, 0)
	return h
}

// TestThresholdHotPathAllocations: with the threshold enabled, writes
// (including the ones that sample the allocation) allocate nothing.
func TestThresholdHotPathAllocations(t *testing.T) {
	h := newThinHotPath(t, backstore.NewMemory(64<<20), 64<<10, true)
	lba := uint32(0)
	allocs := testing.AllocsPerRun(200, func() {
		h.do(OpWrite10, lba)
		lba = (lba + 128) % (1 << 16)
	})
	h.mustGood(t)
	if allocs != 0 {
		t.Fatalf("%v allocations per WRITE, want 0", allocs)
	}
}

// BenchmarkWrite10_4K_Threshold writes 4 KiB blocks to a thin file LU with
// the soft threshold off and on (then every 256th write samples fstat and
// fstatfs).
func BenchmarkWrite10_4K_Threshold(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			dev, err := backstore.OpenFile(filepath.Join(b.TempDir(), "bench.img"), backstore.FileOptions{CreateSize: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			h := newThinHotPath(b, dev, 4<<10, on)
			defer h.r.Close()
			b.SetBytes(4 << 10)
			b.ReportAllocs()
			lba := uint32(0)
			for i := 0; i < b.N; i++ {
				h.do(OpWrite10, lba)
				lba = (lba + 8) % (1 << 17)
			}
			h.mustGood(b)
		})
	}
}

// TestLBPThresholdExtendedCopy: an EXTENDED COPY sent to LU 0 that writes
// to thin LU 1 crosses LU 1's threshold.
func TestLBPThresholdExtendedCopy(t *testing.T) {
	a, err := NewLU(LUConfig{ID: 0, Device: backstore.NewMemory(1 << 20), Serial: "SNA"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewLU(LUConfig{ID: 1, Device: backstore.NewMemory(1 << 20), Serial: "SNB", Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	b.setCurrent(modeValues{WCE: true, ThreshEnabled: true, ThreshCount: 1})
	r, err := NewRouter([]*LU{a, b})
	if err != nil {
		t.Fatal(err)
	}
	nx := &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:x"}}
	r.NexusAdded(nx)
	e := &env{t: t, r: r}
	tur := func(lun uint16) *Command {
		return e.exec(&Command{Nexus: nx, LUN: EncodeLUN(lun), CDB: make([]byte, 6)}, nil)
	}
	check(t, tur(0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
	check(t, tur(1), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
	p := xcopyParams(0, listIDIgnored<<3, [][]byte{identTarget(a), identTarget(b)}, [][]byte{b2bSegment(0, 1, 4*testSetLBAs, 0, 0)})
	good(t, e.exec(&Command{Nexus: nx, LUN: EncodeLUN(0), CDB: xcopyCDBBytes(uint32(len(p))), ExpectedLength: uint32(len(p))}, p))
	check(t, tur(1), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
	good(t, tur(0))
}

// TestLBPThresholdSanitize: a SANITIZE OVERWRITE with IMMED maps every
// block; the threshold is sampled when the background operation ends.
func TestLBPThresholdSanitize(t *testing.T) {
	e := newEnv(t, thin).login()
	cdb, list := lbpSelect(false, true, 8)
	good(t, e.run(cdb, list, 0))
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	p := owParams(0x01, []byte{0x5A})
	good(t, e.run(sanitizeCDBBytes(0x80|saOverwrite, uint16(len(p))), p, 0))
	e.lu.san.wg.Wait()
	check(t, e.runOn(e.nx2, 0, make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
	check(t, e.run(make([]byte, 6), nil, 0), StatusCheckCondition, KeyUnitAttention, ASCSoftThresholdReached)
}
