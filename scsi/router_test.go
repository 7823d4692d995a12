package scsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

type panicDevice struct{ *backstore.Memory }

func (panicDevice) ReadAt(context.Context, []byte, int64) error { panic("boom") }

func TestPanicRecovery(t *testing.T) {
	lu, err := NewLU(LUConfig{Device: panicDevice{backstore.NewMemory(1 << 20)}, Serial: "P"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRouter([]*LU{lu})
	e := &env{t: t, r: r, lu: lu}
	check(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), StatusCheckCondition, KeyHardwareError, ASCInternalTargetFailure)
	if r.Panics() != 1 {
		t.Fatalf("Panics() = %d", r.Panics())
	}
}

func TestRoutersAreIndependent(t *testing.T) {
	a, b := newEnv(t, nil), newEnv(t, nil)
	a.r.NexusAdded(a.nx)
	good(t, b.runOn(a.nx, 0, tur, nil, 0)) // same nexus key, other router: no UA
	check(t, a.run(tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
}

func TestNexusReadOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.nx.SetReadOnly(true)
	check(t, e.run(cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0), StatusCheckCondition, KeyDataProtect, ASCWriteProtected)
	cdb, list := modeSelect6(true, false, nil, cachingPage(false))
	check(t, e.run(cdb, list, 0), StatusCheckCondition, KeyDataProtect, ASCWriteProtected)
	if c := e.run(modeSense6(true, 0, 0x08, 0, 255), nil, 255); dataIn(c)[2]&0x80 == 0 {
		t.Fatal("WP not reported to a read-only nexus")
	}
	if c := e.runOn(e.nx2, 0, modeSense6(true, 0, 0x08, 0, 255), nil, 255); dataIn(c)[2]&0x80 != 0 {
		t.Fatal("WP reported to the writer")
	}
	good(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512))
	good(t, e.runOn(e.nx2, 0, cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0))
	e.nx.SetReadOnly(false)
	good(t, e.run(cdb10(OpWrite10, 0, 0, 1), make([]byte, 512), 0))
}

func TestReadOnlyLU(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.ReadOnly = true })
	caw := cdb16(OpCompareAndWrite, 0, 0, 0)
	caw[13] = 1
	for _, cdb := range [][]byte{cdb6(OpWrite6, 0, 1), cdb10(OpWrite10, 0, 0, 1), cdb12(OpWrite12, 0, 0, 1), cdb16(OpWrite16, 0, 0, 1),
		cdb10(OpWriteAndVerify10, 2, 0, 1), cdb16(OpWriteAndVerify16, 2, 0, 1), ws10(0, 0, 1), ws16(0x08, 0, 1),
		cdb16(OpORWrite16, 0, 0, 1), caw, unmapCDBBytes(24)} {
		check(t, e.run(cdb, make([]byte, 1024), 0), StatusCheckCondition, KeyDataProtect, ASCWriteProtected)
	}
	good(t, e.run(cdb10(OpSyncCache10, 0, 0, 0), nil, 0))
	if len(e.dev.flags) != 0 {
		t.Fatal("a write reached the device")
	}
}

