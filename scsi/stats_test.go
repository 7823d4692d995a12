package scsi

import (
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func TestLUStatsCountsClassesBytesAndSenseKeys(t *testing.T) {
	e := newEnv(t, nil).login()
	base := e.lu.Stats() // the two power-on unit attentions of login
	if got := base.Errors[KeyUnitAttention]; got != 2 {
		t.Fatalf("unit attentions after login: got %d, want 2", got)
	}
	if got := base.Classes[ClassOther].Commands; got != 2 {
		t.Fatalf("other commands after login: got %d, want 2", got)
	}

	good(t, e.run(cdb10(OpWrite10, 0, 0, 8), fill(8*512, 0xAB), 0)) // 4 KiB write
	good(t, e.run(cdb16(OpWrite16, 0, 8, 2), fill(2*512, 0xCD), 0)) // 1 KiB write
	good(t, e.run(cdb10(OpRead10, 0, 0, 16), nil, 16*512))          // 8 KiB read
	good(t, e.run(cdb10(OpRead10, 0, 0, 4), nil, 2*512))            // underflow: 1 KiB moved
	good(t, e.run(cdb10(OpSyncCache10, 0, 0, 0), nil, 0))           // flush
	c := e.run(cdb10(OpRead10, 0, testBlocks, 1), nil, 512)         // LBA out of range
	check(t, c, StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
	e.dev.writeErr = backstore.ErrIO
	c = e.run(cdb10(OpWrite10, 0, 0, 1), fill(512, 1), 0) // medium error
	if c.Status != StatusCheckCondition {
		t.Fatalf("write with EIO: got %v", c.Status)
	}
	e.dev.writeErr = nil
	e.runOn(e.nx, 7, []byte{0, 0, 0, 0, 0, 0}, nil, 0) // LUN 7 does not exist

	s := e.lu.Stats()
	type want struct {
		class    CommandClass
		commands uint64
		bytes    uint64
	}
	for _, w := range []want{
		{ClassWrite, 3, 5 << 10},
		{ClassRead, 3, 9 << 10},
		{ClassFlush, 1, 0},
		{ClassOther, 2, 0},
		{ClassUnmap, 0, 0},
	} {
		cs := s.Classes[w.class]
		if cs.Commands != w.commands || cs.Bytes != w.bytes {
			t.Errorf("%v: got %d commands, %d bytes; want %d, %d", w.class, cs.Commands, cs.Bytes, w.commands, w.bytes)
		}
		if cs.Latency.Count != cs.Commands {
			t.Errorf("%v: latency count %d, want %d", w.class, cs.Latency.Count, cs.Commands)
		}
		var sum uint64
		for _, n := range cs.Latency.Counts {
			sum += n
		}
		if sum != cs.Latency.Count || len(cs.Latency.Counts) != len(LatencyBuckets())+1 {
			t.Errorf("%v: bucket counts %v do not add up to %d", w.class, cs.Latency.Counts, cs.Latency.Count)
		}
	}
	if got := s.Errors[KeyIllegalRequest]; got != 1 {
		t.Errorf("ILLEGAL REQUEST: got %d, want 1", got)
	}
	if got := s.Errors[KeyMediumError]; got != 1 {
		t.Errorf("write failure: got %d MEDIUM/HARDWARE ERROR, want 1 (errors %v)", got, s.Errors)
	}
	if s.CapacityBytes != testBlocks*512 {
		t.Errorf("capacity: got %d", s.CapacityBytes)
	}
	rs := e.r.Stats()
	if len(rs.LUs) != 1 || rs.LUs[0].ID != 0 || rs.UnknownLUN != 1 {
		t.Errorf("router stats: got %d LUs, unknown LUN %d; want 1 LU, 1", len(rs.LUs), rs.UnknownLUN)
	}
}

func TestHistogramBuckets(t *testing.T) {
	var h histogram
	for _, d := range []int64{0, 50e3, 50e3 + 1, 1e6, 31e9} {
		h.observe(time.Duration(d))
	}
	s := h.snapshot()
	want := map[int]uint64{0: 2, 1: 1, 4: 1, len(latencyBounds): 1}
	for i, n := range s.Counts {
		if n != want[i] {
			t.Errorf("bucket %d: got %d, want %d", i, n, want[i])
		}
	}
	if s.Count != 5 {
		t.Errorf("count %d, want 5", s.Count)
	}
	if wantSum := float64(50e3+50e3+1+1e6+31e9) / 1e9; s.Sum != wantSum {
		t.Errorf("sum %v, want %v", s.Sum, wantSum)
	}
	b := LatencyBuckets()
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			t.Fatalf("bucket bounds not increasing: %v", b)
		}
	}
}

func TestSenseKeyOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want SenseKey
	}{
		{"fixed", []byte{0x70, 0, 0x05, 0, 0, 0, 0, 10}, KeyIllegalRequest},
		{"fixed deferred", []byte{0x71, 0, 0x03}, KeyMediumError},
		{"descriptor", []byte{0x72, 0x07, 0x27, 0}, KeyDataProtect},
		{"valid bit", []byte{0xF0, 0, 0x06}, KeyUnitAttention},
		{"empty", nil, KeyNoSense},
		{"short", []byte{0x70, 0}, KeyNoSense},
		{"garbage", []byte{0x12, 0x34, 0x56}, KeyNoSense},
	} {
		if got := senseKeyOf(tc.b); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLUStatsReservations(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0))
	good(t, e.prOut(e.nx, SAReserve, PRWriteExclusive, 0xA, 0, 0))
	conflict(t, e.runOn(e.nx2, 0, cdb10(OpWrite10, 0, 0, 1), fill(512, 1), 0))
	conflict(t, e.runOn(e.nx2, 0, cdb10(OpWrite10, 0, 1, 1), fill(512, 1), 0))
	s := e.lu.Stats()
	if s.ReservationConflicts != 2 || s.PRRegistrations != 2 || !s.PRReserved || s.SPC2Reserved {
		t.Errorf("conflicts %d, registrations %d, reserved %v, SPC-2 %v; want 2, 2, true, false",
			s.ReservationConflicts, s.PRRegistrations, s.PRReserved, s.SPC2Reserved)
	}
	if w := s.Classes[ClassWrite]; w.Commands != 2 || w.Bytes != 0 {
		t.Errorf("refused writes: %d commands, %d bytes; want 2, 0", w.Commands, w.Bytes)
	}
	good(t, e.prOut(e.nx, SARelease, PRWriteExclusive, 0xA, 0, 0))
	if e.lu.Stats().PRReserved {
		t.Error("still reserved after RELEASE")
	}
}

// BenchmarkAccount is the statistics cost per command (Router.finish):
// a clock read, the class, byte and histogram atomics.
func BenchmarkAccount(b *testing.B) {
	e := newEnv(b, nil)
	c := &Command{CDB: cdb10(OpRead10, 0, 0, 8), Dir: DirIn, XferLen: 4096, DataIn: make([]byte, 4096)}
	c.state.lu = e.lu
	c.state.start = time.Now()
	b.ReportAllocs()
	for b.Loop() {
		e.r.account(c)
	}
}
