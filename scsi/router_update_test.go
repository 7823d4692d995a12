package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

var turCDB = []byte{0, 0, 0, 0, 0, 0}

func reportLUNs(t *testing.T, e *env) []uint16 {
	t.Helper()
	cdb := []byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	c := e.runOn(e.nx, 0, cdb, nil, 256)
	good(t, c)
	b := dataIn(c)
	var ids []uint16
	for i := 8; i+8 <= len(b); i += 8 {
		id, ok := DecodeLUN(binary.BigEndian.Uint64(b[i:]))
		if !ok {
			t.Fatalf("bad LUN in REPORT LUNS: % x", b[i:i+8])
		}
		ids = append(ids, id)
	}
	return ids
}

func newMemLU(t *testing.T, id uint16, dev backstore.Device) *LU {
	t.Helper()
	if dev == nil {
		dev = backstore.NewMemory(1 << 20)
	}
	lu, err := NewLU(LUConfig{ID: id, Device: dev, Serial: "SN-ADD"})
	if err != nil {
		t.Fatal(err)
	}
	return lu
}

func TestAddLUWhileServing(t *testing.T) {
	e := newEnv(t, nil).login()
	lu := newMemLU(t, 3, nil)
	if err := e.r.AddLU(lu); err != nil {
		t.Fatal(err)
	}
	if err := e.r.AddLU(newMemLU(t, 3, nil)); err == nil {
		t.Fatal("a second LUN 3 was accepted")
	}
	for _, n := range []*Nexus{e.nx, e.nx2} {
		// The existing LU reports the inventory change once ...
		check(t, e.runOn(n, 0, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCReportedLUNsDataChanged)
		good(t, e.runOn(n, 0, turCDB, nil, 0))
		// ... and the new LU starts with the power-on condition.
		check(t, e.runOn(n, 3, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
		good(t, e.runOn(n, 3, turCDB, nil, 0))
	}
	if got := reportLUNs(t, e); len(got) != 2 || got[0] != 0 || got[1] != 3 {
		t.Fatalf("REPORT LUNS = %v, want [0 3]", got)
	}
	if e.r.LU(3) != lu || len(e.r.LUNs()) != 2 {
		t.Fatal("LU/LUNs do not show the new LU")
	}
	// A nexus that logs in later sees both LUs.
	late := &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:late", TargetName: "iqn.2026-01.test:tgt", TPGT: 1}}
	e.r.NexusAdded(late)
	check(t, e.runOn(late, 3, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
}

func TestRemoveLUWhileServing(t *testing.T) {
	e := newEnv(t, nil)
	lu1 := newMemLU(t, 1, nil)
	if err := e.r.AddLU(lu1); err != nil {
		t.Fatal(err)
	}
	e.login()
	good(t, e.runOn(e.nx, 0, turCDB, nil, 0)) // 3F0E from the add was superseded by the reset
	check(t, e.runOn(e.nx, 1, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
	check(t, e.runOn(e.nx2, 1, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)

	got, err := e.r.RemoveLU(context.Background(), 1)
	if err != nil || got != lu1 {
		t.Fatalf("RemoveLU = %v, %v", got, err)
	}
	if _, err := e.r.RemoveLU(context.Background(), 1); !errors.Is(err, ErrUnknownLUN) {
		t.Fatalf("second RemoveLU: %v", err)
	}
	check(t, e.runOn(e.nx, 1, turCDB, nil, 0), StatusCheckCondition, KeyIllegalRequest, ASCLUNotSupported)
	for _, n := range []*Nexus{e.nx, e.nx2} {
		check(t, e.runOn(n, 0, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCReportedLUNsDataChanged)
		good(t, e.runOn(n, 0, turCDB, nil, 0))
	}
	if ids := reportLUNs(t, e); len(ids) != 1 || ids[0] != 0 {
		t.Fatalf("REPORT LUNS = %v, want [0]", ids)
	}
	if err := lu1.Close(); err != nil {
		t.Fatal(err)
	}
}

// blockDevice blocks reads until released.
type blockDevice struct {
	*backstore.Memory
	entered chan struct{}
	release chan struct{}
}

func (d *blockDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.entered <- struct{}{}
	<-d.release
	return d.Memory.ReadAt(ctx, p, off)
}

func TestRemoveLUDrainsExecutingCommands(t *testing.T) {
	e := newEnv(t, nil)
	dev := &blockDevice{Memory: backstore.NewMemory(1 << 20), entered: make(chan struct{}), release: make(chan struct{})}
	lu := newMemLU(t, 2, dev)
	if err := e.r.AddLU(lu); err != nil {
		t.Fatal(err)
	}
	e.login()
	check(t, e.runOn(e.nx, 2, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)

	// One READ executing inside the device, one planned but not started.
	running := &Command{Nexus: e.nx, LUN: EncodeLUN(2), CDB: cdb10(OpRead10, 0, 0, 1), ExpectedLength: 512}
	e.r.Plan(running)
	running.DataIn = make([]byte, 512)
	done := make(chan struct{})
	go func() {
		e.r.Execute(context.Background(), running)
		close(done)
	}()
	<-dev.entered
	planned := &Command{Nexus: e.nx, LUN: EncodeLUN(2), CDB: cdb10(OpRead10, 0, 0, 1), ExpectedLength: 512}
	e.r.Plan(planned)
	if planned.Done() {
		t.Fatal("READ completed in Plan")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := e.r.RemoveLU(ctx, 2)
	if got != lu || !errors.Is(err, context.Canceled) {
		t.Fatalf("RemoveLU with a command executing and an ended context = %v, %v; want the LU and context.Canceled", got, err)
	}
	planned.DataIn = make([]byte, 512)
	e.r.Execute(context.Background(), planned)
	check(t, planned, StatusCheckCondition, KeyIllegalRequest, ASCLUNotSupported)

	close(dev.release)
	<-done
	good(t, running)
	if err := lu.Drain(context.Background()); err != nil {
		t.Fatalf("Drain after the command finished: %v", err)
	}
}

// TestInventoryChangesUnderLoad adds and removes LUs while other
// goroutines run commands on all LUNs (run with -race).
func TestInventoryChangesUnderLoad(t *testing.T) {
	e := newEnv(t, nil).login()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			nx := &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:w", ISID: [6]byte{byte(w)}, TargetName: "t", TPGT: 1}}
			e.r.NexusAdded(nx)
			defer e.r.NexusLost(nx)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := &Command{Nexus: nx, LUN: EncodeLUN(uint16(i % 3)), CDB: cdb10(OpRead10, 0, uint32(i%16), 1), ExpectedLength: 512}
				e.r.Plan(c)
				if !c.Done() {
					c.DataIn = make([]byte, c.XferLen)
					e.r.Execute(context.Background(), c)
				}
				if c.Status != StatusGood && c.Status != StatusCheckCondition {
					t.Errorf("status %v", c.Status)
					return
				}
			}
		}(w)
	}
	for i := 0; i < 40; i++ {
		id := uint16(1 + i%2)
		lu := newMemLU(t, id, nil)
		if err := e.r.AddLU(lu); err != nil {
			t.Fatal(err)
		}
		got, err := e.r.RemoveLU(context.Background(), id)
		if err != nil || got != lu {
			t.Fatal(err)
		}
		if err := got.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestRouterRefreshSeesGrownFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lun.img")
	dev, err := backstore.OpenFile(p, backstore.FileOptions{CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil)
	lu := newMemLU(t, 4, dev)
	defer lu.Close()
	if err := e.r.AddLU(lu); err != nil {
		t.Fatal(err)
	}
	e.login()
	check(t, e.runOn(e.nx, 4, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
	if err := os.Truncate(p, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Refresh(); err != nil {
		t.Fatal(err)
	}
	check(t, e.runOn(e.nx, 4, turCDB, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCCapacityDataChanged)
	c := e.runOn(e.nx, 4, []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	good(t, c)
	if last := binary.BigEndian.Uint32(dataIn(c)); last != 3<<20/512-1 {
		t.Fatalf("READ CAPACITY last LBA %d, want %d", last, 3<<20/512-1)
	}
	// LUN 0 (a memory device) did not change: no unit attention there.
	good(t, e.runOn(e.nx, 0, turCDB, nil, 0))
}
