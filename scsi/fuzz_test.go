package scsi

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Fuzz configuration bits (the cfg argument of FuzzCDB).
const (
	fzThin      = 1 << iota // thin provisioned LU
	fzRemovable             // removable LU
	fzReadOnly              // write-protected LU
	fzBig                   // 4096-byte blocks
	fzNexus                 // a registered nexus (power-on unit attention pending)
	fzNoLU                  // address a LUN without LU
	fzDSense                // descriptor format sense
	fzEjected               // medium ejected (with fzRemovable)
)

const fuzzDevSize = 256 << 10

type cdbSeed struct {
	name string
	cdb  []byte
	data []byte
	edtl uint32
	cfg  byte
}

// cdbSeeds are the golden commands of the table tests.
func cdbSeeds() []cdbSeed {
	caw := cdb16(OpCompareAndWrite, 0, 0, 0)
	caw[13] = 1
	return []cdbSeed{
		{"tur", tur, nil, 0, fzNexus},
		{"inquiry_std", inquiryCDBBytes(false, 0, 96), nil, 96, 0},
		{"inquiry_vpd83", inquiryCDBBytes(true, 0x83, 255), nil, 255, 0},
		{"inquiry_vpdb0_thin", inquiryCDBBytes(true, 0xB0, 64), nil, 64, fzThin},
		{"inquiry_nolu", inquiryCDBBytes(false, 0, 36), nil, 36, fzNoLU},
		{"request_sense_desc", requestSense(true, 252), nil, 252, fzNexus},
		{"report_luns", []byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256, 0},
		{"read_capacity10", []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8, 0},
		{"read_capacity16", readCap16CDB(32), nil, 32, fzThin | fzBig},
		{"mode_sense6_all", modeSense6(false, 0, 0x3F, 0xFF, 255), nil, 255, fzReadOnly},
		{"mode_sense10_llbaa", []byte{0x5A, 0x10, 0x3F, 0, 0, 0, 0, 1, 0, 0}, nil, 256, 0},
		{"mode_select_wce", []byte{0x15, 0x10, 0, 0, 24, 0}, cat(make([]byte, 4), cachingPage(false)), 24, 0},
		{"read10", cdb10(OpRead10, 0x18, 1, 2), nil, 1024, 0},
		{"read10_short_edtl", cdb10(OpRead10, 0, 0, 1), nil, 200, 0},
		{"read6_256", cdb6(OpRead6, 0, 0), nil, 256 * 512, 0},
		{"write10_fua", cdb10(OpWrite10, 0x08, 1, 1), fill(512, 7), 512, 0},
		{"write16_partial", cdb16(OpWrite16, 0, 0, 2), fill(700, 7), 700, 0},
		{"write12_ro", cdb12(OpWrite12, 0, 0, 1), fill(512, 7), 512, fzReadOnly},
		{"verify10_bytchk", cdb10(OpVerify10, 0x02, 0, 1), make([]byte, 512), 512, 0},
		{"verify16_bytchk3", cdb16(OpVerify16, 0x06, 0, 4), make([]byte, 512), 512, 0},
		{"write_verify12", cdb12(OpWriteAndVerify12, 0x02, 0, 1), fill(512, 1), 512, 0},
		{"sync_cache16", cdb16(OpSyncCache16, 0x02, 0, 0), nil, 0, 0},
		{"prefetch10", cdb10(OpPreFetch10, 0x02, 0, 8), nil, 0, 0},
		{"write_same10", ws10(0, 0, 0), fill(512, 9), 512, 0},
		{"write_same16_unmap_ndob", ws16(0x09, 3, 40), nil, 0, fzThin},
		{"unmap", unmapCDBBytes(24), unmapParams([2]uint64{5, 20}), 24, fzThin},
		{"get_lba_status", cdb16(OpServiceActionIn, SAGetLBAStatus, 0, 64), nil, 64, fzThin},
		{"rsoc_all_rctd", rsocBytes(true, 0, 0, 0, 4096), nil, 4096, 0},
		{"rsoc_one", rsocBytes(false, 3, 0x9E, 0x10, 64), nil, 64, 0},
		{"rstmf", []byte{0xA3, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0}, nil, 16, 0},
		{"start_stop_eject", startStop(false, 0, false, true, false), nil, 0, fzRemovable},
		{"read_ejected", cdb10(OpRead10, 0, 0, 1), nil, 512, fzRemovable | fzEjected},
		{"prevent", preventOn, nil, 0, fzRemovable},
		{"compare_and_write", caw, make([]byte, 1024), 1024, 0},
		{"orwrite", cdb16(OpORWrite16, 0, 0, 1), fill(512, 3), 512, 0},
		{"read_defect_data12", []byte{0xB7, 0x18, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, nil, 8, 0},
		{"dsense_lba_oob", cdb16(OpRead16, 0, 1<<40, 1), nil, 512, fzDSense},
		{"vendor_opcode", []byte{0xC5, 0, 0, 0, 0, 0}, nil, 0, 0},
	}
}

func fuzzLU(t *testing.T, cfg byte) *env {
	e := &env{t: t, nx: &Nexus{Key: NexusKey{InitiatorName: "iqn.fuzz", TargetName: "iqn.t", TPGT: 1}, RelativeTargetPortID: 1}}
	lc := LUConfig{Serial: "FUZZ", Thin: cfg&fzThin != 0, Removable: cfg&fzRemovable != 0, ReadOnly: cfg&fzReadOnly != 0}
	if cfg&fzBig != 0 {
		lc.BlockSize = 4096
	}
	e.dev = &recDevice{Memory: backstore.NewMemory(fuzzDevSize)}
	lc.Device = e.dev
	var err error
	if e.lu, err = NewLU(lc); err != nil {
		t.Fatal(err)
	}
	if e.r, err = NewRouter([]*LU{e.lu}); err != nil {
		t.Fatal(err)
	}
	if cfg&fzNexus != 0 {
		e.r.NexusAdded(e.nx)
	}
	e.lu.dsense.Store(cfg&fzDSense != 0)
	e.lu.ejected.Store(cfg&fzEjected != 0 && cfg&fzRemovable != 0)
	return e
}

// checkOutcome asserts the invariants every completed command satisfies.
func checkOutcome(t *testing.T, c *Command) {
	t.Helper()
	switch c.Status {
	case StatusGood:
		if c.SenseLen != 0 {
			t.Fatalf("GOOD with %d sense bytes", c.SenseLen)
		}
		return
	case StatusCheckCondition:
	default:
		t.Fatalf("status %v", c.Status)
	}
	s := c.SenseData()
	switch {
	case len(s) == fixedSenseLen && s[0]&0x7F == 0x70:
		if s[7] != fixedSenseLen-8 {
			t.Fatalf("fixed sense additional length % x", s)
		}
	case len(s) >= descHeaderLen && s[0] == 0x72:
		if int(s[7]) != len(s)-descHeaderLen {
			t.Fatalf("descriptor sense additional length % x", s)
		}
		for p := descHeaderLen; p < len(s); p += 2 + int(s[p+1]) {
			if p+2 > len(s) || p+2+int(s[p+1]) > len(s) {
				t.Fatalf("descriptor overruns the sense data % x", s)
			}
		}
	default:
		t.Fatalf("malformed sense % x", s)
	}
	if k, a, _, _ := parseSense(s); k == KeyNoSense || (a == 0 && k != KeyAbortedCommand) {
		t.Fatalf("CHECK CONDITION with %v/%v", k, a)
	}
}

func FuzzCDB(f *testing.F) {
	for _, s := range cdbSeeds() {
		f.Add(s.cdb, s.data, s.edtl, s.cfg)
	}
	f.Fuzz(func(t *testing.T, cdb, data []byte, edtl uint32, cfg byte) {
		if len(cdb) > MaxCDBLen {
			cdb = cdb[:MaxCDBLen]
		}
		e := fuzzLU(t, cfg)
		lun := uint16(0)
		if cfg&fzNoLU != 0 {
			lun = 1
		}
		c := &Command{Nexus: e.nx, LUN: EncodeLUN(lun), CDB: cdb, ExpectedLength: min(edtl, 16<<20), Tag: 1}
		e.r.Plan(c)
		planned := c.XferLen
		if planned > maxTransferBytes {
			t.Fatalf("planned XferLen %d exceeds 8 MiB", planned)
		}
		if !c.Done() {
			want := min(c.XferLen, c.ExpectedLength)
			switch c.Dir {
			case DirOut:
				c.DataOut = data[:min(int(want), len(data))]
			case DirIn:
				c.DataIn = make([]byte, want)
			}
			e.r.Execute(context.Background(), c)
			if !c.Done() {
				t.Fatal("not done after Execute")
			}
			if c.Dir == DirIn && c.XferLen > planned {
				t.Fatalf("XferLen grew from %d to %d", planned, c.XferLen)
			}
		}
		checkOutcome(t, c)
		if e.r.Panics() != 0 {
			t.Fatal("a handler panicked")
		}
		if cfg&fzReadOnly != 0 && len(e.dev.flags) != 0 {
			t.Fatal("a write reached a read-only LU's device")
		}
	})
}

type modeSelectSeed struct {
	name        string
	list        []byte
	ten, sp, pf bool
}

func modeSelectSeeds() []modeSelectSeed {
	return []modeSelectSeed{
		{"wce_off", cat(make([]byte, 4), cachingPage(false)), false, false, true},
		{"dsense_swp_saved", cat(make([]byte, 4), controlPage(true, true)), false, true, true},
		{"all_pages_10", cat(hexb("00 00 00 00 00 00 00 08"), goldShortBD, goldAllPages), true, true, true},
		{"long_bd_subpage", cat(hexb("00 00 00 00 01 00 00 10"), hexb("00 00 00 00 00 00 08 00 00 00 00 00 00 00 02 00"), goldCtlExt), true, false, true},
		{"truncated", cat(make([]byte, 4), goldInfoExc[:5]), false, false, true},
		{"bad_rcd", cat(make([]byte, 4), hexb("08 12 05"), make([]byte, 17)), false, false, true},
		{"lbp_threshold", cat(make([]byte, 8), hexb("5c 02 00 14 01 00 00 00 00 00 00 00 00 00 00 00 81 02 00 00 00 00 00 09")), true, true, true},
	}
}

type unmapSeed struct {
	name     string
	list     []byte
	paramLen uint16
	anchor   bool
}

func unmapSeeds() []unmapSeed {
	return []unmapSeed{
		{"one", unmapParams([2]uint64{5, 20}), 24, false},
		{"three", unmapParams([2]uint64{0, 8}, [2]uint64{500, 12}, [2]uint64{3, 0}), 56, false},
		{"beyond_end", unmapParams([2]uint64{511, 2}), 24, false},
		{"empty", unmapParams(), 8, false},
		{"short", make([]byte, 6), 6, false},
		{"anchor", unmapParams([2]uint64{1, 1}), 24, true},
	}
}

func FuzzModeSelect(f *testing.F) {
	for _, s := range modeSelectSeeds() {
		f.Add(s.list, s.ten, s.sp, s.pf)
	}
	f.Fuzz(func(t *testing.T, list []byte, ten, sp, pf bool) {
		path := filepath.Join(t.TempDir(), "mode")
		e := newEnv(t, func(c *LUConfig) { c.StatePath, c.Thin = path, true })
		var cdb []byte
		if ten {
			list = list[:min(len(list), 0xFFFF)]
			cdb = []byte{0x55, 0, 0, 0, 0, 0, 0, byte(len(list) >> 8), byte(len(list)), 0}
		} else {
			list = list[:min(len(list), 0xFF)]
			cdb = []byte{0x15, 0, 0, 0, byte(len(list)), 0}
		}
		if pf {
			cdb[1] |= 0x10
		}
		if sp {
			cdb[1] |= 0x01
		}
		before := e.lu.current()
		c := e.run(cdb, list, 0)
		checkOutcome(t, c)
		if c.Status != StatusGood {
			if k, _, _, _ := parseSense(c.SenseData()); k != KeyIllegalRequest {
				t.Fatalf("sense key %v", k)
			}
			if e.lu.current() != before {
				t.Fatal("a refused MODE SELECT changed the current values")
			}
			if _, err := os.Stat(path); err == nil {
				t.Fatal("a refused MODE SELECT saved")
			}
			return
		}
		// The pages still describe the same device apart from the
		// changeable bits, and report the new current values.
		ms := e.run(modeSense6(true, 0, 0x3F, 0xFF, 255), nil, 255)
		var want []byte
		for _, p := range e.lu.selectPages(pageAll, subpageAll) {
			want = append(want, e.lu.build(p, e.lu.current(), false)...)
		}
		if got := dataIn(ms)[4:]; !bytes.Equal(got, want) {
			t.Fatalf("pages after MODE SELECT\n got % x\nwant % x", got, want)
		}
		if sp {
			if v, err := loadModeValues(path); err != nil || v != e.lu.current() {
				t.Fatalf("saved %+v (%v), current %+v", v, err, e.lu.current())
			}
		}
	})
}

func FuzzUnmapParams(f *testing.F) {
	for _, s := range unmapSeeds() {
		f.Add(s.list, s.paramLen, s.anchor)
	}
	f.Fuzz(func(t *testing.T, list []byte, paramLen uint16, anchor bool) {
		e := fuzzLU(t, fzThin)
		blocks := fuzzDevSize / 512
		good(t, e.run(cdb10(OpWrite10, 0, 0, uint16(blocks)), fill(fuzzDevSize, 0xFF), 0))
		cdb := unmapCDBBytes(paramLen)
		if anchor {
			cdb[1] = 1
		}
		c := e.run(cdb, list, 0)
		checkOutcome(t, c)
		img := e.dev.Bytes()
		if c.Status != StatusGood {
			if !bytes.Equal(img, fill(fuzzDevSize, 0xFF)) {
				t.Fatal("a refused UNMAP changed the medium")
			}
			return
		}
		// Independently work out which blocks the list covers.
		zero := make([]bool, blocks)
		data := list[:min(len(list), int(paramLen))]
		if len(data) >= 8 {
			bd := min(int(be.Uint16(data[2:4])), len(data)-8) / 16 * 16
			for p := 8; p < 8+bd; p += 16 {
				lba, n := be.Uint64(data[p:]), uint64(be.Uint32(data[p+8:]))
				for b := lba; b < lba+n; b++ {
					zero[b] = true
				}
			}
		}
		for b := 0; b < blocks; b++ {
			want := byte(0xFF)
			if zero[b] {
				want = 0
			}
			if !bytes.Equal(img[b*512:(b+1)*512], fill(512, want)) {
				t.Fatalf("block %d: want all %02x", b, want)
			}
		}
	})
}

// TestFuzzCorpus checks that the seed corpora under testdata/fuzz match
// the golden cases above; SCSI_WRITE_FUZZ_CORPUS=1 (re)writes them.
func TestFuzzCorpus(t *testing.T) {
	files := map[string]string{}
	for _, s := range cdbSeeds() {
		files[filepath.Join("FuzzCDB", "seed_"+s.name)] = fmt.Sprintf("[]byte(%q)\n[]byte(%q)\nuint32(%d)\nbyte(%q)\n", s.cdb, s.data, s.edtl, s.cfg)
	}
	for _, s := range modeSelectSeeds() {
		files[filepath.Join("FuzzModeSelect", "seed_"+s.name)] = fmt.Sprintf("[]byte(%q)\nbool(%v)\nbool(%v)\nbool(%v)\n", s.list, s.ten, s.sp, s.pf)
	}
	for _, s := range unmapSeeds() {
		files[filepath.Join("FuzzUnmapParams", "seed_"+s.name)] = fmt.Sprintf("[]byte(%q)\nuint16(%d)\nbool(%v)\n", s.list, s.paramLen, s.anchor)
	}
	write := os.Getenv("SCSI_WRITE_FUZZ_CORPUS") != ""
	for name, body := range files {
		p := filepath.Join("testdata", "fuzz", name)
		body = "go test fuzz v1\n" + body
		if write {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(p); err != nil || string(got) != body {
			t.Errorf("%s is missing or stale; run the test with SCSI_WRITE_FUZZ_CORPUS=1", p)
		}
	}
}
