package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// wa16 builds WRITE ATOMIC(16).
func wa16(b1 byte, lba uint64, boundary, n uint16) []byte {
	c := make([]byte, 16)
	c[0], c[1] = byte(OpWriteAtomic16), b1
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint16(c[10:], boundary)
	binary.BigEndian.PutUint16(c[12:], n)
	return c
}

// fixedSense builds the 18-byte fixed format sense data the device
// server must return, with an optional sense key specific field.
func fixedSense(key SenseKey, asc ASC, sks ...byte) []byte {
	b := make([]byte, 18)
	b[0], b[2], b[7] = 0x70, byte(key), 10
	b[12], b[13] = byte(asc>>8), byte(asc)
	copy(b[15:], sks)
	return b
}

func wantSense(t *testing.T, c *Command, want []byte) {
	t.Helper()
	if c.Status != StatusCheckCondition || !bytes.Equal(c.SenseData(), want) {
		t.Fatalf("CDB % x: status %v sense % x, want CHECK CONDITION % x", c.CDB, c.Status, c.SenseData(), want)
	}
}

func TestWriteAtomic(t *testing.T) {
	e := newEnv(t, nil)
	data := fill(8*512, 0x5A)
	good(t, e.run(wa16(0x08, 100, 0, 8), data, 0)) // FUA
	if !bytes.Equal(e.dev.Bytes()[100*512:108*512], data) {
		t.Fatal("blocks not written")
	}
	if e.dev.lastFlags() != backstore.WriteFUA {
		t.Fatalf("FUA: flags %v", e.dev.lastFlags())
	}
	good(t, e.run(wa16(0, testBlocks, 0, 0), nil, 0)) // zero blocks at the capacity

	tests := []struct {
		name string
		cdb  []byte
		out  []byte
		want []byte
	}{
		{"past the end", wa16(0, testBlocks-1, 0, 2), fill(1024, 1),
			fixedSense(KeyIllegalRequest, ASCLBAOutOfRange)},
		{"zero blocks past the end", wa16(0, testBlocks+1, 0, 0), nil,
			fixedSense(KeyIllegalRequest, ASCLBAOutOfRange)},
		{"LBA 2^63", wa16(0, 1<<63, 0, 1), fill(512, 1),
			fixedSense(KeyIllegalRequest, ASCLBAOutOfRange)},
		{"ATOMIC BOUNDARY", wa16(0, 0, 1, 1), fill(512, 1),
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 10)},
		{"WRPROTECT", wa16(0x20, 0, 0, 1), fill(512, 1),
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCF, 0, 1)},
		{"reserved bit", wa16(0x04, 0, 0, 1), fill(512, 1),
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCA, 0, 1)},
		{"short Data-Out", wa16(0, 0, 0, 2), fill(512, 1),
			fixedSense(KeyIllegalRequest, ASCInvalidFieldInIU)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(e.dev.Bytes()[:1024])
			wantSense(t, e.run(tt.cdb, tt.out, 0), tt.want)
			if !bytes.Equal(before, e.dev.Bytes()[:1024]) {
				t.Fatal("a refused atomic write changed the medium")
			}
		})
	}

	// 256 blocks of 4 KiB is the limit; the LU has 2048.
	big := newEnv(t, func(c *LUConfig) { c.BlockSize = 4096 })
	wantSense(t, big.run(wa16(0, 0, 0, 257), fill(257*4096, 1), 0),
		fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 12))
	good(t, big.run(wa16(0, 0, 0, 256), fill(256*4096, 1), 0))

	ro := newEnv(t, func(c *LUConfig) { c.ReadOnly = true })
	wantSense(t, ro.run(wa16(0, 0, 0, 1), fill(512, 1), 0), fixedSense(KeyDataProtect, ASCWriteProtected))
}

