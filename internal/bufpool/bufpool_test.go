package bufpool

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"unsafe"
)

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func TestClassSize(t *testing.T) {
	tests := []struct{ n, want int }{
		{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {4095, 4096}, {4096, 4096},
		{4097, 8192}, {65536, 65536}, {1<<20 + 1, 2 << 20}, {16<<20 - 1, 16 << 20},
		{16 << 20, 16 << 20}, {16<<20 + 1, 16<<20 + 1},
	}
	for _, tt := range tests {
		if got := ClassSize(tt.n); got != tt.want {
			t.Errorf("ClassSize(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

// TestGetShapeAndAlignment holds many buffers of every class at once, so
// that fresh allocations land in different spans, and checks each one's
// length, capacity and alignment.
func TestGetShapeAndAlignment(t *testing.T) {
	p := New()
	var held []*[]byte
	for shift := minShift; shift <= maxShift; shift++ {
		size := 1 << shift
		count := 64
		if size >= 1<<20 {
			count = 3
		}
		for _, n := range []int{size/2 + 1, size} {
			for range count {
				bp := p.Get(n)
				b := *bp
				if len(b) != n || cap(b) != ClassSize(n) {
					t.Fatalf("Get(%d): len %d cap %d, want len %d cap %d", n, len(b), cap(b), n, ClassSize(n))
				}
				if a := addr(b); a%Align != 0 {
					t.Fatalf("Get(%d): address %#x is not %d-aligned (off by %d)", n, a, Align, a%Align)
				}
				held = append(held, bp)
			}
		}
	}
	var want int64
	for _, bp := range held {
		want += int64(cap(*bp))
	}
	if got := p.Stats().OutstandingBytes; got != want {
		t.Errorf("OutstandingBytes = %d, want %d", got, want)
	}
	for _, bp := range held {
		p.Put(bp)
	}
	st := p.Stats()
	if st.OutstandingBytes != 0 || st.Puts != uint64(len(held)) || st.Gets != uint64(len(held)) || st.Drops != 0 {
		t.Errorf("after returning all: %+v, want 0 outstanding, %d gets and puts, 0 drops", st, len(held))
	}
}

func TestAligned(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 4096, 4097, 65536, 1 << 20, 3<<20 + 7} {
		b := Aligned(n)
		if len(b) != n || cap(b) != n {
			t.Errorf("Aligned(%d): len %d cap %d", n, len(b), cap(b))
		}
		if n > 0 && addr(b)%Align != 0 {
			t.Errorf("Aligned(%d): address %#x not aligned", n, addr(b))
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("Aligned(%d)[%d] = %d, want 0", n, i, c)
			}
		}
	}
}

func TestPutDropsForeignBuffers(t *testing.T) {
	p := New()
	unaligned := Aligned(2 * Align)[1 : 1+Align : 1+Align] // class capacity, misaligned
	tests := []struct {
		name string
		b    []byte
	}{
		{"not power of two", make([]byte, 1000)},
		{"too small", make([]byte, 100)},
		{"too large", make([]byte, 0, 32<<20)},
		{"misaligned", unaligned},
		{"resliced capacity", (*p.Get(4096))[:10:100]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.Stats()
			b := tt.b
			p.Put(&b)
			after := p.Stats()
			if after.Drops != before.Drops+1 || after.Puts != before.Puts {
				t.Errorf("Put(%s): drops %d->%d puts %d->%d, want one drop", tt.name, before.Drops, after.Drops, before.Puts, after.Puts)
			}
		})
	}
	p.Put(nil) // no panic, no count
}

func TestOversize(t *testing.T) {
	p := New()
	bp := p.Get(MaxSize + 1)
	if len(*bp) != MaxSize+1 || addr(*bp)%Align != 0 {
		t.Fatalf("Get(MaxSize+1): len %d addr %#x", len(*bp), addr(*bp))
	}
	p.Put(bp)
	if st := p.Stats(); st.Drops != 1 || st.OutstandingBytes != 0 {
		t.Errorf("after oversize round trip: %+v, want 1 drop, 0 outstanding", st)
	}
}

func TestGetNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Get(-1) did not panic")
		}
	}()
	New().Get(-1)
}

// TestReuse checks that a returned buffer is handed out again rather than
// a new one allocated.
func TestReuse(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	p := New()
	runtime.GC() // a GC between Put and Get would empty the pool
	bp := p.Get(8192)
	first := addr(*bp)
	p.Put(bp)
	bp = p.Get(5000)
	if addr(*bp) != first {
		t.Errorf("Get after Put returned a different buffer")
	}
	if st := p.Stats(); st.Allocs != 1 {
		t.Errorf("Allocs = %d, want 1", st.Allocs)
	}
}

// TestZeroAllocs is the steady-state proof the style guide asks for (§2.5).
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race, so Get allocates")
	}
	p := New()
	for _, n := range []int{512, 4096, 65536, 1 << 20, MaxSize} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p.Put(p.Get(n)) // warm the class
			allocs := testing.AllocsPerRun(1000, func() {
				bp := p.Get(n)
				(*bp)[0] = 1
				p.Put(bp)
			})
			if allocs != 0 {
				t.Errorf("Get(%d)+Put: %v allocs/op, want 0", n, allocs)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	p := New()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				n := 512 << ((g + i) % 12)
				bp := p.Get(n)
				b := *bp
				b[0], b[n-1] = byte(g), byte(i)
				if b[0] != byte(g) || b[n-1] != byte(i) {
					t.Errorf("buffer shared between goroutines")
					return
				}
				p.Put(bp)
			}
		})
	}
	wg.Wait()
	if st := p.Stats(); st.OutstandingBytes != 0 || st.Gets != st.Puts {
		t.Errorf("after concurrent use: %+v, want gets == puts and 0 outstanding", st)
	}
}

func BenchmarkGetPut(b *testing.B) {
	p := New()
	for _, n := range []int{512, 4096, 65536, 1 << 20, MaxSize} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Put(p.Get(n))
			}
		})
	}
}

func BenchmarkGetPutParallel(b *testing.B) {
	p := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Put(p.Get(65536))
		}
	})
}
