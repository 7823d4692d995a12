package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func xcopyCDBBytes(n uint32) []byte {
	c := make([]byte, 16)
	c[0] = byte(OpExtendedCopy)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func rcrCDBBytes(sa, listID byte, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1], c[2] = byte(OpReceiveCopy), sa, listID
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// identTarget is an E4h target descriptor naming lu by its NAA designator.
func identTarget(lu *LU) []byte {
	d := make([]byte, 32)
	d[0] = 0xE4
	d[4], d[5], d[7] = codeSetBinary, assocLU|desigNAA, 8
	copy(d[8:], lu.naa[:])
	d[29], d[30], d[31] = byte(lu.bs>>16), byte(lu.bs>>8), byte(lu.bs)
	return d
}

// b2bSegment is a block-to-block segment descriptor.
func b2bSegment(src, dst uint16, blocks uint16, srcLBA, dstLBA uint64) []byte {
	d := make([]byte, 28)
	d[0], d[3] = 0x02, 0x18
	binary.BigEndian.PutUint16(d[4:], src)
	binary.BigEndian.PutUint16(d[6:], dst)
	binary.BigEndian.PutUint16(d[10:], blocks)
	binary.BigEndian.PutUint64(d[12:], srcLBA)
	binary.BigEndian.PutUint64(d[20:], dstLBA)
	return d
}

// xcopyParams assembles a parameter list.
func xcopyParams(listID, flags byte, targets, segments [][]byte) []byte {
	var td, sd []byte
	for _, t := range targets {
		td = append(td, t...)
	}
	for _, s := range segments {
		sd = append(sd, s...)
	}
	h := make([]byte, 16)
	h[0], h[1] = listID, flags
	binary.BigEndian.PutUint16(h[2:], uint16(len(td)))
	binary.BigEndian.PutUint32(h[8:], uint32(len(sd)))
	return append(append(h, td...), sd...)
}

// xcopyList1 copies blocks within lu (LIST ID USAGE 11b).
func xcopyList1(lu *LU, src, dst uint64, blocks uint16) []byte {
	return xcopyParams(0, listIDIgnored<<3, [][]byte{identTarget(lu)}, [][]byte{b2bSegment(0, 0, blocks, src, dst)})
}

func TestExtendedCopy(t *testing.T) {
	e := newEnv(t, nil)
	src := make([]byte, 300*512)
	for i := range src {
		src[i] = byte(i * 7)
	}
	put(t, e.dev.Memory, 10*512, src)
	p := xcopyList1(e.lu, 10, 1000, 300)
	good(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0))
	if !bytes.Equal(e.dev.Bytes()[1000*512:1300*512], src) {
		t.Fatal("segment not copied")
	}
	// Overlapping, destination above the source: a memmove.
	p = xcopyList1(e.lu, 10, 110, 300)
	good(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0))
	if !bytes.Equal(e.dev.Bytes()[110*512:410*512], src) {
		t.Fatal("overlapping copy upwards corrupted the data")
	}
	// Parameter list length zero: nothing to do.
	good(t, e.run(xcopyCDBBytes(0), nil, 0))
}

func TestExtendedCopyBetweenLUs(t *testing.T) {
	mk := func(id uint16, serial string) (*LU, *recDevice) {
		dev := &recDevice{Memory: backstore.NewMemory(1 << 20)}
		lu, err := NewLU(LUConfig{ID: id, Device: dev, Serial: serial})
		if err != nil {
			t.Fatal(err)
		}
		return lu, dev
	}
	a, da := mk(0, "SNA")
	b, db := mk(1, "SNB")
	r, err := NewRouter([]*LU{a, b})
	if err != nil {
		t.Fatal(err)
	}
	put(t, da.Memory, 0, fill(4*512, 0x77))
	p := xcopyParams(5, listIDHold<<3, [][]byte{identTarget(a), identTarget(b)}, [][]byte{b2bSegment(0, 1, 4, 0, 20)})
	c := &Command{LUN: EncodeLUN(0), CDB: xcopyCDBBytes(uint32(len(p))), ExpectedLength: uint32(len(p))}
	e := &env{t: t, r: r}
	good(t, e.exec(c, p))
	if !bytes.Equal(db.Bytes()[20*512:24*512], fill(4*512, 0x77)) {
		t.Fatal("copy to the other LU missing")
	}
	// Held: RECEIVE COPY RESULTS reports it on the copy manager LU.
	c = &Command{LUN: EncodeLUN(0), CDB: rcrCDBBytes(rcrCopyStatus, 5, 64), ExpectedLength: 64}
	good(t, e.exec(c, nil))
	if want := []byte{0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0x08, 0}; !bytes.Equal(dataIn(c), want) {
		t.Fatalf("copy status % x, want % x", dataIn(c), want)
	}
}

