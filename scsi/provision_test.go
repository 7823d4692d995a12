package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func thin(c *LUConfig) { c.Thin = true }

func ws10(b1 byte, lba uint32, n uint16) []byte { return cdb10(OpWriteSame10, b1, lba, n) }
func ws16(b1 byte, lba uint64, n uint32) []byte { return cdb16(OpWriteSame16, b1, lba, n) }

func TestWriteSame(t *testing.T) {
	e := newEnv(t, nil)
	pat := fill(512, 0xA6)
	pat[0] = 1
	good(t, e.run(ws10(0, 10, 300), pat, 0))
	for i := 10; i < 310; i++ {
		if !bytes.Equal(e.dev.Bytes()[i*512:(i+1)*512], pat) {
			t.Fatalf("block %d not written", i)
		}
	}
	if e.dev.Bytes()[9*512+1] != 0 || e.dev.Bytes()[310*512+1] != 0 {
		t.Fatal("wrote outside the range")
	}
	// Zero blocks means up to the last LBA (WSNZ=0).
	good(t, e.run(ws16(0, testBlocks-3, 0), pat, 0))
	if !bytes.Equal(e.dev.Bytes()[(testBlocks-1)*512:], pat) {
		t.Fatal("WRITE SAME to the end")
	}
	good(t, e.run(ws16(0, testBlocks, 0), pat, 0)) // nothing left to write
	// NDOB writes zeros without Data-Out.
	c := &Command{Nexus: e.nx, CDB: ws16(0x01, 10, 2)}
	good(t, e.exec(c, nil))
	if !bytes.Equal(e.dev.Bytes()[10*512:12*512], make([]byte, 1024)) {
		t.Fatal("NDOB did not write zeros")
	}

	tests := []struct {
		name string
		cdb  []byte
		edtl uint32
		key  SenseKey
		asc  ASC
	}{
		{"one past the end", ws10(0, testBlocks, 1), 512, KeyIllegalRequest, ASCLBAOutOfRange},
		{"zero blocks past the end", ws10(0, testBlocks+1, 0), 512, KeyIllegalRequest, ASCLBAOutOfRange},
		{"LBA 2^63", ws16(0, 1<<63, 0), 512, KeyIllegalRequest, ASCLBAOutOfRange},
		{"WRPROTECT", ws10(0x20, 0, 1), 512, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"ANCHOR without UNMAP", ws10(0x10, 0, 1), 512, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"UNMAP on a fully provisioned LU", ws10(0x08, 0, 1), 512, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"Data-Out too small", ws10(0, 0, 1), 256, KeyIllegalRequest, ASCInvalidFieldInIU},
		{"Data-Out too large", ws10(0, 0, 1), 1024, KeyIllegalRequest, ASCInvalidFieldInIU},
		{"PBDATA is obsolete", ws10(0x04, 0, 1), 512, KeyIllegalRequest, ASCInvalidFieldInCDB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Command{Nexus: e.nx, CDB: tt.cdb, ExpectedLength: tt.edtl}
			check(t, e.exec(c, fill(int(tt.edtl), 1)), StatusCheckCondition, tt.key, tt.asc)
		})
	}
}

