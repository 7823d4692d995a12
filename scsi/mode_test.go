package scsi

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

var (
	goldRWErr    = hexb("01 0a 00 00 00 00 00 00 00 00 00 00")
	goldCaching  = cat(hexb("08 12 04"), make([]byte, 17))
	goldControl  = hexb("0a 0a 20 10 00 40 00 00 ff ff 00 00")
	goldCtlExt   = cat(hexb("4a 01 00 1c"), make([]byte, 28))
	goldInfoExc  = hexb("1c 0a 08 00 00 00 00 00 00 00 00 00")
	goldShortBD  = hexb("00 00 08 00 00 00 02 00") // 2048 blocks of 512
	goldAllPages = cat(goldRWErr, goldCaching, goldControl, goldInfoExc)
)

func TestModeSense(t *testing.T) {
	ms10 := func(llbaa, dbd bool, pc, page, sub byte, alloc uint16) []byte {
		c := []byte{0x5A, 0, pc<<6 | page, sub, 0, 0, 0, byte(alloc >> 8), byte(alloc), 0}
		if llbaa {
			c[1] |= 0x10
		}
		if dbd {
			c[1] |= 0x08
		}
		return c
	}
	tests := []struct {
		name string
		mod  func(*LUConfig)
		cdb  []byte
		want []byte
	}{
		{"6: all pages with block descriptor", nil, modeSense6(false, 0, 0x3F, 0, 255),
			cat(hexb("43 00 10 08"), goldShortBD, goldAllPages)},
		{"6: all pages and subpages", nil, modeSense6(true, 0, 0x3F, 0xFF, 255),
			cat(hexb("5b 00 10 00"), goldRWErr, goldCaching, goldControl, goldCtlExt, goldInfoExc)},
		{"6: caching page as Linux asks", nil, modeSense6(true, 0, 0x08, 0, 255),
			cat(hexb("17 00 10 00"), goldCaching)},
		{"6: header only (allocation length 4)", nil, modeSense6(false, 0, 0x3F, 0, 4), hexb("43 00 10 08")},
		{"6: control subpages", nil, modeSense6(true, 0, 0x0A, 0xFF, 255),
			cat(hexb("2f 00 10 00"), goldControl, goldCtlExt)},
		{"6: changeable control", nil, modeSense6(false, 1, 0x0A, 0, 255),
			cat(hexb("17 00 10 08"), make([]byte, 8), hexb("0a 0a 04 00 08 00 00 00 00 00 00 00"))},
		{"6: changeable caching", nil, modeSense6(true, 1, 0x08, 0, 255), cat(hexb("17 00 10 00"), goldCaching)},
		{"6: default caching", nil, modeSense6(true, 2, 0x08, 0, 255), cat(hexb("17 00 10 00"), goldCaching)},
		{"6: write protected", func(c *LUConfig) { c.ReadOnly = true }, modeSense6(true, 0, 0x08, 0, 255),
			cat(hexb("17 00 90 00"), goldCaching)},
		{"6: saveable pages show PS", func(c *LUConfig) { c.StatePath = filepath.Join(t.TempDir(), "s") },
			modeSense6(true, 3, 0x3F, 0, 255),
			cat(hexb("3b 00 10 00"), goldRWErr, append([]byte{0x88}, goldCaching[1:]...), append([]byte{0x8A}, goldControl[1:]...), goldInfoExc)},
		{"10: long LBA block descriptor", nil, ms10(true, false, 0, 0x08, 0, 512),
			cat(hexb("00 2a 00 10 01 00 00 10"), hexb("00 00 00 00 00 00 08 00 00 00 00 00 00 00 02 00"), goldCaching)},
		{"10: short block descriptor", nil, ms10(false, false, 0, 0x0A, 0, 512),
			cat(hexb("00 1a 00 10 00 00 00 08"), goldShortBD, goldControl)},
		{"10: no block descriptor", nil, ms10(true, true, 0, 0x1C, 0, 512), cat(hexb("00 12 00 10 00 00 00 00"), goldInfoExc)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			c := e.run(tt.cdb, nil, 512)
			good(t, c)
			if got := dataIn(c); !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

func TestModeSenseErrors(t *testing.T) {
	tests := []struct {
		name string
		cdb  []byte
		asc  ASC
	}{
		{"unsupported page", modeSense6(false, 0, 0x05, 0, 255), ASCInvalidFieldInCDB},
		{"unsupported subpage of a page", modeSense6(false, 0, 0x08, 0x01, 255), ASCInvalidFieldInCDB},
		{"all pages with a specific subpage", modeSense6(false, 0, 0x3F, 0x01, 255), ASCInvalidFieldInCDB},
		{"saved values without a state file", modeSense6(false, 3, 0x08, 0, 255), ASCSavingParamsNotSupported},
		{"LLBAA in MODE SENSE(6)", []byte{0x1A, 0x10, 0x3F, 0, 255, 0}, ASCInvalidFieldInCDB},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, e.run(tt.cdb, nil, 255), StatusCheckCondition, KeyIllegalRequest, tt.asc)
		})
	}
}