func TestExtendedCopyErrors(t *testing.T) {
	e := newEnv(t, nil)
	tgt := identTarget(e.lu)
	seg := b2bSegment(0, 0, 8, 0, 100)
	withHeader := func(p []byte, f func([]byte)) []byte { f(p); return p }
	tooManyTargets := make([][]byte, xcopyMaxTargets+1)
	for i := range tooManyTargets {
		tooManyTargets[i] = tgt
	}
	tooManySegs := make([][]byte, xcopyMaxSegments+1)
	for i := range tooManySegs {
		tooManySegs[i] = seg
	}
	other := identTarget(e.lu)
	other[8] ^= 0xFF
	unknownType := bytes.Clone(tgt)
	unknownType[0] = 0xE0
	streamSeg := make([]byte, 20)
	streamSeg[0], streamSeg[3] = 0x03, 0x10
	full := xcopyParams(1, 0, [][]byte{tgt}, [][]byte{seg})
	tests := []struct {
		name   string
		p      []byte
		cdbLen uint32 // 0: len(p)
		want   []byte
	}{
		{"truncated target descriptor", full[:16+31], 0, fixedSense(KeyIllegalRequest, ASCParamListLengthError)},
		{"truncated segment descriptor", full[:len(full)-1], 0, fixedSense(KeyIllegalRequest, ASCParamListLengthError)},
		{"header only, shorter than 16", full[:10], 0, fixedSense(KeyIllegalRequest, ASCParamListLengthError)},
		{"too many target descriptors", xcopyParams(1, 0, tooManyTargets, [][]byte{seg}), 0,
			fixedSense(KeyIllegalRequest, ASCTooManyTargetDescs)},
		{"too many segment descriptors", xcopyParams(1, 0, [][]byte{tgt}, tooManySegs), 0,
			fixedSense(KeyIllegalRequest, ASCTooManySegmentDescs)},
		{"descriptor lists over the maximum", withHeader(bytes.Clone(full), func(p []byte) { binary.BigEndian.PutUint32(p[8:], 5000) }), 0,
			fixedSense(KeyIllegalRequest, ASCParamListLengthError)},
		{"unsupported target descriptor", xcopyParams(1, 0, [][]byte{unknownType}, [][]byte{seg}), 0,
			fixedSense(KeyIllegalRequest, ASCUnsupportedTargetDesc, 0x80, 0, 16)},
		{"stream-to-stream segment", xcopyParams(1, 0, [][]byte{tgt}, [][]byte{streamSeg}), 0,
			fixedSense(KeyIllegalRequest, ASCUnsupportedSegmentDesc, 0x80, 0, 48)},
		{"inline data", withHeader(xcopyParams(1, 0, [][]byte{tgt}, [][]byte{seg}), func(p []byte) { p[15] = 4 }), 0,
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x80, 0, 12)},
		{"LIST ID USAGE 01b", xcopyParams(1, 1<<3, [][]byte{tgt}, [][]byte{seg}), 0,
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x8C, 0, 1)},
		{"destination index beyond the targets", xcopyParams(1, 0, [][]byte{tgt}, [][]byte{b2bSegment(0, 1, 8, 0, 100)}), 0,
			fixedSense(KeyCopyAborted, ASCCopyTargetNotReachable, 0xA0, 0, 48)},
		{"destination beyond the capacity", xcopyParams(1, 0, [][]byte{tgt}, [][]byte{b2bSegment(0, 0, 8, 0, testBlocks-1)}), 0,
			fixedSense(KeyCopyAborted, ASCNoAdditionalSense, 0xA0, 0, 48)},
		{"unknown LU designator", xcopyParams(1, 0, [][]byte{other}, [][]byte{seg}), 0,
			fixedSense(KeyCopyAborted, ASCCopyTargetNotReachable, 0xA0, 0, 16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.cdbLen
			if n == 0 {
				n = uint32(len(tt.p))
			}
			wantSense(t, e.run(xcopyCDBBytes(n), tt.p, 0), tt.want)
		})
	}
	// The LU ID TYPE of SPC-3 is ignored (obsolete in SPC-4).
	luid := bytes.Clone(tgt)
	luid[1] = 0x80
	p := xcopyParams(1, 0, [][]byte{luid}, [][]byte{seg})
	good(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0))

	ro := newEnv(t, func(c *LUConfig) { c.ReadOnly = true })
	p = xcopyList1(ro.lu, 0, 100, 8)
	wantSense(t, ro.run(xcopyCDBBytes(uint32(len(p))), p, 0), fixedSense(KeyDataProtect, ASCWriteProtected))
}

