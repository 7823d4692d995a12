package scsi

import (
	"context"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// hotPath is a transport-like harness: one reused Command, buffers
// allocated once, Plan then Execute.
type hotPath struct {
	r   *Router
	nx  *Nexus
	c   Command
	cdb [16]byte
	buf []byte
	ctx context.Context
}

func newHotPath(tb testing.TB, size int) *hotPath {
	tb.Helper()
	lu, err := NewLU(LUConfig{Device: backstore.NewMemory(64 << 20), Serial: "BENCH"})
	if err != nil {
		tb.Fatal(err)
	}
	r, err := NewRouter([]*LU{lu})
	if err != nil {
		tb.Fatal(err)
	}
	h := &hotPath{r: r, nx: &Nexus{Key: NexusKey{InitiatorName: "iqn.bench"}}, buf: make([]byte, size), ctx: context.Background()}
	r.NexusAdded(h.nx)
	h.do(OpTestUnitReady, 0) // consume the power-on unit attention
	return h
}

func (h *hotPath) do(op OpCode, lba uint32) {
	c := &h.c
	c.Reset()
	h.cdb = [16]byte{byte(op)}
	if op != OpTestUnitReady {
		be.PutUint32(h.cdb[2:6], lba)
		be.PutUint16(h.cdb[7:9], uint16(len(h.buf)/512))
	}
	c.Nexus, c.LUN, c.CDB, c.Tag = h.nx, 0, h.cdb[:], 1
	c.ExpectedLength = uint32(len(h.buf))
	h.r.Plan(c)
	if c.Done() {
		return
	}
	if c.Dir == DirIn {
		c.DataIn = h.buf
	} else {
		c.DataOut = h.buf
	}
	h.r.Execute(h.ctx, c)
}

func (h *hotPath) mustGood(tb testing.TB) {
	if h.c.Status != StatusGood {
		tb.Fatalf("status %v, sense % x", h.c.Status, h.c.SenseData())
	}
}

func TestHotPathAllocations(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   OpCode
		size int
	}{
		{"READ(10) 4 KiB", OpRead10, 4 << 10},
		{"WRITE(10) 4 KiB", OpWrite10, 4 << 10},
		{"READ(10) 1 MiB", OpRead10, 1 << 20},
		{"WRITE(10) 1 MiB", OpWrite10, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHotPath(t, tc.size)
			lba := uint32(0)
			allocs := testing.AllocsPerRun(200, func() {
				h.do(tc.op, lba)
				lba = (lba + 8) % 1024
			})
			h.mustGood(t)
			if allocs != 0 {
				t.Fatalf("%v allocations per command, want 0", allocs)
			}
		})
	}
}

func benchIO(b *testing.B, op OpCode, size int) {
	h := newHotPath(b, size)
	blocks := uint32(size / 512)
	span := uint32(64<<20/512) - blocks
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	lba := uint32(0)
	for i := 0; i < b.N; i++ {
		h.do(op, lba)
		lba = (lba + blocks) % span
	}
	b.StopTimer()
	h.mustGood(b)
}

func BenchmarkRead10_4K(b *testing.B)  { benchIO(b, OpRead10, 4<<10) }
func BenchmarkWrite10_4K(b *testing.B) { benchIO(b, OpWrite10, 4<<10) }
func BenchmarkRead10_1M(b *testing.B)  { benchIO(b, OpRead10, 1<<20) }
func BenchmarkWrite10_1M(b *testing.B) { benchIO(b, OpWrite10, 1<<20) }

// BenchmarkPlanRead10 measures the device server's own cost, without the
// backstore copy.
func BenchmarkPlanRead10(b *testing.B) {
	h := newHotPath(b, 4<<10)
	c := &h.c
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Reset()
		h.cdb = [16]byte{byte(OpRead10), 0, 0, 0, 0, 8, 0, 0, 8}
		c.Nexus, c.CDB, c.ExpectedLength = h.nx, h.cdb[:], 4096
		h.r.Plan(c)
	}
	if c.Done() || c.XferLen != 4096 {
		b.Fatal("not planned")
	}
}