// modeSelect6 builds MODE SELECT(6) with a parameter list of the header
// (block descriptor length bd) and the given pages.
func modeSelect6(pf, sp bool, bd []byte, pages ...[]byte) ([]byte, []byte) {
	list := cat(append([]byte{0, 0, 0, byte(len(bd))}, bd...), cat(pages...))
	c := []byte{0x15, 0, 0, 0, byte(len(list)), 0}
	if pf {
		c[1] |= 0x10
	}
	if sp {
		c[1] |= 0x01
	}
	return c, list
}

func cachingPage(wce bool) []byte {
	p := bytes.Clone(goldCaching)
	if !wce {
		p[2] = 0
	}
	return p
}

func controlPage(dsense, swp bool) []byte {
	p := bytes.Clone(goldControl)
	if dsense {
		p[2] |= 0x04
	}
	if swp {
		p[4] |= 0x08
	}
	return p
}

func TestModeSelectWCE(t *testing.T) {
	e := newEnv(t, nil).login()
	cdb, list := modeSelect6(true, false, nil, cachingPage(false))
	good(t, e.run(cdb, list, 0))
	if e.lu.wce.Load() {
		t.Fatal("WCE still set")
	}
	c := e.run(modeSense6(true, 0, 0x08, 0, 255), nil, 255)
	good(t, c)
	if dataIn(c)[4+2]&0x04 != 0 {
		t.Fatal("MODE SENSE still reports WCE")
	}
	// The issuing nexus gets no unit attention, the other one does.
	good(t, e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0))
	check(t, e.runOn(e.nx2, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCModeParametersChanged)
	// Write-through: every write is FUA now.
	good(t, e.run(cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0))
	if f := e.dev.lastFlags(); f != backstore.WriteFUA {
		t.Fatalf("write flags %v with WCE=0", f)
	}
	// Re-selecting the same value changes nothing and raises no UA.
	good(t, e.run(cdb, list, 0))
	good(t, e.runOn(e.nx2, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
	// A LU reset returns to the saved (default) values.
	if err := e.r.LogicalUnitReset(EncodeLUN(0)); err != nil {
		t.Fatal(err)
	}
	if !e.lu.wce.Load() {
		t.Fatal("LU reset did not restore WCE")
	}
}

func TestModeSelectErrors(t *testing.T) {
	badRCD := cachingPage(true)
	badRCD[2] |= 0x01
	shortPage := cachingPage(true)[:10]
	shortPage[1] = 8
	badBD := hexb("00 00 08 00 00 00 10 00") // 4096-byte blocks
	tests := []struct {
		name string
		sp   bool
		pf   bool
		bd   []byte
		page []byte
		trim int // bytes cut from the end of the list
		key  SenseKey
		asc  ASC
	}{
		{"non-changeable bit", false, true, nil, badRCD, 0, KeyIllegalRequest, ASCInvalidFieldInParamList},
		{"wrong page length", false, true, nil, shortPage, 0, KeyIllegalRequest, ASCInvalidFieldInParamList},
		{"unknown page", false, true, nil, hexb("05 02 00 00"), 0, KeyIllegalRequest, ASCInvalidFieldInParamList},
		{"truncated page", false, true, nil, cachingPage(false), 3, KeyIllegalRequest, ASCParamListLengthError},
		{"save without state file", true, true, nil, cachingPage(false), 0, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"pages without PF", false, false, nil, cachingPage(false), 0, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"block length change", false, true, badBD, nil, 0, KeyIllegalRequest, ASCInvalidFieldInParamList},
		{"odd block descriptor length", false, true, make([]byte, 4), nil, 0, KeyIllegalRequest, ASCInvalidFieldInParamList},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			cdb, list := modeSelect6(tt.pf, tt.sp, tt.bd, tt.page)
			list = list[:len(list)-tt.trim]
			check(t, e.run(cdb, list, 0), StatusCheckCondition, tt.key, tt.asc)
			if !e.lu.wce.Load() {
				t.Fatal("a failed MODE SELECT changed WCE")
			}
		})
	}
	e := newEnv(t, nil)
	good(t, e.run([]byte{0x15, 0x10, 0, 0, 0, 0}, nil, 0))                                           // no parameter list
	cdb, list := modeSelect6(true, false, goldShortBD, cachingPage(true), controlPage(false, false)) // restating is fine
	good(t, e.run(cdb, list, 0))
}

func TestModeSelectSaveAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun0.mode")
	e := newEnv(t, func(c *LUConfig) { c.StatePath = path })
	cdb, list := modeSelect6(true, true, nil, cachingPage(false), controlPage(true, false))
	good(t, e.run(cdb, list, 0))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f stateFile
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 1 || f.Mode != (modeValues{WCE: false, DSense: true}) {
		t.Fatalf("state file %s: %+v %v", raw, f, err)
	}
	// Saved values read back with PC=11b.
	c := e.run(modeSense6(true, 3, 0x08, 0, 255), nil, 255)
	good(t, c)
	if dataIn(c)[6]&0x04 != 0 {
		t.Fatal("saved caching page has WCE")
	}
	// A new LU over the same state file starts with the saved values.
	lu, err := NewLU(LUConfig{Device: backstore.NewMemory(1 << 20), Serial: "X", StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if lu.wce.Load() || !lu.dsense.Load() {
		t.Fatalf("loaded %+v", lu.current())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	// A corrupt state file is an error, not silently the defaults.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLU(LUConfig{Device: backstore.NewMemory(1 << 20), Serial: "X", StatePath: path}); err == nil {
		t.Fatal("corrupt state file accepted")
	}
}

func TestDescriptorSense(t *testing.T) {
	e := newEnv(t, nil)
	cdb, list := modeSelect6(true, false, nil, controlPage(true, false))
	good(t, e.run(cdb, list, 0))
	c := e.run(cdb16(OpRead16, 0, 1<<40, 1), nil, 512)
	check(t, c, StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
	if c.Sense[0] != 0x72 {
		t.Fatalf("sense format %02x, want 72h", c.Sense[0])
	}
}

func TestSoftwareWriteProtect(t *testing.T) {
	e := newEnv(t, nil)
	cdb, list := modeSelect6(true, false, nil, controlPage(false, true))
	good(t, e.run(cdb, list, 0))
	good(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512))
	check(t, e.run(cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0), StatusCheckCondition, KeyDataProtect, ASCSoftwareWriteProtected)
	c := e.run(modeSense6(true, 0, 0x0A, 0, 255), nil, 255)
	if dataIn(c)[2]&0x80 == 0 {
		t.Fatal("WP not reported with SWP set")
	}
	cdb, list = modeSelect6(true, false, nil, controlPage(false, false))
	good(t, e.run(cdb, list, 0))
	good(t, e.run(cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0))
}