func TestWriteAtomicReported(t *testing.T) {
	e := newEnv(t, nil)
	c := e.run(rsocBytes(false, 1, byte(OpWriteAtomic16), 0, 64), nil, 64)
	good(t, c)
	got := dataIn(c)
	if got[1]&0x07 != 3 || got[4] != byte(OpWriteAtomic16) || got[5] != 0xF8 || got[4+12] != 0xFF || got[4+14] != 0x3F {
		t.Fatalf("RSOC of WRITE ATOMIC(16): % x", got)
	}
	c = e.run(inquiryCDBBytes(true, 0xB0, 64), nil, 64)
	good(t, c)
	if v := binary.BigEndian.Uint32(dataIn(c)[44:48]); v != 2048 {
		t.Fatalf("MAXIMUM ATOMIC TRANSFER LENGTH %d, want 2048", v)
	}
}

// lockProbe is a device whose WriteAt reports whether the stripe of the
// write is held shared or exclusively at that moment.
type lockProbe struct {
	*recDevice
	lu        *LU
	exclusive []bool
}

func (d *lockProbe) WriteAt(ctx context.Context, p []byte, off int64, f backstore.WriteFlags) error {
	s := d.lu.ranges.set(uint64(off)>>d.lu.bsShift, uint64(len(p))>>d.lu.bsShift, d.lu.bsShift)
	for i := 0; i < lockStripes; i++ {
		if s&(1<<i) == 0 {
			continue
		}
		if d.lu.ranges.mu[i].TryLock() {
			d.lu.ranges.mu[i].Unlock()
			panic("a write runs without its range lock")
		}
		shared := d.lu.ranges.mu[i].TryRLock()
		if shared {
			d.lu.ranges.mu[i].RUnlock()
		}
		d.exclusive = append(d.exclusive, !shared)
	}
	return d.recDevice.WriteAt(ctx, p, off, f)
}

// TestWritesHoldRangeLocks checks that plain writes hold their stripes
// shared and the atomic commands (WRITE ATOMIC, COMPARE AND WRITE,
// ORWRITE, EXTENDED COPY) exclusively while they write.
func TestWritesHoldRangeLocks(t *testing.T) {
	e := newEnv(t, nil)
	probe := &lockProbe{recDevice: e.dev, lu: e.lu}
	e.lu.dev = probe
	e.r.NexusAdded(e.nx)
	e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0) // the power-on unit attention
	cases := []struct {
		name      string
		cdb       []byte
		out       []byte
		exclusive bool
	}{
		{"WRITE(10)", cdb10(OpWrite10, 0, 5, 2), fill(1024, 1), false},
		{"WRITE SAME(16)", ws16(0, 3000/512, 4), fill(512, 2), false},
		{"WRITE AND VERIFY(16)", cdb16(OpWriteAndVerify16, 0, 9, 1), fill(512, 3), false},
		{"WRITE ATOMIC(16)", wa16(0, 7, 0, 2), fill(1024, 4), true},
		{"COMPARE AND WRITE", append(cdb16(OpCompareAndWrite, 0, 7, 0)[:13], 1, 0, 0), append(fill(512, 4), fill(512, 5)...), true},
		{"ORWRITE(16)", cdb16(OpORWrite16, 0, 7, 1), fill(512, 2), true},
		{"EXTENDED COPY", xcopyCDBBytes(uint32(len(xcopyList1(e.lu, 7, 100, 1)))), xcopyList1(e.lu, 7, 100, 1), true},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			probe.exclusive = nil
			good(t, e.run(tt.cdb, tt.out, 0))
			if len(probe.exclusive) == 0 {
				t.Fatal("no write reached the device")
			}
			for _, x := range probe.exclusive {
				if x != tt.exclusive {
					t.Fatalf("stripe held exclusively=%v, want %v", x, tt.exclusive)
				}
			}
		})
	}
}

