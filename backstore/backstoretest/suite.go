// Package backstoretest is a conformance suite for backstore.Device
// implementations: every device (memory, file, O_DIRECT file, block
// device) must pass the same tests, so that the scsi package can rely on
// one behaviour.
//
// The suite adapts to what a device says about itself in Info: it uses
// IOAlignment-aligned offsets, lengths and buffers when IOAlignment is set,
// expects unmapped ranges to read as zeros only when UnmapZeroes is set,
// and exercises the optional interfaces (Unmapper, ZeroWriter,
// ExtentMapper) only when the device implements them.
package backstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

// Size is the size of the devices the suite asks open for.
const Size = 8 << 20

// Run runs the suite as subtests of t, each on a device of its own. open
// must return a new device of exactly size bytes whose contents read as
// zeros (and, for a thin device, are unmapped), and register with t.Cleanup
// the removal of anything else it created. The suite closes the device
// itself; open's cleanup may close it again, as Close is idempotent.
func Run(t *testing.T, open func(t *testing.T, size int64) backstore.Device) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d backstore.Device)
	}{
		{"Info", testInfo},
		{"ReadWrite", testReadWrite},
		{"ZeroLength", testZeroLength},
		{"OutOfRange", testOutOfRange},
		{"FUA", testFUA},
		{"Flush", testFlush},
		{"ConcurrentDisjointWriters", testConcurrent},
		{"Unmap", testUnmap},
		{"WriteZeroes", testWriteZeroes},
		{"Extents", testExtents},
		{"CanceledContext", testCanceled},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := open(t, Size)
			t.Cleanup(func() { d.Close() })
			tt.fn(t, d)
		})
	}
}

// unit is the smallest offset and length granule the suite uses on d.
func unit(d backstore.Device) int64 {
	return max(int64(d.Info().IOAlignment), 512)
}

// unaligned reports whether d takes byte-granular I/O.
func unaligned(d backstore.Device) bool { return d.Info().IOAlignment == 0 }

// pattern fills b with bytes that depend on their absolute device offset and
// on seed, so that data written to the wrong place or read from the wrong
// place is caught.
func pattern(b []byte, off int64, seed uint64) {
	for i := range b {
		x := (uint64(off+int64(i)) + seed<<40) * 0x9E3779B97F4A7C15
		b[i] = byte(x >> 56)
	}
}

// buffer returns an aligned buffer (O_DIRECT needs one) of n bytes.
func buffer(n int64) []byte { return bufpool.Aligned(int(n)) }

// model mirrors what the device must contain.
type model struct{ data []byte }

func newModel(size int64) *model { return &model{data: make([]byte, size)} }

func write(t *testing.T, d backstore.Device, m *model, off, n int64, seed uint64, flags backstore.WriteFlags) {
	t.Helper()
	b := buffer(n)
	pattern(b, off, seed)
	if err := d.WriteAt(t.Context(), b, off, flags); err != nil {
		t.Fatalf("WriteAt(off %d, len %d): %v", off, n, err)
	}
	if m != nil {
		copy(m.data[off:], b)
	}
}

// verify reads [off, off+n) and compares it with the model.
func verify(t *testing.T, d backstore.Device, m *model, off, n int64) {
	t.Helper()
	b := buffer(n)
	if err := d.ReadAt(t.Context(), b, off); err != nil {
		t.Fatalf("ReadAt(off %d, len %d): %v", off, n, err)
	}
	want := m.data[off : off+n]
	if bytes.Equal(b, want) {
		return
	}
	for i := range b {
		if b[i] != want[i] {
			t.Fatalf("ReadAt(off %d, len %d): byte at %d is %#02x, want %#02x", off, n, off+int64(i), b[i], want[i])
		}
	}
}

// verifyAll compares the whole device with the model in 1 MiB reads.
func verifyAll(t *testing.T, d backstore.Device, m *model) {
	t.Helper()
	for off := int64(0); off < int64(len(m.data)); off += 1 << 20 {
		verify(t, d, m, off, min(1<<20, int64(len(m.data))-off))
	}
}