func TestWriteSameLimitsAndPieces(t *testing.T) {
	dev := &recDevice{Memory: backstore.NewMemory(80 << 20)}
	lu, err := NewLU(LUConfig{Device: dev, Serial: "WS"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRouter([]*LU{lu})
	e := &env{t: t, dev: dev, lu: lu, r: r}
	pat := fill(512, 7)
	good(t, e.run(ws16(0, 0, 0xFFFF), pat, 0))
	if n := len(dev.flags); n != 32 { // 0xFFFF blocks in 1 MiB pieces
		t.Fatalf("%d device writes for a 32 MiB WRITE SAME, want 32", n)
	}
	check(t, e.run(ws16(0, 0, 0x10000), pat, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(ws10(0, 0, 0), pat, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB) // to the end: too long
	if got := dev.Bytes()[0xFFFF*512-1]; got != 7 {
		t.Fatalf("last block %d", got)
	}
}

func TestWriteSameUnmap(t *testing.T) {
	e := newEnv(t, thin)
	good(t, e.run(cdb10(OpWrite10, 0, 0, 64), fill(64*512, 0xFF), 0))
	good(t, e.run(ws16(0x08, 3, 58), make([]byte, 512), 0)) // blocks 3..60
	want := cat(fill(3*512, 0xFF), make([]byte, 58*512), fill(3*512, 0xFF))
	if !bytes.Equal(e.dev.Bytes()[:64*512], want) {
		t.Fatal("unmapped range does not read as zeros")
	}
	if len(e.dev.unmaps) != 1 || e.dev.unmaps[0] != [2]int64{8 * 512, 48 * 512} {
		t.Fatalf("device unmaps %v, want only whole granules [4096, 4096+24576)", e.dev.unmaps)
	}
	// GET LBA STATUS sees the hole.
	c := e.run(cdb16(OpServiceActionIn, SAGetLBAStatus, 0, 8+16*4), nil, 72)
	good(t, c)
	want = cat(hexb("00 00 00 44 00 00 00 00"),
		hexb("00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 00"),
		hexb("00 00 00 00 00 00 00 08 00 00 00 30 01 00 00 00"),
		hexb("00 00 00 00 00 00 00 38 00 00 00 08 00 00 00 00"),
		hexb("00 00 00 00 00 00 00 40 00 00 07 c0 01 00 00 00"))
	if !bytes.Equal(dataIn(c), want) {
		t.Fatalf("got  % x\nwant % x", dataIn(c), want)
	}
	// NDOB with UNMAP, no Data-Out.
	good(t, e.run(cdb10(OpWrite10, 0, 0, 16), fill(16*512, 0xFF), 0))
	cc := &Command{Nexus: e.nx, CDB: ws16(0x09, 0, 16)}
	good(t, e.exec(cc, nil))
	if !bytes.Equal(e.dev.Bytes()[:16*512], make([]byte, 16*512)) {
		t.Fatal("NDOB UNMAP left data")
	}
	// The UNMAP bit deallocates whatever the block holds (libiscsi
	// WriteSame*.UnmapUntilEnd sends 0xFF and expects zeros with LBPRZ).
	good(t, e.run(cdb10(OpWrite10, 0, 0, 16), fill(16*512, 0xFF), 0))
	good(t, e.run(ws10(0x08, 1, 7), fill(512, 0xA6), 0))
	if !bytes.Equal(e.dev.Bytes()[:9*512], cat(fill(512, 0xFF), make([]byte, 7*512), fill(512, 0xFF))) {
		t.Fatal("WRITE SAME with UNMAP and a non-zero block")
	}
	check(t, e.run(ws10(0x18, 0, 1), make([]byte, 512), 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB) // ANC_SUP=0
}

func TestWriteThroughFlushes(t *testing.T) {
	e := newEnv(t, thin)
	e.lu.wce.Store(false)
	good(t, e.run(ws10(0, 0, 8), fill(512, 1), 0))
	good(t, e.run(unmapCDBBytes(24), unmapParams([2]uint64{0, 8}), 0))
	if e.dev.flushes != 2 {
		t.Fatalf("%d flushes with WCE=0, want 2", e.dev.flushes)
	}
}

func TestUnmap(t *testing.T) {
	many := make([][2]uint64, 257)
	for i := range many {
		many[i] = [2]uint64{uint64(i), 1}
	}
	partial := unmapParams([2]uint64{8, 8})
	binary.BigEndian.PutUint16(partial[2:], 16+8) // descriptor data longer than sent
	tests := []struct {
		name  string
		cdb   []byte
		list  []byte
		key   SenseKey
		asc   ASC
		zeros [2]int // block range expected to read as zeros afterwards
	}{
		{"one range", unmapCDBBytes(24), unmapParams([2]uint64{8, 16}), 0, 0, [2]int{8, 24}},
		{"unaligned range", unmapCDBBytes(24), unmapParams([2]uint64{5, 6}), 0, 0, [2]int{5, 11}},
		{"no parameter list", unmapCDBBytes(0), nil, 0, 0, [2]int{}},
		{"no descriptors", unmapCDBBytes(8), unmapParams(), 0, 0, [2]int{}},
		{"zero blocks at the capacity", unmapCDBBytes(24), unmapParams([2]uint64{testBlocks, 0}), 0, 0, [2]int{}},
		{"overlapping zero-length descriptors", unmapCDBBytes(56), unmapParams([2]uint64{0, 0}, [2]uint64{0, 0}, [2]uint64{1, 0}), 0, 0, [2]int{}},
		{"partial trailing descriptor ignored", unmapCDBBytes(uint16(len(partial))), partial, 0, 0, [2]int{8, 16}},
		{"short parameter list", unmapCDBBytes(6), make([]byte, 6), KeyIllegalRequest, ASCParamListLengthError, [2]int{}},
		{"beyond the capacity", unmapCDBBytes(24), unmapParams([2]uint64{testBlocks - 1, 2}), KeyIllegalRequest, ASCLBAOutOfRange, [2]int{}},
		{"LBA -1", unmapCDBBytes(24), unmapParams([2]uint64{^uint64(0), 1}), KeyIllegalRequest, ASCLBAOutOfRange, [2]int{}},
		{"too many descriptors", unmapCDBBytes(uint16(8 + 16*257)), unmapParams(many...), KeyIllegalRequest, ASCInvalidFieldInParamList, [2]int{}},
		{"ANCHOR", []byte{0x42, 0x01, 0, 0, 0, 0, 0, 0, 24, 0}, unmapParams([2]uint64{0, 1}), KeyIllegalRequest, ASCInvalidFieldInCDB, [2]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, thin)
			good(t, e.run(cdb10(OpWrite10, 0, 0, 64), fill(64*512, 0xFF), 0))
			c := e.run(tt.cdb, tt.list, 0)
			if tt.key == 0 {
				good(t, c)
			} else {
				check(t, c, StatusCheckCondition, tt.key, tt.asc)
			}
			for i := 0; i < 64; i++ {
				z := i >= tt.zeros[0] && i < tt.zeros[1]
				if got := e.dev.Bytes()[i*512]; (got == 0) != z {
					t.Fatalf("block %d reads %02x, zeroed=%v expected", i, got, z)
				}
			}
		})
	}
}

func TestUnmapLimits(t *testing.T) {
	// 4096-byte blocks: MAXIMUM UNMAP LBA COUNT is 262144 (1 GiB); reach
	// it with overlapping whole-LU descriptors on an 8 MiB LU.
	e := newEnv(t, func(c *LUConfig) { c.Thin, c.BlockSize = true, 4096 })
	whole := func(n int) []byte {
		d := make([][2]uint64, n)
		for i := range d {
			d[i] = [2]uint64{0, testBlocks}
		}
		return unmapParams(d...)
	}
	good(t, e.run(unmapCDBBytes(8+16*128), whole(128), 0))
	check(t, e.run(unmapCDBBytes(8+16*129), whole(129), 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInParamList)
}

func TestUnmapNotThin(t *testing.T) {
	e := newEnv(t, nil)
	check(t, e.run(unmapCDBBytes(24), unmapParams([2]uint64{0, 1}), 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidOpcode)
	ro := newEnv(t, func(c *LUConfig) { c.ReadOnly = true })
	check(t, ro.run(unmapCDBBytes(24), unmapParams([2]uint64{0, 1}), 0), StatusCheckCondition, KeyDataProtect, ASCWriteProtected)
	// A read-only LU refuses WRITE SAME with UNMAP as write protected, even
	// without Data-Out and before looking at the UNMAP bit.
	c := &Command{Nexus: ro.nx, CDB: ws10(0x08, 0, 1)}
	check(t, ro.exec(c, nil), StatusCheckCondition, KeyDataProtect, ASCWriteProtected)
}

func TestGetLBAStatus(t *testing.T) {
	gls := func(lba uint64, alloc uint32) []byte { return cdb16(OpServiceActionIn, SAGetLBAStatus, lba, alloc) }
	e := newEnv(t, nil)
	c := e.run(gls(100, 24), nil, 24)
	good(t, c)
	want := hexb("00 00 00 14 00 00 00 00 00 00 00 00 00 00 00 64 00 00 07 9c 00 00 00 00")
	if !bytes.Equal(dataIn(c), want) {
		t.Fatalf("got  % x\nwant % x", dataIn(c), want)
	}
	for _, lba := range []uint64{testBlocks, testBlocks + 1, 1 << 63, ^uint64(0)} {
		check(t, e.run(gls(lba, 24), nil, 24), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
	}
	good(t, e.run(gls(testBlocks-1, 24), nil, 24))
	good(t, e.run(gls(0, 0), nil, 0))

	// libiscsi GetLBAStatus.UnmapSingle: unmap one physical block, the
	// next one starts a mapped descriptor.
	th := newEnv(t, thin)
	good(t, th.run(cdb10(OpWrite10, 0, 0, 264), fill(264*512, 'A'), 0))
	for i := uint64(0); i+8 <= 256; i += 8 {
		good(t, th.run(unmapCDBBytes(24), unmapParams([2]uint64{i, 8}), 0))
		c := th.run(gls(i+8, 24), nil, 24)
		good(t, c)
		d := dataIn(c)[8:]
		if binary.BigEndian.Uint64(d[0:8]) != i+8 || d[12] != 0 {
			t.Fatalf("after unmapping %d: descriptor % x", i, d)
		}
		c = th.run(gls(i, 24), nil, 24)
		if d := dataIn(c)[8:]; binary.BigEndian.Uint64(d[0:8]) != i || d[12] != 1 || binary.BigEndian.Uint32(d[8:12]) != 8 {
			t.Fatalf("unmapped block %d: descriptor % x", i, d)
		}
	}
}
