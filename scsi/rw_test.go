package scsi

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"unsafe"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func TestReadWriteRoundTrip(t *testing.T) {
	forms := []struct {
		name         string
		read, write  func(lba uint64, n uint32) []byte
		maxLBA, maxN uint64
	}{
		{"6", func(l uint64, n uint32) []byte { return cdb6(OpRead6, uint32(l), uint8(n)) },
			func(l uint64, n uint32) []byte { return cdb6(OpWrite6, uint32(l), uint8(n)) }, 1 << 21, 255},
		{"10", func(l uint64, n uint32) []byte { return cdb10(OpRead10, 0, uint32(l), uint16(n)) },
			func(l uint64, n uint32) []byte { return cdb10(OpWrite10, 0, uint32(l), uint16(n)) }, 1 << 32, 1 << 16},
		{"12", func(l uint64, n uint32) []byte { return cdb12(OpRead12, 0, uint32(l), n) },
			func(l uint64, n uint32) []byte { return cdb12(OpWrite12, 0, uint32(l), n) }, 1 << 32, 1 << 32},
		{"16", func(l uint64, n uint32) []byte { return cdb16(OpRead16, 0, l, n) },
			func(l uint64, n uint32) []byte { return cdb16(OpWrite16, 0, l, n) }, 1 << 63, 1 << 32},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			e := newEnv(t, nil)
			for _, tc := range []struct{ lba, n uint64 }{{0, 1}, {7, 3}, {testBlocks - 5, 5}, {100, 200}} {
				data := make([]byte, tc.n*512)
				for i := range data {
					data[i] = byte(i*7 + int(tc.lba))
				}
				good(t, e.run(f.write(tc.lba, uint32(tc.n)), data, 0))
				if got := e.dev.Bytes()[tc.lba*512 : (tc.lba+tc.n)*512]; !bytes.Equal(got, data) {
					t.Fatalf("lba %d n %d: medium differs", tc.lba, tc.n)
				}
				c := e.run(f.read(tc.lba, uint32(tc.n)), nil, int(tc.n*512))
				good(t, c)
				if !bytes.Equal(dataIn(c), data) || c.XferLen != uint32(tc.n*512) {
					t.Fatalf("lba %d n %d: read back differs", tc.lba, tc.n)
				}
			}
		})
	}
}

func TestReadWriteRangeAndFields(t *testing.T) {
	const nb = testBlocks
	tests := []struct {
		name string
		cdb  []byte
		key  SenseKey
		asc  ASC
	}{
		{"READ(10) one block past the end", cdb10(OpRead10, 0, nb, 1), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) last block plus one", cdb10(OpRead10, 0, nb-1, 2), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) LBA 2^31", cdb10(OpRead10, 0, 1<<31, 1), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) LBA -1", cdb10(OpRead10, 0, 0xFFFFFFFF, 1), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(16) LBA -1 wraps", cdb16(OpRead16, 0, ^uint64(0), 2), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) zero blocks past the end", cdb10(OpRead10, 0, nb+1, 0), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) zero blocks at the end", cdb10(OpRead10, 0, nb, 0), 0, 0},
		{"WRITE(10) zero blocks at LBA -1", cdb10(OpWrite10, 0, 0xFFFFFFFF, 0), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(6) past the end", cdb6(OpRead6, nb, 1), KeyIllegalRequest, ASCLBAOutOfRange},
		{"READ(10) RDPROTECT", cdb10(OpRead10, 0x20, 0, 1), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"WRITE(16) WRPROTECT", cdb16(OpWrite16, 0xE0, 0, 1), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"READ(10) DPO FUA accepted", cdb10(OpRead10, 0x18, 0, 1), 0, 0},
		{"WRITE(10) FUA_NV accepted", cdb10(OpWrite10, 0x02, 0, 1), 0, 0},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.run(tt.cdb, make([]byte, 512), 512)
			if tt.key == 0 {
				good(t, c)
				return
			}
			check(t, c, StatusCheckCondition, tt.key, tt.asc)
		})
	}
}