func TestReceiveCopyResults(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run(rcrCDBBytes(rcrOpParams, 0, 255), nil, 255)
	good(t, c)
	want := make([]byte, 46)
	want[3] = 42
	want[4] = 0x01            // SNLID
	want[9], want[11] = 8, 64 // targets, segments
	want[14] = 0x10           // 4096-byte descriptor lists
	binary.BigEndian.PutUint32(want[16:], 0xFFFF*4096)
	want[34], want[35], want[36] = 0xFF, 0xFF, 0xFF
	want[37] = 9 // 512-byte data segment granularity
	want[43], want[44], want[45] = 2, 0x02, 0xE4
	if !bytes.Equal(dataIn(c), want) {
		t.Fatalf("operating parameters\n got % x\nwant % x", dataIn(c), want)
	}

	// No copy with list ID 7 yet.
	wantSense(t, e.run(rcrCDBBytes(rcrCopyStatus, 7, 64), nil, 64),
		fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 2))
	// Unsupported service action (RECEIVE DATA).
	wantSense(t, e.run(rcrCDBBytes(0x01, 0, 64), nil, 64),
		fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCC, 0, 1))

	// A held failed copy reports status 01h.
	p := xcopyParams(7, listIDHold<<3, [][]byte{identTarget(e.lu)}, [][]byte{b2bSegment(0, 0, 8, 0, 100), b2bSegment(0, 0, 8, 0, testBlocks)})
	check(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0), StatusCheckCondition, KeyCopyAborted, ASCNoAdditionalSense)
	c = e.run(rcrCDBBytes(rcrCopyStatus, 7, 64), nil, 64)
	good(t, c)
	if want := []byte{0, 0, 0, 8, 0x01, 0, 1, 0, 0, 0, 0x10, 0}; !bytes.Equal(dataIn(c), want) {
		t.Fatalf("failed copy status % x, want % x", dataIn(c), want)
	}
	// Another nexus does not see it.
	check(t, e.runOn(e.nx2, 0, rcrCDBBytes(rcrCopyStatus, 7, 64), nil, 64), StatusCheckCondition, KeyIllegalRequest, ASCInvalidFieldInCDB)
	// A list ID in use by a running copy is refused.
	key := copyKey{nexus: e.nx.Key, id: 9}
	if !e.lu.copies.begin(key) {
		t.Fatal("begin")
	}
	p = xcopyParams(9, listIDNoHold<<3, [][]byte{identTarget(e.lu)}, [][]byte{b2bSegment(0, 0, 8, 0, 100)})
	check(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0), StatusCheckCondition, KeyIllegalRequest, ASCOperationInProgress)
	e.lu.copies.end(key, copyStatus{}, true, false)
	good(t, e.run(xcopyCDBBytes(uint32(len(p))), p, 0))
	// Nexus loss forgets the held results.
	e.r.NexusLost(e.nx)
	if _, ok := e.lu.copies.status(copyKey{nexus: e.nx.Key, id: 7}); ok {
		t.Fatal("copy results survive the nexus")
	}
}

func TestParseXCopyBounds(t *testing.T) {
	// Every accepted list stays within the limits and the input.
	for _, p := range xcopySeeds() {
		l, err := parseXCopy(p)
		if err != nil {
			continue
		}
		if len(l.targets) > xcopyMaxTargets || len(l.segments) > xcopyMaxSegments {
			t.Fatalf("limits exceeded: %d targets, %d segments", len(l.targets), len(l.segments))
		}
	}
	_ = context.Background
}

func xcopySeeds() [][]byte {
	var lu LU
	lu.bs = 512
	lu.naa = naaFromSerial("SN0001")
	tgt := identTarget(&lu)
	seg := b2bSegment(0, 0, 8, 0, 100)
	return [][]byte{
		nil,
		make([]byte, 16),
		xcopyParams(1, 0, [][]byte{tgt}, [][]byte{seg}),
		xcopyParams(1, 3<<3, [][]byte{tgt, tgt}, [][]byte{seg, seg, b2bSegment(1, 0, 1, 5, 6)}),
		xcopyParams(1, 0, [][]byte{tgt}, [][]byte{seg})[:40],
	}
}

func FuzzXCopyParams(f *testing.F) {
	for _, s := range xcopySeeds() {
		f.Add(s)
	}
	e := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, p []byte) {
		l, err := parseXCopy(p)
		if err == nil {
			if len(l.targets) > xcopyMaxTargets || len(l.segments) > xcopyMaxSegments {
				t.Fatalf("limits exceeded: %d targets, %d segments", len(l.targets), len(l.segments))
			}
			for _, tg := range l.targets {
				if len(tg.designator) == 0 || len(tg.designator) > xcopyDesigMax {
					t.Fatalf("designator of %d bytes", len(tg.designator))
				}
			}
		} else if _, ok := err.(Sense); !ok {
			t.Fatalf("parse error %v is not sense data", err)
		}
		// The whole command: a precise answer, never a panic.
		c := e.run(xcopyCDBBytes(uint32(len(p))), p, 0)
		if !c.Done() || (c.Status != StatusGood && c.Status != StatusCheckCondition) {
			t.Fatalf("status %v", c.Status)
		}
	})
}

// put writes p at off straight to the memory device.
func put(t testing.TB, m *backstore.Memory, off int64, p []byte) {
	t.Helper()
	if err := m.WriteAt(context.Background(), p, off, 0); err != nil {
		t.Fatal(err)
	}
}
