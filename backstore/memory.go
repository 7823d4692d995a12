package backstore

import (
	"context"
	"fmt"
	"sync"
)

// Memory is a Device backed by a byte slice, for tests and for the
// in-process test target. It supports Unmap (the range reads back as zeros)
// and WriteZeroes, and reports its extents at MemoryGranule resolution.
// Writes are immediately "durable": Flush only counts calls.
type Memory struct {
	mu       sync.RWMutex
	data     []byte
	mapped   []bool // per granule: written since the last unmap
	readOnly bool
	closed   bool
	flushes  int
}

// MemoryGranule is the allocation unit Memory tracks for Extents.
const MemoryGranule = 4096

// NewMemory returns a zero-filled device of size bytes.
func NewMemory(size int64) *Memory {
	return &Memory{
		data:   make([]byte, size),
		mapped: make([]bool, (size+MemoryGranule-1)/MemoryGranule),
	}
}

// SetReadOnly makes writes fail with ErrReadOnly.
func (m *Memory) SetReadOnly(ro bool) {
	m.mu.Lock()
	m.readOnly = ro
	m.mu.Unlock()
}

// Flushes returns how many times Flush was called.
func (m *Memory) Flushes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.flushes
}

// Bytes returns a copy of the contents.
func (m *Memory) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

func (m *Memory) check(off, n int64) error {
	if m.closed {
		return ErrClosed
	}
	// Written so that off+n cannot overflow.
	if off < 0 || n < 0 || off > int64(len(m.data)) || n > int64(len(m.data))-off {
		return fmt.Errorf("%w: [%d, %d) of %d", ErrOutOfRange, off, off+n, len(m.data))
	}
	return nil
}

// ReadAt implements Device.
func (m *Memory) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, m.data[off:])
	return nil
}

// WriteAt implements Device.
func (m *Memory) WriteAt(ctx context.Context, p []byte, off int64, _ WriteFlags) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	if m.readOnly {
		return ErrReadOnly
	}
	copy(m.data[off:], p)
	m.mark(off, int64(len(p)), true)
	return nil
}

func (m *Memory) mark(off, n int64, mapped bool) {
	if n == 0 {
		return
	}
	for g := off / MemoryGranule; g <= (off+n-1)/MemoryGranule; g++ {
		m.mapped[g] = mapped
	}
}

// Flush implements Device.
func (m *Memory) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.flushes++
	return nil
}

// Info implements Device.
func (m *Memory) Info() Info {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Info{
		Size:              int64(len(m.data)),
		PhysicalBlockSize: MemoryGranule,
		ReadOnly:          m.readOnly,
		CanUnmap:          true,
		UnmapZeroes:       true,
	}
}

// Close implements Device.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Unmap implements Unmapper: the range reads back as zeros. Whole granules
// inside the range become unmapped.
func (m *Memory) Unmap(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, length); err != nil {
		return err
	}
	if m.readOnly {
		return ErrReadOnly
	}
	clear(m.data[off : off+length])
	first := (off + MemoryGranule - 1) / MemoryGranule
	last := (off + length) / MemoryGranule
	for g := first; g < last; g++ {
		m.mapped[g] = false
	}
	return nil
}

// WriteZeroes implements ZeroWriter. The range counts as mapped afterwards,
// as it would on a thick-provisioned disk.
func (m *Memory) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, length); err != nil {
		return err
	}
	if m.readOnly {
		return ErrReadOnly
	}
	clear(m.data[off : off+length])
	m.mark(off, length, true)
	return nil
}

// Extents implements ExtentMapper.
func (m *Memory) Extents(ctx context.Context, off, length int64, max int) ([]Extent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, length); err != nil {
		return nil, err
	}
	var out []Extent
	end := off + length
	for pos := off; pos < end && len(out) < max; {
		g := pos / MemoryGranule
		st := m.mapped[g]
		next := (g + 1) * MemoryGranule
		for next < int64(len(m.data)) && m.mapped[next/MemoryGranule] == st && next < end {
			next += MemoryGranule
		}
		if next > int64(len(m.data)) {
			next = int64(len(m.data))
		}
		out = append(out, Extent{Offset: pos, Length: next - pos, Mapped: st})
		pos = next
	}
	return out, nil
}

// Allocation implements AllocationReporter: Used is the mapped granules
// (capped at the size), Available the rest of the device.
func (m *Memory) Allocation() (Allocation, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Allocation{}, ErrClosed
	}
	var used int64
	for _, mapped := range m.mapped {
		if mapped {
			used += MemoryGranule
		}
	}
	size := int64(len(m.data))
	used = min(used, size)
	return Allocation{Used: used, Available: size - used}, nil
}