// testInfo checks the fields the scsi package turns into READ CAPACITY,
// the Block Limits VPD page and LBPME/LBPRZ.
func testInfo(t *testing.T, d backstore.Device) {
	info := d.Info()
	pow2 := func(v uint32) bool { return v&(v-1) == 0 }
	if info.Size != Size {
		t.Errorf("Size = %d, want %d", info.Size, Size)
	}
	if p := info.PhysicalBlockSize; p < 512 || p > 64<<10 || !pow2(p) {
		t.Errorf("PhysicalBlockSize = %d, want a power of two in [512, 64 KiB]", p)
	}
	if l := info.LogicalBlockSize; info.BlockDevice && (l < 512 || !pow2(l) || l > info.PhysicalBlockSize) {
		t.Errorf("block device LogicalBlockSize = %d, want a power of two in [512, PhysicalBlockSize %d]", l, info.PhysicalBlockSize)
	}
	if a := info.IOAlignment; !pow2(a) || a > bufpool.Align || (a != 0) != info.Direct {
		t.Errorf("IOAlignment = %d with Direct %v, want a power of two <= %d, non-zero exactly when Direct", a, info.Direct, bufpool.Align)
	}
	if info.ReadOnly {
		t.Errorf("ReadOnly = true for a device opened for the suite")
	}
	if _, ok := d.(backstore.Unmapper); !ok && info.CanUnmap {
		t.Errorf("CanUnmap = true but the device does not implement Unmapper")
	}
}

// testReadWrite writes a distinct pattern per case and reads it back, then
// compares the whole device with the model, so a write that lands at the
// wrong offset or spills past its end is caught as well as a bad read.
func testReadWrite(t *testing.T, d backstore.Device) {
	u := unit(d)
	m := newModel(Size)
	cases := []struct {
		name   string
		off, n int64
		bytes  bool // needs byte-granular I/O
	}{
		{"first unit", 0, u, false},
		{"second unit", u, u, false},
		{"several units", 3 * u, 8 * u, false},
		{"across 64K boundary", 64<<10 - 2*u, 4 * u, false},
		{"1 MiB at 1 MiB", 1 << 20, 1 << 20, false},
		{"4 MiB unaligned to MiB", 3<<20 + 5*u, 4 << 20, false},
		{"last unit", Size - u, u, false},
		{"overwrite part of earlier write", 1<<20 + 7*u, 3 * u, false},
		{"odd offset and length", 4097, 3001, true},
		{"last byte", Size - 1, 1, true},
		{"single byte mid-block", 513, 1, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.bytes && !unaligned(d) {
				t.Skipf("device needs %d-byte aligned I/O (IOAlignment)", d.Info().IOAlignment)
			}
			write(t, d, m, c.off, c.n, uint64(i+1), 0)
			verify(t, d, m, c.off, c.n)
		})
	}
	// Everything else must be untouched: a write that landed in the wrong
	// place shows up here.
	verifyAll(t, d, m)
	t.Run("whole device", func(t *testing.T) {
		write(t, d, m, 0, Size, 99, 0)
		verifyAll(t, d, m)
	})
}

// testZeroLength: a transfer length of 0 is valid SCSI (READ(10) with 0
// blocks) and must succeed anywhere up to and including the end.
func testZeroLength(t *testing.T, d backstore.Device) {
	ctx := t.Context()
	for _, off := range []int64{0, unit(d), Size} {
		if err := d.ReadAt(ctx, nil, off); err != nil {
			t.Errorf("ReadAt(len 0, off %d) = %v, want nil", off, err)
		}
		if err := d.WriteAt(ctx, nil, off, 0); err != nil {
			t.Errorf("WriteAt(len 0, off %d) = %v, want nil", off, err)
		}
	}
}

// testOutOfRange: every ranged call must refuse, with ErrOutOfRange, any
// range not wholly inside the device, including ones whose end overflows
// int64, and must not have written anything when it refuses.
func testOutOfRange(t *testing.T, d backstore.Device) {
	ctx := t.Context()
	u := unit(d)
	buf := buffer(2 * u)
	pattern(buf, 0, 7)
	ranges := []struct {
		name   string
		off, n int64
	}{
		{"at end", Size, u},
		{"straddling end", Size - u, 2 * u},
		{"negative offset", -u, u},
		{"far past end", 1 << 40, u},
		{"offset+length overflows", math.MaxInt64 &^ (u - 1), 2 * u},
	}
	type op struct {
		name string
		do   func(off, n int64) error
	}
	ops := []op{
		{"ReadAt", func(off, n int64) error { return d.ReadAt(ctx, buf[:n], off) }},
		{"WriteAt", func(off, n int64) error { return d.WriteAt(ctx, buf[:n], off, 0) }},
		{"WriteAt FUA", func(off, n int64) error { return d.WriteAt(ctx, buf[:n], off, backstore.WriteFUA) }},
	}
	if um, ok := d.(backstore.Unmapper); ok && d.Info().CanUnmap {
		ops = append(ops, op{"Unmap", func(off, n int64) error { return um.Unmap(ctx, off, n) }})
	}
	if zw, ok := d.(backstore.ZeroWriter); ok {
		ops = append(ops, op{"WriteZeroes", func(off, n int64) error { return zw.WriteZeroes(ctx, off, n) }})
	}
	if em, ok := d.(backstore.ExtentMapper); ok {
		ops = append(ops, op{"Extents", func(off, n int64) error { _, err := em.Extents(ctx, off, n, 8); return err }})
	}
	for _, o := range ops {
		for _, r := range ranges {
			t.Run(o.name+"/"+r.name, func(t *testing.T) {
				if err := o.do(r.off, r.n); !errors.Is(err, backstore.ErrOutOfRange) {
					t.Errorf("%s(off %d, len %d) = %v, want ErrOutOfRange", o.name, r.off, r.n, err)
				}
			})
		}
	}
	// Nothing may have been written by the failed calls.
	verifyAll(t, d, newModel(Size))
}