func TestRangeLockSet(t *testing.T) {
	var l rangeLock
	if s := l.set(0, 0, 9); s != 0 {
		t.Fatalf("empty range locks %b", s)
	}
	// 2048 512-byte blocks per 1 MiB stripe.
	if s := l.set(2047, 2, 9); s != 0b11 {
		t.Fatalf("range over a stripe boundary: %b", s)
	}
	if s := l.set(64*2048, 1, 9); s != 1 {
		t.Fatalf("stripe 64 wraps to lock 0: %b", s)
	}
	if s := l.set(0, 64*2048, 9); s != ^lockSet(0) {
		t.Fatalf("64 stripes: %b", s)
	}
	if s := l.set(1<<63, 1<<63, 12); s != ^lockSet(0) {
		t.Fatalf("overflowing range: %b", s)
	}
	s := l.set(100, 5000, 9)
	l.lock(s, true)
	if l.mu[0].TryRLock() || l.mu[2].TryRLock() || !l.mu[3].TryRLock() {
		t.Fatal("exclusive lock of stripes 0-2")
	}
	l.mu[3].RUnlock()
	l.unlock(s, true)
	l.lock(s, false)
	if l.mu[1].TryLock() || !l.mu[1].TryRLock() {
		t.Fatal("shared lock")
	}
	l.mu[1].RUnlock()
	l.unlock(s, false)
}

// TestReadOnlyRefusesEveryWrite sends every write-class command of the
// dispatch table (each service action too) to a read-only thin LU: each
// gets DATA PROTECT / WRITE PROTECTED before anything else is checked.
func TestReadOnlyRefusesEveryWrite(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.ReadOnly = true; c.Thin = true })
	seen := map[OpCode]bool{}
	for i := range sbcOps {
		entries := []opEntry{sbcOps[i]}
		if sbcOps[i].sas != nil {
			entries = sbcOps[i].sas
		}
		for _, op := range entries {
			if op.flags&flagWrite == 0 {
				continue
			}
			cdb := make([]byte, len(op.usage))
			cdb[0] = op.usage[0]
			if op.hasSA() {
				cdb[1] = op.usage[1] & saMask
			}
			t.Run(OpCode(cdb[0]).String(), func(t *testing.T) {
				wantSense(t, e.run(cdb, nil, 0), fixedSense(KeyDataProtect, ASCWriteProtected))
			})
			seen[OpCode(cdb[0])] = true
		}
	}
	for _, op := range []OpCode{OpWrite6, OpWrite10, OpWrite12, OpWrite16, OpWriteAndVerify10, OpWriteAndVerify12,
		OpWriteAndVerify16, OpWriteSame10, OpWriteSame16, OpUnmap, OpSanitize, OpExtendedCopy, OpCompareAndWrite,
		OpORWrite16, OpWriteAtomic16} {
		if !seen[op] {
			t.Errorf("%v is not a write-class command", op)
		}
	}
}

// TestNexusReaper: a conflict caused by another nexus runs the transport's
// reaper and checks the command again; when the reaper ended that nexus
// (here: NexusLost), the command succeeds.
func TestNexusReaper(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Removable = true }).login()
	good(t, e.runOn(e.nx2, 0, []byte{byte(OpPreventAllow), 0, 0, 0, 1, 0}, nil, 0))
	eject := []byte{byte(OpStartStopUnit), 0, 0, 0, 0x02, 0}
	wantSense(t, e.run(eject, nil, 0), fixedSense(KeyIllegalRequest, ASCMediumRemovalPrevented))
	calls := 0
	e.r.SetNexusReaper(func() { calls++; e.r.NexusLost(e.nx2) })
	good(t, e.run(eject, nil, 0))
	if calls != 1 {
		t.Fatalf("reaper ran %d times, want 1", calls)
	}
	good(t, e.run([]byte{byte(OpStartStopUnit), 0, 0, 0, 0x03, 0}, nil, 0)) // load again
	e.r.SetNexusReaper(nil)
}
