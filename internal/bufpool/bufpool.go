// Package bufpool hands out reusable byte buffers for the iSCSI data path:
// power-of-two size classes from MinSize to MaxSize, each buffer starting
// on an Align boundary so it can be used for O_DIRECT I/O.
//
// Buffers travel as *[]byte so that Get and Put do not allocate in steady
// state (a []byte stored in an interface would). A Pool is created with New
// and shared by the connections that use it; there is no package-level
// pool.
package bufpool

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"
)

const (
	// MinSize is the smallest size class.
	MinSize = 512
	// MaxSize is the largest size class: 16 MiB, above the largest
	// MaxBurstLength RFC 7143 §13.14 allows (2^24-1).
	MaxSize = 16 << 20
	// Align is the alignment of the first byte of every buffer: the page
	// size, which satisfies O_DIRECT on every logical block size in use.
	Align = 4096

	minShift   = 9  // log2(MinSize)
	maxShift   = 24 // log2(MaxSize)
	numClasses = maxShift - minShift + 1
)

// Pool is a set of size-classed buffer pools. The zero value is not usable;
// call New. A Pool is safe for concurrent use and must not be copied.
type Pool struct {
	classes [numClasses]sync.Pool

	gets        atomic.Uint64
	puts        atomic.Uint64
	drops       atomic.Uint64
	allocs      atomic.Uint64
	outstanding atomic.Int64
}

// Stats is a snapshot of a Pool's counters.
type Stats struct {
	// Gets counts Get calls.
	Gets uint64
	// Puts counts buffers accepted back by Put.
	Puts uint64
	// Drops counts buffers Put refused (wrong capacity or alignment, or
	// larger than MaxSize); they are left to the garbage collector.
	Drops uint64
	// Allocs counts buffers allocated because the class had none free.
	Allocs uint64
	// OutstandingBytes is the capacity of class buffers (n <= MaxSize)
	// handed out by Get and not yet returned with Put. It is 0 when every
	// buffer has come back; tests assert that to find leaks.
	OutstandingBytes int64
}

// New returns an empty Pool.
func New() *Pool {
	p := &Pool{}
	for i := range p.classes {
		size := MinSize << i
		p.classes[i].New = func() any {
			p.allocs.Add(1)
			b := Aligned(max(size, Align))[:size:size]
			return &b
		}
	}
	return p
}

// class returns the index of the smallest class holding n bytes.
func class(n int) int {
	if n <= MinSize {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// ClassSize returns the capacity of the buffer Get(n) returns: n rounded up
// to a power of two, at least MinSize. For n > MaxSize it returns n.
func ClassSize(n int) int {
	if n > MaxSize {
		return n
	}
	return MinSize << class(n)
}

// Get returns a buffer of length n and capacity ClassSize(n), whose first
// byte is Align-aligned. Its contents are undefined: it may hold data from
// an earlier user (another initiator's), so the caller must overwrite all n
// bytes before sending any of them. Return it with Put when done.
//
// n above MaxSize gets a fresh aligned buffer that Put will drop; callers
// validate lengths against negotiated limits first, so that is a slow path
// only. Get panics if n is negative.
func (p *Pool) Get(n int) *[]byte {
	if n < 0 {
		panic(fmt.Sprintf("bufpool: Get(%d): negative size", n))
	}
	p.gets.Add(1)
	if n > MaxSize {
		p.allocs.Add(1)
		b := Aligned(n)
		return &b
	}
	bp := p.classes[class(n)].Get().(*[]byte)
	*bp = (*bp)[:n]
	p.outstanding.Add(int64(cap(*bp)))
	return bp
}

// Put returns a buffer obtained from Get. Only buffers whose capacity is
// exactly a class size and whose first byte is aligned go back to the
// pool; anything else (a re-sliced buffer, one grown by append, one that
// did not come from a Pool) is dropped and counted. The caller must not
// touch the buffer, or the pointer, after Put.
func (p *Pool) Put(bp *[]byte) {
	if bp == nil {
		return
	}
	c := cap(*bp)
	if c < MinSize || c > MaxSize || c&(c-1) != 0 || !IsAligned((*bp)[:c]) {
		p.drops.Add(1)
		return
	}
	p.puts.Add(1)
	p.outstanding.Add(-int64(c))
	*bp = (*bp)[:0]
	p.classes[class(c)].Put(bp)
}

// Stats returns the current counters. Fields are read one at a time, so
// under concurrent use they are not a consistent snapshot.
func (p *Pool) Stats() Stats {
	return Stats{
		Gets:             p.gets.Load(),
		Puts:             p.puts.Load(),
		Drops:            p.drops.Load(),
		Allocs:           p.allocs.Load(),
		OutstandingBytes: p.outstanding.Load(),
	}
}

// Aligned returns a new zeroed slice of length and capacity n whose first
// byte is Align-aligned, for callers that need a long-lived aligned buffer
// outside a Pool (an O_DIRECT zero-fill buffer, for example).
func Aligned(n int) []byte {
	// The Go allocator places objects of 4 KiB and of every larger
	// multiple of 4 KiB on Align boundaries (their spans are page-aligned
	// and the object sizes are multiples of 4 KiB), so rounding up usually
	// suffices. That is an implementation detail, so check and fall back to
	// over-allocating and slicing at the aligned offset.
	size := (n + Align - 1) &^ (Align - 1)
	if size == 0 {
		size = Align
	}
	b := make([]byte, size)
	if !IsAligned(b) {
		b = make([]byte, size+Align)
		off := Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(Align-1))
		b = b[off : off+size]
	}
	return b[:n:n]
}

// IsAligned reports whether b's first byte is Align-aligned. An empty slice
// with capacity counts by its underlying array.
func IsAligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(Align-1) == 0
}