func TestNewLUValidation(t *testing.T) {
	mem := func(n int64) backstore.Device { return backstore.NewMemory(n) }
	type noUnmap struct{ backstore.Device }
	tests := []struct {
		name string
		cfg  LUConfig
		want string
	}{
		{"no device", LUConfig{Serial: "S"}, "Device is nil"},
		{"LUN too large", LUConfig{ID: 16384, Device: mem(4096), Serial: "S"}, "exceeds"},
		{"block size", LUConfig{Device: mem(4096), BlockSize: 1024, Serial: "S"}, "not 512 or 4096"},
		{"empty device", LUConfig{Device: mem(100), Serial: "S"}, "holds no"},
		{"no serial", LUConfig{Device: mem(4096)}, "Serial is required"},
		{"serial with space", LUConfig{Device: mem(4096), Serial: "a b"}, "printable"},
		{"long serial", LUConfig{Device: mem(4096), Serial: strings.Repeat("x", 65)}, "longer"},
		{"long vendor", LUConfig{Device: mem(4096), Serial: "S", Vendor: "123456789"}, "longer"},
		{"thin without unmap", LUConfig{Device: noUnmap{mem(4096)}, Serial: "S", Thin: true}, "unmap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewLU(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := NewRouter([]*LU{nil}); err == nil {
		t.Fatal("nil LU accepted")
	}
}

type sizedDevice struct {
	*backstore.Memory
	size int64
}

func (d *sizedDevice) Refresh() (backstore.Info, error) {
	i := d.Memory.Info()
	i.Size = d.size
	return i, nil
}

func TestRefresh(t *testing.T) {
	dev := &sizedDevice{Memory: backstore.NewMemory(1 << 20), size: 1 << 20}
	lu, err := NewLU(LUConfig{Device: dev, Serial: "R"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRouter([]*LU{lu})
	e := &env{t: t, r: r, lu: lu, nx: &Nexus{Key: NexusKey{InitiatorName: "i"}}}
	r.NexusAdded(e.nx)
	e.run(tur, nil, 0)
	if err := lu.Refresh(); err != nil {
		t.Fatal(err)
	}
	good(t, e.run(tur, nil, 0)) // unchanged: no UA
	dev.size = 1 << 19
	if err := lu.Refresh(); err != nil {
		t.Fatal(err)
	}
	check(t, e.run(tur, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCCapacityDataChanged)
	if lu.Capacity() != 1024 {
		t.Fatalf("capacity %d", lu.Capacity())
	}
	check(t, e.run(cdb10(OpRead10, 0, 1024, 1), nil, 512), StatusCheckCondition, KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestFlushAndClose(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.r.Flush(context.Background()); err != nil || e.dev.flushes != 1 {
		t.Fatalf("Flush: %v, %d flushes", err, e.dev.flushes)
	}
	e.dev.flushErr = backstore.ErrIO
	if err := e.r.Flush(context.Background()); !errors.Is(err, backstore.ErrIO) {
		t.Fatalf("Flush error: %v", err)
	}
	e.dev.flushErr = nil
	if err := e.r.Close(); err != nil {
		t.Fatal(err)
	}
	check(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), StatusCheckCondition, KeyHardwareError, ASCInternalTargetFailure)
}

func TestExecuteWithoutPlan(t *testing.T) {
	e := newEnv(t, nil)
	c := &Command{CDB: tur}
	e.r.Execute(context.Background(), c)
	check(t, c, StatusCheckCondition, KeyHardwareError, ASCInternalTargetFailure)
}

// TestConcurrentCommands runs I/O, mode changes, unit attentions, nexus
// churn and resets at once; run it with -race.
func TestConcurrentCommands(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Thin, c.Removable = true, true })
	var wg sync.WaitGroup
	worker := func(id int, fn func(n *Nexus, i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &Nexus{Key: NexusKey{InitiatorName: fmt.Sprintf("iqn.w%d", id)}}
			e.r.NexusAdded(n)
			defer e.r.NexusLost(n)
			for i := 0; i < 300; i++ {
				fn(n, i)
			}
		}()
	}
	run := func(n *Nexus, cdb, out []byte, in int) *Command {
		c := &Command{Nexus: n, CDB: cdb, ExpectedLength: uint32(in)}
		if out != nil {
			c.ExpectedLength = uint32(len(out))
		}
		e.r.Plan(c)
		if !c.Done() {
			switch c.Dir {
			case DirOut:
				c.DataOut = out[:min(int(c.XferLen), len(out))]
			case DirIn:
				c.DataIn = make([]byte, min(c.XferLen, c.ExpectedLength))
			}
			e.r.Execute(context.Background(), c)
		}
		if c.Status != StatusGood && c.Status != StatusCheckCondition {
			t.Errorf("status %v", c.Status)
		}
		return c
	}
	for w := 0; w < 4; w++ {
		worker(w, func(n *Nexus, i int) {
			lba := uint32((i*8 + w*512) % 2000)
			run(n, cdb10(OpWrite10, byte(i&1)<<3, lba, 8), fill(4096, byte(w)), 0)
			run(n, cdb10(OpRead10, 0, lba, 8), nil, 4096)
		})
	}
	worker(10, func(n *Nexus, i int) {
		cdb, list := modeSelect6(true, false, nil, cachingPage(i%2 == 0), controlPage(i%3 == 0, false))
		run(n, cdb, list, 0)
		run(n, modeSense6(false, 0, 0x3F, 0xFF, 255), nil, 255)
		run(n, requestSense(false, 18), nil, 18)
	})
	worker(11, func(n *Nexus, i int) {
		run(n, unmapCDBBytes(24), unmapParams([2]uint64{uint64(i % 2000), 16}), 0)
		run(n, cdb16(OpServiceActionIn, SAGetLBAStatus, uint64(i%2000), 64), nil, 64)
		run(n, ws16(0x08, uint64(i%1000), 9), make([]byte, 512), 0)
		run(n, []byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	})
	worker(12, func(n *Nexus, i int) {
		run(n, preventOn, nil, 0)
		run(n, preventOff, nil, 0)
		if i%50 == 0 {
			_ = e.r.LogicalUnitReset(EncodeLUN(0))
			e.r.TargetReset(i%100 == 0)
			_ = e.lu.Refresh()
		}
		run(n, tur, nil, 0)
	})
	wg.Wait()
	if e.r.Panics() != 0 {
		t.Fatal("panics")
	}
}

// TestQuick: after Plan, ordinary reads and writes are quick; FUA, a write
// with the write cache off, other commands and commands already answered
// in Plan are not.
func TestQuick(t *testing.T) {
	e := newEnv(t, nil).login()
	plan := func(cdb []byte, length uint32) *Command {
		c := &Command{Nexus: e.nx, LUN: EncodeLUN(0), CDB: cdb, ExpectedLength: length}
		e.r.Plan(c)
		return c
	}
	rw10 := func(op, flags byte) []byte { return []byte{op, flags, 0, 0, 0, 8, 0, 0, 1, 0} }
	rw16 := func(op, flags byte) []byte { return []byte{op, flags, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0} }
	cases := []struct {
		name string
		cdb  []byte
		want bool
	}{
		{"READ(6)", []byte{0x08, 0, 0, 8, 1, 0}, true},
		{"WRITE(6)", []byte{0x0A, 0, 0, 8, 1, 0}, true},
		{"READ(10)", rw10(0x28, 0), true},
		{"WRITE(10)", rw10(0x2A, 0), true},
		{"READ(12)", []byte{0xA8, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0}, true},
		{"WRITE(16)", rw16(0x8A, 0), true},
		{"READ(16) FUA", rw16(0x88, 0x08), false},
		{"WRITE(10) FUA", rw10(0x2A, 0x08), false},
		{"WRITE AND VERIFY(10)", rw10(0x2E, 0), false},
		{"SYNCHRONIZE CACHE(10)", []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"INQUIRY", []byte{0x12, 0, 0, 0, 96, 0}, false},
		{"TEST UNIT READY (done in Plan)", []byte{0, 0, 0, 0, 0, 0}, false},
		{"READ(10) beyond capacity (done in Plan)", []byte{0x28, 0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, 0}, false},
	}
	for _, tc := range cases {
		if got := plan(tc.cdb, 512).Quick(); got != tc.want {
			t.Errorf("%s: Quick() = %v, want %v", tc.name, got, tc.want)
		}
	}
	e.lu.wce.Store(false)
	if plan(rw10(0x2A, 0), 512).Quick() {
		t.Error("WRITE(10) with the write cache off: Quick() = true, want false (it is written through)")
	}
	if !plan(rw10(0x28, 0), 512).Quick() {
		t.Error("READ(10) with the write cache off: Quick() = false, want true")
	}
	e.lu.wce.Store(true)
	e.lu.dev = noWaitLess{e.dev} // an O_DIRECT file: reads always wait
	if plan(rw10(0x28, 0), 512).Quick() {
		t.Error("READ(10) on a device without NoWait reads: Quick() = true, want false")
	}
	if !plan(rw10(0x2A, 0), 512).Quick() {
		t.Error("WRITE(10) on a device without NoWait reads: Quick() = false, want true")
	}
}

type noWaitLess struct{ *recDevice }

func (noWaitLess) ReadsNoWait() bool { return false }

// TestExecuteWouldBlock: a read the backing store cannot do without
// waiting (backstore.ErrWouldBlock under a NoWait context) is left undone
// and uncounted; executed again it completes.
func TestExecuteWouldBlock(t *testing.T) {
	e := newEnv(t, nil).login()
	data := bytes.Repeat([]byte{0x5A}, 512)
	if c := e.run([]byte{0x2A, 0, 0, 0, 0, 4, 0, 0, 1, 0}, data, 0); c.Status != StatusGood {
		t.Fatalf("WRITE(10): %v", c.Status)
	}
	commands := func() uint64 {
		var n uint64
		for _, c := range e.r.Stats().LUs[0].Classes {
			n += c.Commands
		}
		return n
	}
	before := commands()
	c := &Command{Nexus: e.nx, LUN: EncodeLUN(0), CDB: []byte{0x28, 0, 0, 0, 0, 4, 0, 0, 1, 0}, ExpectedLength: 512}
	e.r.Plan(c)
	if c.Done() || !c.Quick() {
		t.Fatalf("READ(10) after Plan: done %v quick %v, want a quick command to execute", c.Done(), c.Quick())
	}
	c.DataIn = make([]byte, 512)
	e.dev.readErr = backstore.ErrWouldBlock
	e.r.Execute(context.Background(), c)
	if c.Done() {
		t.Fatalf("Execute finished a read the device would have waited for: status %v", c.Status)
	}
	if n := commands() - before; n != 0 {
		t.Fatalf("a read left undone was counted: %d commands", n)
	}
	e.dev.readErr = nil
	e.r.Execute(context.Background(), c)
	if !c.Done() || c.Status != StatusGood || !bytes.Equal(c.DataIn, data) {
		t.Fatalf("second Execute: done %v status %v, same data %v", c.Done(), c.Status, bytes.Equal(c.DataIn, data))
	}
	if n := commands() - before; n != 1 {
		t.Fatalf("%d commands counted after the read completed, want 1", n)
	}
}