// testFUA: durability itself cannot be observed without pulling the plug,
// but FUA writes must behave as writes in every other respect.
func testFUA(t *testing.T, d backstore.Device) {
	u := unit(d)
	m := newModel(Size)
	for i, c := range []struct{ off, n int64 }{{0, u}, {5 * u, 16 * u}, {2 << 20, 1 << 20}, {Size - u, u}} {
		write(t, d, m, c.off, c.n, uint64(i+10), backstore.WriteFUA)
		verify(t, d, m, c.off, c.n)
	}
	// A plain write and a FUA write to the same place: the later one wins.
	write(t, d, m, 4*u, 2*u, 20, 0)
	write(t, d, m, 4*u, 2*u, 21, backstore.WriteFUA)
	verifyAll(t, d, m)
}

func testFlush(t *testing.T, d backstore.Device) {
	if err := d.Flush(t.Context()); err != nil {
		t.Fatalf("Flush on a fresh device: %v", err)
	}
	m := newModel(Size)
	write(t, d, m, 0, 1<<20, 3, 0)
	if err := d.Flush(t.Context()); err != nil {
		t.Fatalf("Flush after a write: %v", err)
	}
	if err := d.Flush(t.Context()); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	verifyAll(t, d, m)
}

// testConcurrent runs writers on disjoint regions, readers and flushes at
// the same time (run it with -race), then checks each region holds exactly
// what its writer last wrote.
func testConcurrent(t *testing.T, d backstore.Device) {
	const writers = 8
	const region = Size / writers
	u := unit(d)
	m := newModel(Size) // each writer touches only its own region of m
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 4*writers)
	for w := range writers {
		wg.Go(func() {
			base := int64(w) * region
			buf := buffer(64 << 10)
			for i := range 40 {
				n := (int64(i%16) + 1) * u
				off := base + (int64(i*37)*u)%(region-n)/u*u
				b := buf[:n]
				pattern(b, off, uint64(w*1000+i))
				flags := backstore.WriteFlags(0)
				if i%5 == 0 {
					flags = backstore.WriteFUA
				}
				if err := d.WriteAt(ctx, b, off, flags); err != nil {
					errs <- fmt.Errorf("writer %d: WriteAt(off %d, len %d): %w", w, off, n, err)
					return
				}
				copy(m.data[off:], b)
			}
		})
		wg.Go(func() { // a reader racing the writer on the same region
			buf := buffer(region)
			for range 10 {
				if err := d.ReadAt(ctx, buf, int64(w)*region); err != nil {
					errs <- fmt.Errorf("reader %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := d.Flush(ctx); err != nil {
				errs <- fmt.Errorf("Flush: %w", err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	verifyAll(t, d, m)
}

// testUnmap: unmapped ranges read as zeros when the device says so
// (UnmapZeroes, which becomes LBPRZ); either way the data around them must
// survive, including partial blocks at both ends of a byte-granular unmap.
func testUnmap(t *testing.T, d backstore.Device) {
	um, ok := d.(backstore.Unmapper)
	if !ok {
		t.Skip("device does not implement Unmapper")
	}
	ctx := t.Context()
	info := d.Info()
	if !info.CanUnmap {
		if err := um.Unmap(ctx, 0, unit(d)); !errors.Is(err, backstore.ErrUnsupported) {
			t.Errorf("Unmap with CanUnmap false = %v, want ErrUnsupported", err)
		}
		return
	}
	m := newModel(Size)
	write(t, d, m, 0, 2<<20, 5, 0)
	unmap := func(off, n int64) {
		t.Helper()
		if err := um.Unmap(ctx, off, n); err != nil {
			t.Fatalf("Unmap(off %d, len %d): %v", off, n, err)
		}
		if info.UnmapZeroes {
			clear(m.data[off : off+n])
			verify(t, d, m, off, n)
		}
	}
	unmap(512<<10, 1<<20)
	// BLKDISCARD takes whole logical blocks only, and O_DIRECT cannot read
	// back a partial block.
	if !info.BlockDevice && unaligned(d) {
		unmap(1000, 5000)
		unmap(1<<20+100, 1)
	}
	if err := um.Unmap(ctx, 0, 0); err != nil {
		t.Errorf("Unmap(len 0) = %v, want nil", err)
	}
	if !info.UnmapZeroes {
		// Unmapped contents are undefined: check only the data around them.
		verify(t, d, m, 0, 512<<10)
		verify(t, d, m, 1536<<10, Size-1536<<10)
		return
	}
	verifyAll(t, d, m)
	// Writing again after an unmap must work and read back.
	write(t, d, m, 768<<10, 64<<10, 6, 0)
	verifyAll(t, d, m)
}

// testWriteZeroes: WRITE SAME with a zero block and no UNMAP bit lands here;
// the range must read as zeros and its neighbours must not change.
func testWriteZeroes(t *testing.T, d backstore.Device) {
	zw, ok := d.(backstore.ZeroWriter)
	if !ok {
		t.Skip("device does not implement ZeroWriter")
	}
	ctx := t.Context()
	m := newModel(Size)
	write(t, d, m, 0, 3<<20, 8, 0)
	zero := func(off, n int64) {
		t.Helper()
		if err := zw.WriteZeroes(ctx, off, n); err != nil {
			t.Fatalf("WriteZeroes(off %d, len %d): %v", off, n, err)
		}
		clear(m.data[off : off+n])
		verify(t, d, m, off, n)
	}
	zero(256<<10, 512<<10)
	zero(1<<20+unit(d), 3*unit(d))
	if unaligned(d) && !d.Info().BlockDevice {
		zero(2<<20+1000, 5000)
	}
	zero(1536<<10, 2<<20) // spans written and never-written data, > 1 MiB
	if err := zw.WriteZeroes(ctx, 0, 0); err != nil {
		t.Errorf("WriteZeroes(len 0) = %v, want nil", err)
	}
	verifyAll(t, d, m)
	write(t, d, m, 300<<10, 8*unit(d), 9, 0) // writable again
	verifyAll(t, d, m)
}

// checkExtents checks the ExtentMapper contract for a result: ordered,
// contiguous from off, merged, inside the device, covering the range unless
// cut short by max.
func checkExtents(t *testing.T, ext []backstore.Extent, off, length int64, max int) {
	t.Helper()
	if len(ext) > max {
		t.Fatalf("Extents(off %d, len %d, max %d) returned %d extents", off, length, max, len(ext))
	}
	if length > 0 && max > 0 && len(ext) == 0 {
		t.Fatalf("Extents(off %d, len %d, max %d) returned none", off, length, max)
	}
	pos := off
	for i, e := range ext {
		if e.Offset != pos || e.Length <= 0 || e.Offset+e.Length > Size {
			t.Fatalf("Extents(off %d, len %d): extent %d is %+v, want it to start at %d, be non-empty and end by %d: %+v", off, length, i, e, pos, Size, ext)
		}
		if i > 0 && ext[i-1].Mapped == e.Mapped {
			t.Fatalf("Extents(off %d, len %d): extents %d and %d are both Mapped=%v (not merged): %+v", off, length, i-1, i, e.Mapped, ext)
		}
		pos += e.Length
	}
	if len(ext) < max && pos < off+length {
		t.Fatalf("Extents(off %d, len %d, max %d): %d extents cover only up to %d: %+v", off, length, max, len(ext), pos, ext)
	}
}

// extentAt returns the extent that contains off.
func extentAt(ext []backstore.Extent, off int64) (backstore.Extent, bool) {
	for _, e := range ext {
		if off >= e.Offset && off < e.Offset+e.Length {
			return e, true
		}
	}
	return backstore.Extent{}, false
}

// testExtents checks the shape of every answer (checkExtents), that written
// data is always reported mapped, and on thin devices (CanUnmap and
// UnmapZeroes) that fresh and unmapped ranges are reported as holes, as GET
// LBA STATUS will pass them on.
func testExtents(t *testing.T, d backstore.Device) {
	em, ok := d.(backstore.ExtentMapper)
	if !ok {
		t.Skip("device does not implement ExtentMapper")
	}
	ctx := t.Context()
	info := d.Info()
	thin := info.CanUnmap && info.UnmapZeroes
	get := func(off, n int64, max int) []backstore.Extent {
		t.Helper()
		ext, err := em.Extents(ctx, off, n, max)
		if err != nil {
			t.Fatalf("Extents(off %d, len %d, max %d): %v", off, n, max, err)
		}
		checkExtents(t, ext, off, n, max)
		return ext
	}
	get(0, Size, 1000)
	if ext := get(0, Size, 0); len(ext) != 0 {
		t.Errorf("Extents(max 0) = %+v, want none", ext)
	}
	if ext := get(unit(d), 0, 8); len(ext) != 0 {
		t.Errorf("Extents(len 0) = %+v, want none", ext)
	}

	// Written data must be reported as mapped.
	const dataOff, dataLen = 1 << 20, 128 << 10
	write(t, d, nil, dataOff, dataLen, 11, 0)
	for _, ext := range [][]backstore.Extent{get(0, Size, 1000), get(dataOff, dataLen, 1000)} {
		for off := int64(dataOff); off < dataOff+dataLen; off += 4096 {
			if e, ok := extentAt(ext, off); !ok || !e.Mapped {
				t.Fatalf("written byte %d is not in a mapped extent: %+v", off, ext)
			}
		}
	}
	if ext := get(dataOff, dataLen, 1); len(ext) != 1 || !ext[0].Mapped || ext[0].Length < dataLen {
		t.Errorf("Extents over just the written range = %+v, want one mapped extent of >= %d bytes", ext, dataLen)
	}

	if !thin {
		return
	}
	// Thin devices: a fresh (zero-filled) region is a hole, and an unmapped
	// range becomes one again.
	if ext := get(4<<20, 64<<10, 8); ext[0].Mapped {
		t.Errorf("never-written range reported as mapped: %+v", ext)
	}
	um := d.(backstore.Unmapper)
	if err := um.Unmap(ctx, dataOff, 64<<10); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	ext := get(dataOff, dataLen, 8)
	if len(ext) < 2 || ext[0].Mapped || ext[0].Length != 64<<10 || !ext[1].Mapped {
		t.Errorf("after unmapping the first 64 KiB of the data: %+v, want a 64 KiB hole then mapped data", ext)
	}
	// max cuts the list short: hole, data, hole, data, ... from 0.
	for i := range int64(4) {
		write(t, d, nil, 6<<20+i*128<<10, 64<<10, 12, 0)
	}
	if ext := get(6<<20-64<<10, 512<<10, 3); len(ext) != 3 || ext[0].Mapped || !ext[1].Mapped || ext[2].Mapped {
		t.Errorf("Extents(max 3) over alternating data = %+v, want hole, data, hole", ext)
	}
}

// testCanceled: an aborted task (ABORT TASK, LU reset) cancels its context;
// a call that starts after that must do nothing and say why.
func testCanceled(t *testing.T, d backstore.Device) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u := unit(d)
	buf := buffer(u)
	pattern(buf, 0, 13)
	if err := d.WriteAt(ctx, buf, 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteAt with a cancelled context = %v, want context.Canceled", err)
	}
	if err := d.ReadAt(ctx, buf, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadAt with a cancelled context = %v, want context.Canceled", err)
	}
	if err := d.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a cancelled context = %v, want context.Canceled", err)
	}
	verify(t, d, newModel(Size), 0, u) // the cancelled write did nothing
}

// testClose: Close is idempotent and every later call fails with ErrClosed
// rather than touching a released descriptor.
func testClose(t *testing.T, d backstore.Device) {
	ctx := t.Context()
	m := newModel(Size)
	write(t, d, m, 0, unit(d), 14, 0)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if got := d.Info().Size; got != Size {
		t.Errorf("Info().Size after Close = %d, want %d", got, Size)
	}
	buf := buffer(unit(d))
	calls := map[string]error{
		"ReadAt":  d.ReadAt(ctx, buf, 0),
		"WriteAt": d.WriteAt(ctx, buf, 0, 0),
		"Flush":   d.Flush(ctx),
	}
	if um, ok := d.(backstore.Unmapper); ok {
		calls["Unmap"] = um.Unmap(ctx, 0, unit(d))
	}
	if zw, ok := d.(backstore.ZeroWriter); ok {
		calls["WriteZeroes"] = zw.WriteZeroes(ctx, 0, unit(d))
	}
	if em, ok := d.(backstore.ExtentMapper); ok {
		_, calls["Extents"] = em.Extents(ctx, 0, unit(d), 8)
	}
	if r, ok := d.(backstore.Resizer); ok {
		_, calls["Refresh"] = r.Refresh()
	}
	for name, err := range calls {
		if !errors.Is(err, backstore.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
