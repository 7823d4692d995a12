package scsi

import (
	"errors"
	"testing"
)

func TestDecodeBlock(t *testing.T) {
	tests := []struct {
		name string
		cdb  []byte
		want blockCDB
	}{
		{"READ(6) zero length means 256", []byte{0x08, 0x1F, 0xFF, 0xFE, 0x00, 0}, blockCDB{LBA: 0x1FFFFE, Blocks: 256}},
		{"WRITE(6)", []byte{0x0A, 0x01, 0x02, 0x03, 0x04, 0}, blockCDB{LBA: 0x010203, Blocks: 4}},
		{"READ(10) DPO FUA", []byte{0x28, 0x18, 0x12, 0x34, 0x56, 0x78, 0x00, 0x01, 0x00, 0}, blockCDB{LBA: 0x12345678, Blocks: 256, DPO: true, FUA: true}},
		{"WRITE(10) WRPROTECT", []byte{0x2A, 0x60, 0, 0, 0, 1, 0, 0, 2, 0}, blockCDB{LBA: 1, Blocks: 2, Protect: 3}},
		{"READ(12)", []byte{0xA8, 0x08, 0, 0, 0x10, 0, 0, 1, 0, 0, 0, 0}, blockCDB{LBA: 0x1000, Blocks: 0x10000, FUA: true}},
		{"WRITE(16)", []byte{0x8A, 0x08, 0x01, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 8, 0, 0}, blockCDB{LBA: 1<<56 | 2, Blocks: 8, FUA: true}},
		{"VERIFY(10) BYTCHK 01b", []byte{0x2F, 0x12, 0, 0, 0, 9, 0, 0, 1, 0}, blockCDB{LBA: 9, Blocks: 1, DPO: true, ByteChk: 1}},
		{"VERIFY(16) BYTCHK 11b", []byte{0x8F, 0x06, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0}, blockCDB{LBA: 9, Blocks: 4, ByteChk: 3}},
		{"WRITE AND VERIFY(12)", []byte{0xAE, 0x02, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}, blockCDB{LBA: 1, Blocks: 2, ByteChk: 1}},
		{"SYNCHRONIZE CACHE(10) IMMED", []byte{0x35, 0x02, 0, 0, 0, 5, 0, 0, 7, 0}, blockCDB{LBA: 5, Blocks: 7, Immed: true}},
		{"PRE-FETCH(16)", []byte{0x90, 0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0}, blockCDB{LBA: 1, Blocks: 3, Immed: true}},
		{"WRITE SAME(10) UNMAP ANCHOR", []byte{0x41, 0x18, 0, 0, 0, 1, 0, 0, 2, 0}, blockCDB{LBA: 1, Blocks: 2, Unmap: true, Anchor: true}},
		{"WRITE SAME(16) NDOB", []byte{0x93, 0x09, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0}, blockCDB{LBA: 1, Blocks: 256, Unmap: true, NDOB: true}},
		{"COMPARE AND WRITE", []byte{0x89, 0x18, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0}, blockCDB{LBA: 7, Blocks: 3, DPO: true, FUA: true}},
		{"ORWRITE(16)", []byte{0x8B, 0x08, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0}, blockCDB{LBA: 7, Blocks: 3, FUA: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decodeBlock(tt.cdb); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeControl(t *testing.T) {
	if got, want := decodeInquiry([]byte{0x12, 1, 0x83, 0x01, 0x00, 0}), (inquiryCDB{EVPD: true, Page: 0x83, AllocLen: 256}); got != want {
		t.Errorf("INQUIRY: got %+v, want %+v", got, want)
	}
	if got, want := decodeModeSense([]byte{0x5A, 0x18, 0x48, 0x00, 0, 0, 0, 0x10, 0x00, 0}), (modeSenseCDB{Ten: true, DBD: true, LLBAA: true, PC: 1, Page: 8, AllocLen: 4096}); got != want {
		t.Errorf("MODE SENSE(10): got %+v, want %+v", got, want)
	}
	if got, want := decodeModeSense([]byte{0x1A, 0x08, 0xFF, 0xFF, 0xC0, 0}), (modeSenseCDB{DBD: true, PC: 3, Page: 0x3F, Subpage: 0xFF, AllocLen: 0xC0}); got != want {
		t.Errorf("MODE SENSE(6): got %+v, want %+v", got, want)
	}
	if got, want := decodeModeSelect([]byte{0x15, 0x11, 0, 0, 0x18, 0}), (modeSelectCDB{PF: true, SP: true, ParamLen: 0x18}); got != want {
		t.Errorf("MODE SELECT(6): got %+v, want %+v", got, want)
	}
	if got, want := decodeRSOC([]byte{0xA3, 0x0C, 0x83, 0x9E, 0x00, 0x10, 0, 0, 0x10, 0, 0, 0}), (rsocCDB{RCTD: true, Options: 3, Opcode: 0x9E, SA: 0x10, AllocLen: 0x1000}); got != want {
		t.Errorf("RSOC: got %+v, want %+v", got, want)
	}
	if got, want := decodeStartStop([]byte{0x1B, 1, 0, 0x0F, 0x37, 0}), (startStopCDB{Immed: true, PCM: 0xF, PowerCond: 3, NoFlush: true, LoEj: true, Start: true}); got != want {
		t.Errorf("START STOP UNIT: got %+v, want %+v", got, want)
	}
	if got, want := decodeReportLUNs([]byte{0xA0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0}), (reportLUNsCDB{Select: 2, AllocLen: 256}); got != want {
		t.Errorf("REPORT LUNS: got %+v, want %+v", got, want)
	}
	if got, want := decodeLBAStatus(cdb16(OpServiceActionIn, SAGetLBAStatus, 5, 24)), (lbaStatusCDB{LBA: 5, AllocLen: 24}); got != want {
		t.Errorf("GET LBA STATUS: got %+v, want %+v", got, want)
	}
	if got, want := decodeDefect([]byte{0xB7, 0x1D, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}), (defectCDB{Twelve: true, PList: true, GList: true, Format: 5, AllocLen: 8}); got != want {
		t.Errorf("READ DEFECT DATA(12): got %+v, want %+v", got, want)
	}
}

func TestCheckUsage(t *testing.T) {
	tests := []struct {
		name string
		cdb  []byte
		want error // nil or a Sense
	}{
		{"READ(10) clean", cdb10(OpRead10, 0x18, 0, 1), nil},
		{"READ(10) padded to 16 bytes", append(cdb10(OpRead10, 0, 0, 1), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), nil},
		{"WRITE(10) reserved bit 2 of byte 1", cdb10(OpWrite10, 0x04, 0, 1), invalidCDB(1, 2)},
		{"READ(10) NACA in control byte", append(cdb10(OpRead10, 0, 0, 1)[:9], 0x04), invalidCDB(9, 2)},
		{"INQUIRY CMDDT", []byte{0x12, 0x02, 0, 0, 36, 0}, invalidCDB(1, 1)},
		{"TEST UNIT READY reserved byte", []byte{0x00, 0, 0, 0x80, 0, 0}, invalidCDB(3, 7)},
		{"READ CAPACITY(16) service action bits are not reserved", readCap16CDB(32), nil},
		{"READ CAPACITY(16) reserved bit 5 of byte 1", func() []byte { c := readCap16CDB(32); c[1] |= 0x20; return c }(), invalidCDB(1, 5)},
		{"short CDB", []byte{0x28, 0, 0, 0}, invalidCDB(4, -1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := lookupOp(&sbcOps, tt.cdb)
			if err != nil {
				t.Fatalf("lookupOp: %v", err)
			}
			got := e.checkUsage(tt.cdb)
			if (got == nil) != (tt.want == nil) || (got != nil && got.(Sense) != tt.want.(Sense)) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLookupOp(t *testing.T) {
	if _, err := lookupOp(&sbcOps, []byte{0xC0}); !errors.Is(err, ErrInvalidOpcode) {
		t.Errorf("vendor opcode: got %v", err)
	}
	if _, err := lookupOp(&sbcOps, []byte{0x9E, 0x11}); err == nil || err.(Sense) != invalidCDB(1, 4).(Sense) {
		t.Errorf("unknown service action: got %v", err)
	}
	e, err := lookupOp(&sbcOps, []byte{0xA3, 0xEC})
	if err != nil || e.usage[1] != SAReportSupportedOpcodes {
		t.Errorf("service action ignores the upper bits of byte 1: %v", err)
	}
	// Every usage map starts with its opcode and matches the CDB group length.
	for i := range sbcOps {
		for _, e := range append([]opEntry{sbcOps[i]}, sbcOps[i].sas...) {
			if e.plan == nil {
				continue
			}
			if e.usage[0] != byte(i) || len(e.usage) != cdbLen(OpCode(i)) {
				t.Errorf("opcode %02x: usage % x", i, e.usage)
			}
		}
	}
}

func TestLUNEncoding(t *testing.T) {
	tests := []struct {
		id  uint16
		raw uint64
	}{
		{0, 0},
		{1, 0x0001_0000_0000_0000},
		{255, 0x00FF_0000_0000_0000},
		{256, 0x4100_0000_0000_0000},
		{16383, 0x7FFF_0000_0000_0000},
	}
	for _, tt := range tests {
		if got := EncodeLUN(tt.id); got != tt.raw {
			t.Errorf("EncodeLUN(%d) = %016x, want %016x", tt.id, got, tt.raw)
		}
		if id, ok := DecodeLUN(tt.raw); !ok || id != tt.id {
			t.Errorf("DecodeLUN(%016x) = %d, %v", tt.raw, id, ok)
		}
	}
	for _, raw := range []uint64{
		0x0100_0000_0000_0000, // peripheral, bus 1
		0x0001_0001_0000_0000, // second level
		0x8001_0000_0000_0000, // logical unit addressing
		0xC101_0000_0000_0000, // extended
		0x0000_0000_0000_0001,
	} {
		if _, ok := DecodeLUN(raw); ok {
			t.Errorf("DecodeLUN(%016x) accepted", raw)
		}
	}
	if id, ok := DecodeLUN(0x4005_0000_0000_0000); !ok || id != 5 {
		t.Errorf("flat space LUN 5: %d %v", id, ok)
	}
}