func TestMaximumTransferLength(t *testing.T) {
	dev := &recDevice{Memory: backstore.NewMemory(64 << 20)}
	lu, err := NewLU(LUConfig{Device: dev, Serial: "BIG"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRouter([]*LU{lu})
	e := &env{t: t, dev: dev, lu: lu, r: r}
	good(t, e.run(cdb10(OpRead10, 0, 0, 16384), nil, 8<<20))
	c := e.run(cdb10(OpRead10, 0, 0, 16385), nil, 8<<20)
	check(t, c, StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	if c.Sense[15] != 0xC0 || c.Sense[17] != 7 {
		t.Fatalf("field pointer % x, want the TRANSFER LENGTH byte 7", c.Sense[15:18])
	}
	good(t, e.run(cdb6(OpRead6, 0, 0), nil, 256*512)) // READ(6) length 0 is 256 blocks
}

func TestRead6ZeroIs256Blocks(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run(cdb6(OpRead6, 0, 0), nil, 256*512)
	good(t, c)
	if c.XferLen != 256*512 {
		t.Fatalf("XferLen %d", c.XferLen)
	}
}

func TestWriteCacheAndFUA(t *testing.T) {
	e := newEnv(t, nil)
	block := make([]byte, 512)
	good(t, e.run(cdb10(OpWrite10, 0, 0, 1), block, 0))
	if f := e.dev.lastFlags(); f != 0 {
		t.Fatalf("WCE=1 without FUA: flags %v", f)
	}
	good(t, e.run(cdb10(OpWrite10, 0x08, 0, 1), block, 0))
	if f := e.dev.lastFlags(); f != backstore.WriteFUA {
		t.Fatalf("FUA write: flags %v", f)
	}
	good(t, e.run(cdb16(OpWrite16, 0x08, 0, 1), block, 0))
	if f := e.dev.lastFlags(); f != backstore.WriteFUA {
		t.Fatalf("FUA WRITE(16): flags %v", f)
	}
	e.lu.wce.Store(false)
	good(t, e.run(cdb6(OpWrite6, 0, 1), block, 0))
	if f := e.dev.lastFlags(); f != backstore.WriteFUA {
		t.Fatalf("WCE=0: flags %v", f)
	}
}

func TestResiduals(t *testing.T) {
	e := newEnv(t, nil)
	a, b := fill(1024, 'a'), fill(10000, 'b')
	good(t, e.run(cdb10(OpWrite10, 0, 0, 2), a, 0))

	// EDTL 0: nothing arrives, nothing is written, GOOD.
	c := &Command{Nexus: e.nx, CDB: cdb10(OpWrite10, 0, 0, 1), ExpectedLength: 0}
	good(t, e.exec(c, nil))
	// EDTL 200: a partial block is refused and nothing is written.
	c = &Command{Nexus: e.nx, CDB: cdb10(OpWrite10, 0, 0, 1), ExpectedLength: 200}
	check(t, e.exec(c, b[:200]), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInIU)
	// EDTL one block for a two-block write: the first block only.
	c = &Command{Nexus: e.nx, CDB: cdb10(OpWrite10, 0, 0, 2), ExpectedLength: 512}
	good(t, e.exec(c, b[:512]))
	if got := e.dev.Bytes()[:1024]; !bytes.Equal(got, cat(fill(512, 'b'), fill(512, 'a'))) {
		t.Fatal("EDTL < TL did not write exactly EDTL")
	}
	// EDTL two blocks for a one-block write: only the CDB's block.
	good(t, e.run(cdb10(OpWrite10, 0, 0, 2), a, 0))
	c = &Command{Nexus: e.nx, CDB: cdb10(OpWrite10, 0, 0, 1), ExpectedLength: 1024}
	good(t, e.exec(c, b[:1024]))
	if c.XferLen != 512 {
		t.Fatalf("XferLen %d, want 512", c.XferLen)
	}
	if got := e.dev.Bytes()[:1024]; !bytes.Equal(got, cat(fill(512, 'b'), fill(512, 'a'))) {
		t.Fatal("EDTL > TL wrote more than TL")
	}
	// Reads: produce min(TL, EDTL) bytes, report TL.
	for _, tc := range []struct{ blocks, edtl, want int }{{1, 200, 200}, {2, 512, 512}, {1, 10000, 512}, {1, 0, 0}} {
		c := &Command{Nexus: e.nx, CDB: cdb10(OpRead10, 0, 0, uint16(tc.blocks)), ExpectedLength: uint32(tc.edtl)}
		good(t, e.exec(c, nil))
		if c.XferLen != uint32(tc.blocks*512) || len(dataIn(c)) != tc.want || !bytes.Equal(dataIn(c), fill(tc.want, 'b')) {
			t.Fatalf("read %d blocks EDTL %d: XferLen %d, %d bytes", tc.blocks, tc.edtl, c.XferLen, len(dataIn(c)))
		}
	}
}

func TestDeviceErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*recDevice)
		cdb   []byte
		out   []byte
		key   SenseKey
		asc   ASC
		info  uint64
	}{
		{"read I/O error", func(d *recDevice) { d.readErr = fmt.Errorf("pread: %w", backstore.ErrIO) },
			cdb10(OpRead10, 0, 42, 1), nil, KeyMediumError, ASCUnrecoveredReadError, 42},
		{"write I/O error", func(d *recDevice) { d.writeErr = backstore.ErrIO },
			cdb10(OpWrite10, 0, 9, 1), make([]byte, 512), KeyMediumError, ASCWriteError, 9},
		{"no space", func(d *recDevice) { d.writeErr = backstore.ErrNoSpace },
			cdb10(OpWrite10, 0, 9, 1), make([]byte, 512), KeyDataProtect, ASCSpaceAllocFailedWP, 0},
		{"device read-only", func(d *recDevice) { d.writeErr = backstore.ErrReadOnly },
			cdb10(OpWrite10, 0, 9, 1), make([]byte, 512), KeyDataProtect, ASCWriteProtected, 0},
		{"flush failure", func(d *recDevice) { d.flushErr = backstore.ErrIO },
			cdb10(OpSyncCache10, 0, 0, 0), nil, KeyMediumError, ASCWriteError, 0},
		{"closed device", func(d *recDevice) { d.readErr = backstore.ErrClosed },
			cdb10(OpRead10, 0, 0, 1), nil, KeyHardwareError, ASCInternalTargetFailure, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			tt.setup(e.dev)
			c := e.run(tt.cdb, tt.out, 512)
			check(t, c, StatusCheckCondition, tt.key, tt.asc)
			if _, _, info, valid := parseSense(c.SenseData()); valid != (tt.info != 0) || info != tt.info {
				t.Fatalf("INFORMATION %d (valid %v), want %d", info, valid, tt.info)
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	e := newEnv(t, nil)
	c := &Command{Nexus: e.nx, CDB: cdb10(OpRead10, 0, 0, 1), ExpectedLength: 512}
	e.r.Plan(c)
	c.DataIn = make([]byte, 512)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.r.Execute(ctx, c)
	check(t, c, StatusCheckCondition, KeyAbortedCommand, ASCNoAdditionalSense)
}

func TestVerify(t *testing.T) {
	e := newEnv(t, nil)
	data := make([]byte, 4*512)
	for i := range data {
		data[i] = byte(i / 5)
	}
	good(t, e.run(cdb10(OpWrite10, 0, 10, 4), data, 0))
	bad := bytes.Clone(data)
	bad[3*512+27] ^= 'X'
	good(t, e.run(cdb10(OpVerify10, 0x00, 10, 4), nil, 0))             // medium only
	good(t, e.run(cdb10(OpVerify10, 0x02, 10, 4), data, 0))            // BYTCHK 01b
	good(t, e.run(cdb12(OpVerify12, 0x12, 10, 4), data, 0))            // with DPO
	good(t, e.run(cdb16(OpVerify16, 0x06, 12, 1), data[1024:1536], 0)) // BYTCHK 11b, one block
	c := e.run(cdb10(OpVerify10, 0x02, 10, 4), bad, 0)
	check(t, c, StatusCheckCondition, KeyMiscompare, ASCMiscompareDuringVerify)
	if _, _, info, valid := parseSense(c.SenseData()); !valid || info != 3*512+27 {
		t.Fatalf("miscompare offset %d valid %v", info, valid)
	}
	c = e.run(cdb16(OpVerify16, 0x06, 10, 4), bytes.Clone(data[:512]), 0) // 11b: block 1 differs from block 0
	check(t, c, StatusCheckCondition, KeyMiscompare, ASCMiscompareDuringVerify)
	if _, _, info, _ := parseSense(c.SenseData()); info != 512 {
		t.Fatalf("BYTCHK 11b miscompare offset %d, want 512", info)
	}
	check(t, e.run(cdb10(OpVerify10, 0x04, 10, 4), data, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(cdb10(OpVerify10, 0x22, 10, 4), data, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(cdb10(OpVerify10, 0x02, testBlocks+1, 0), nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
	good(t, e.run(cdb10(OpVerify10, 0x02, 0, 0), nil, 0))
	e.dev.readErr = backstore.ErrIO
	check(t, e.run(cdb10(OpVerify10, 0, 10, 4), nil, 0), StatusCheckCondition, KeyMediumError, ASCUnrecoveredReadError)
}

func TestWriteAndVerify(t *testing.T) {
	e := newEnv(t, nil)
	data := fill(2*512, 0x5A)
	good(t, e.run(cdb10(OpWriteAndVerify10, 0x02, 5, 2), data, 0))
	if f := e.dev.lastFlags(); f != backstore.WriteFUA {
		t.Fatalf("WRITE AND VERIFY flags %v", f)
	}
	if !bytes.Equal(e.dev.Bytes()[5*512:7*512], data) {
		t.Fatal("not written")
	}
	good(t, e.run(cdb16(OpWriteAndVerify16, 0x10, 5, 2), data, 0))
	good(t, e.run(cdb12(OpWriteAndVerify12, 0x00, 5, 0), nil, 0))
	check(t, e.run(cdb10(OpWriteAndVerify10, 0x04, 5, 2), data, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(cdb10(OpWriteAndVerify10, 0x06, 5, 2), data, 0), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(cdb10(OpWriteAndVerify10, 0x02, testBlocks-1, 2), data, 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestSyncCacheAndPreFetch(t *testing.T) {
	e := newEnv(t, nil)
	good(t, e.run(cdb10(OpSyncCache10, 0, 0, 0), nil, 0))
	good(t, e.run(cdb16(OpSyncCache16, 0x02, 10, 5), nil, 0))
	if e.dev.flushes != 2 {
		t.Fatalf("%d flushes", e.dev.flushes)
	}
	check(t, e.run(cdb10(OpSyncCache10, 0, testBlocks-1, 2), nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
	for _, cdb := range [][]byte{cdb10(OpPreFetch10, 0, 0, 1), cdb10(OpPreFetch10, 0x02, 0, 256),
		func() []byte { c := cdb10(OpPreFetch10, 0, 1, 1); c[6] = 3; return c }(), cdb16(OpPreFetch16, 0, testBlocks-1, 1)} {
		c := e.run(cdb, nil, 0)
		good(t, c)
		if e.r.Plan(c); !c.Done() {
			t.Fatal("PRE-FETCH needs no Execute")
		}
	}
	check(t, e.run(cdb16(OpPreFetch16, 0, testBlocks, 1), nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestCompareAndWrite(t *testing.T) {
	e := newEnv(t, nil)
	caw := func(lba uint64, n uint8) []byte {
		c := cdb16(OpCompareAndWrite, 0, lba, 0)
		c[13] = n
		return c
	}
	good(t, e.run(cdb10(OpWrite10, 0, 3, 2), fill(1024, 'A'), 0))
	good(t, e.run(caw(3, 2), cat(fill(1024, 'A'), fill(1024, 'B')), 0))
	if !bytes.Equal(e.dev.Bytes()[3*512:5*512], fill(1024, 'B')) {
		t.Fatal("not written")
	}
	verify := fill(1024, 'B')
	verify[1000] = 'C'
	c := e.run(caw(3, 2), cat(verify, fill(1024, 'D')), 0)
	check(t, c, StatusCheckCondition, KeyMiscompare, ASCMiscompareDuringVerify)
	if _, _, info, _ := parseSense(c.SenseData()); info != 1000 {
		t.Fatalf("miscompare offset %d", info)
	}
	if !bytes.Equal(e.dev.Bytes()[3*512:5*512], fill(1024, 'B')) {
		t.Fatal("written despite the miscompare")
	}
	good(t, e.run(caw(3, 0), nil, 0))
	cc := &Command{Nexus: e.nx, CDB: caw(3, 1), ExpectedLength: 4 * 512}
	check(t, e.exec(cc, fill(4*512, 'B')), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	cc = &Command{Nexus: e.nx, CDB: caw(3, 3), ExpectedLength: 4 * 512}
	check(t, e.exec(cc, fill(4*512, 'B')), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	cc = &Command{Nexus: e.nx, CDB: caw(3, 0), ExpectedLength: 512 * 512} // 256 blocks truncated to 0
	check(t, e.exec(cc, fill(512*512, 'B')), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	check(t, e.run(caw(testBlocks-1, 2), fill(2048, 'B'), 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestORWrite(t *testing.T) {
	e := newEnv(t, nil)
	good(t, e.run(cdb10(OpWrite10, 0, 0, 1), fill(512, 0x0F), 0))
	good(t, e.run(cdb16(OpORWrite16, 0x08, 0, 1), fill(512, 0xF0), 0))
	if !bytes.Equal(e.dev.Bytes()[:512], fill(512, 0xFF)) {
		t.Fatal("ORWRITE did not OR")
	}
	good(t, e.run(cdb16(OpORWrite16, 0, 0, 0), nil, 0))
	check(t, e.run(cdb16(OpORWrite16, 0, testBlocks, 1), fill(512, 1), 0), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
}

// directDevice behaves like an O_DIRECT device: offsets, lengths and
// buffer addresses must be multiples of 4096.
type directDevice struct{ *backstore.Memory }

func (d directDevice) Info() backstore.Info {
	i := d.Memory.Info()
	i.Direct, i.IOAlignment = true, 4096
	return i
}

func (d directDevice) check(p []byte, off int64) error {
	if off%4096 != 0 || len(p)%4096 != 0 || (len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%4096 != 0) {
		return backstore.ErrMisaligned
	}
	return nil
}

func (d directDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.check(p, off); err != nil {
		return err
	}
	return d.Memory.ReadAt(ctx, p, off)
}

func (d directDevice) WriteAt(ctx context.Context, p []byte, off int64, f backstore.WriteFlags) error {
	if err := d.check(p, off); err != nil {
		return err
	}
	return d.Memory.WriteAt(ctx, p, off, f)
}

func TestDirectIOAlignment(t *testing.T) {
	if _, err := NewLU(LUConfig{Device: directDevice{backstore.NewMemory(1 << 20)}, Serial: "D"}); err == nil {
		t.Fatal("512-byte blocks over a 4096-aligned device accepted")
	}
	dev := directDevice{backstore.NewMemory(1 << 20)}
	lu, err := NewLU(LUConfig{Device: dev, Serial: "D", BlockSize: 4096, Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRouter([]*LU{lu})
	e := &env{t: t, r: r, lu: lu}
	data := alignedBuf(3*4096 + 1)[1:] // deliberately misaligned transport buffers
	for i := range data {
		data[i] = byte(i / 7)
	}
	good(t, e.exec(&Command{CDB: cdb10(OpWrite10, 0, 1, 3), ExpectedLength: 3 * 4096}, data))
	if !bytes.Equal(dev.Bytes()[4096:4*4096], data) {
		t.Fatal("misaligned write")
	}
	c := &Command{CDB: cdb10(OpRead10, 0, 1, 3), ExpectedLength: 3*4096 - 100}
	e.r.Plan(c)
	c.DataIn = alignedBuf(3*4096 + 1)[1 : 3*4096-100+1]
	e.r.Execute(context.Background(), c)
	good(t, c)
	if !bytes.Equal(c.DataIn, data[:3*4096-100]) {
		t.Fatal("misaligned read")
	}
	for _, tc := range []struct {
		cdb []byte
		out []byte
	}{
		{ws10(0, 10, 5), fill(4096, 3)},
		{cdb10(OpVerify10, 0x02, 1, 3), data},
		{cdb10(OpWriteAndVerify10, 0x02, 1, 3), data},
		{cdb16(OpORWrite16, 0, 1, 1), data[:4096]},
		{unmapCDBBytes(24), unmapParams([2]uint64{2, 1})},
	} {
		good(t, e.run(tc.cdb, tc.out, 0))
	}
}
