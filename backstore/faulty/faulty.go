// Package faulty wraps a backstore.Device and injects the faults real disks
// produce — I/O errors at a given offset, a full file system, short writes,
// a slow or hung disk — so that tests can check what the initiator is told
// and that nothing leaks. It is for tests; the daemon never uses it.
package faulty

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Op selects the operations a rule applies to.
type Op uint8

// Operations.
const (
	Read Op = 1 << iota
	Write
	Flush
	Unmap // Unmap and WriteZeroes
)

// Kind is what a rule does.
type Kind uint8

// Fault kinds.
const (
	// EIO fails the operation with backstore.ErrIO; reads and writes
	// first transfer the bytes before the rule's range, so the error
	// names the first failing byte (backstore.FailedAt).
	EIO Kind = iota + 1
	// NoSpace fails with backstore.ErrNoSpace (ENOSPC on a thin file).
	NoSpace
	// ShortWrite writes the first half of the affected range, then fails
	// the write with backstore.ErrIO at the first unwritten byte.
	ShortWrite
	// Delay sleeps Rule.Delay before the operation, returning early with
	// the context's error when the task is aborted.
	Delay
	// Hang blocks, ignoring the context, until Release is called — a disk
	// whose I/O cannot be interrupted once issued.
	Hang
	// Panic panics inside the device, as a bug in a backstore would.
	Panic
)

// Rule is one injected fault.
type Rule struct {
	Ops  Op
	Kind Kind
	// Off and Len select the byte range the rule applies to: an operation
	// overlapping it is affected. Len 0 means the whole device.
	Off, Len int64
	// Delay for the Delay kind.
	Delay time.Duration
	// Times is how many operations the rule affects; 0 means every one.
	Times int
}

type rule struct {
	Rule
	left int
}

// Device is a backstore.Device with injected faults. It implements the
// optional interfaces (Unmapper, ZeroWriter, ExtentMapper, Resizer) by
// forwarding them; they fail with backstore.ErrUnsupported when the
// wrapped device lacks them, so wrap devices that have them all (Memory,
// File).
type Device struct {
	dev      backstore.Device
	mu       sync.Mutex
	rules    []*rule
	release  chan struct{}
	hits     atomic.Int64
	inflight atomic.Int64
}

// Wrap returns dev with fault injection, initially with no rules.
func Wrap(dev backstore.Device) *Device {
	return &Device{dev: dev, release: make(chan struct{})}
}

// Inject adds a rule; rules are checked in the order they were added.
func (d *Device) Inject(r Rule) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules = append(d.rules, &rule{Rule: r, left: r.Times})
}

// Clear removes every rule and releases hung operations.
func (d *Device) Clear() {
	d.mu.Lock()
	d.rules = nil
	d.mu.Unlock()
	d.Release()
}

// Release lets every operation blocked by a Hang rule continue; later Hang
// operations block again until the next Release.
func (d *Device) Release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.release)
	d.release = make(chan struct{})
}

// Hits is how many operations a rule has affected so far.
func (d *Device) Hits() int64 { return d.hits.Load() }

// InFlight is how many operations are inside the device now.
func (d *Device) InFlight() int64 { return d.inflight.Load() }

// match returns the first rule for op overlapping [off, off+n) and the
// channel a Hang waits on, consuming one of the rule's Times.
func (d *Device) match(op Op, off, n int64) (*Rule, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, r := range d.rules {
		if r.Ops&op == 0 {
			continue
		}
		if r.Len != 0 && (off+n <= r.Off || off >= r.Off+r.Len) {
			continue
		}
		if r.Times != 0 {
			r.left--
			if r.left <= 0 {
				d.rules = append(d.rules[:i:i], d.rules[i+1:]...)
			}
		}
		d.hits.Add(1)
		rr := r.Rule
		return &rr, d.release
	}
	return nil, nil
}

// faultAt is the first byte of [off, off+n) inside the rule's range.
func faultAt(r *Rule, off int64) int64 {
	if r.Len != 0 && r.Off > off {
		return r.Off
	}
	return off
}

// apply performs a rule's waiting kinds; it reports whether the caller
// should go on with the operation (and then check fail).
func apply(ctx context.Context, r *Rule, release chan struct{}) error {
	switch r.Kind {
	case Delay:
		t := time.NewTimer(r.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	case Hang:
		<-release
	case Panic:
		panic("faulty: injected panic")
	}
	return nil
}

// Error is the error an injected fault returns. It unwraps to the backstore
// sentinel and reports the failing offset to backstore.FailedAt.
type Error struct {
	Op   string
	Off  int64
	Kind error
}

func (e *Error) Error() string {
	return fmt.Sprintf("faulty: injected %s fault at byte %d: %v", e.Op, e.Off, e.Kind)
}

// Unwrap returns the backstore sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// FailedOffset implements the interface backstore.FailedAt looks for.
func (e *Error) FailedOffset() int64 { return e.Off }

// ReadAt implements backstore.Device.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.inflight.Add(1)
	defer d.inflight.Add(-1)
	r, rel := d.match(Read, off, int64(len(p)))
	if r == nil {
		return d.dev.ReadAt(ctx, p, off)
	}
	if err := apply(ctx, r, rel); err != nil {
		return err
	}
	switch r.Kind {
	case EIO, ShortWrite:
		at := faultAt(r, off)
		if at > off {
			if err := d.dev.ReadAt(ctx, p[:at-off], off); err != nil {
				return err
			}
		}
		return &Error{Op: "read", Off: at, Kind: backstore.ErrIO}
	case NoSpace:
		return &Error{Op: "read", Off: faultAt(r, off), Kind: backstore.ErrIO}
	}
	return d.dev.ReadAt(ctx, p, off)
}

// WriteAt implements backstore.Device.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64, flags backstore.WriteFlags) error {
	d.inflight.Add(1)
	defer d.inflight.Add(-1)
	r, rel := d.match(Write, off, int64(len(p)))
	if r == nil {
		return d.dev.WriteAt(ctx, p, off, flags)
	}
	if err := apply(ctx, r, rel); err != nil {
		return err
	}
	switch r.Kind {
	case EIO, NoSpace:
		at := faultAt(r, off)
		if at > off {
			if err := d.dev.WriteAt(ctx, p[:at-off], off, flags); err != nil {
				return err
			}
		}
		kind := backstore.ErrIO
		if r.Kind == NoSpace {
			kind = backstore.ErrNoSpace
		}
		return &Error{Op: "write", Off: at, Kind: kind}
	case ShortWrite:
		half := int64(len(p)) / 2
		if half > 0 {
			if err := d.dev.WriteAt(ctx, p[:half], off, flags); err != nil {
				return err
			}
		}
		return &Error{Op: "write", Off: off + half, Kind: backstore.ErrIO}
	}
	return d.dev.WriteAt(ctx, p, off, flags)
}

// Flush implements backstore.Device.
func (d *Device) Flush(ctx context.Context) error {
	d.inflight.Add(1)
	defer d.inflight.Add(-1)
	r, rel := d.match(Flush, 0, 1<<62)
	if r == nil {
		return d.dev.Flush(ctx)
	}
	if err := apply(ctx, r, rel); err != nil {
		return err
	}
	switch r.Kind {
	case EIO, ShortWrite:
		return fmt.Errorf("faulty: injected flush fault: %w", backstore.ErrIO)
	case NoSpace:
		return fmt.Errorf("faulty: injected flush fault: %w", backstore.ErrNoSpace)
	}
	return d.dev.Flush(ctx)
}

// Info implements backstore.Device.
func (d *Device) Info() backstore.Info { return d.dev.Info() }

// Close implements backstore.Device; it releases hung operations first.
func (d *Device) Close() error {
	d.Release()
	return d.dev.Close()
}

// Unmap implements backstore.Unmapper when the wrapped device does.
func (d *Device) Unmap(ctx context.Context, off, length int64) error {
	u, ok := d.dev.(backstore.Unmapper)
	if !ok {
		return backstore.ErrUnsupported
	}
	if err := d.unmapFault(ctx, off, length); err != nil {
		return err
	}
	return u.Unmap(ctx, off, length)
}

// WriteZeroes implements backstore.ZeroWriter when the wrapped device does.
func (d *Device) WriteZeroes(ctx context.Context, off, length int64) error {
	z, ok := d.dev.(backstore.ZeroWriter)
	if !ok {
		return backstore.ErrUnsupported
	}
	if err := d.unmapFault(ctx, off, length); err != nil {
		return err
	}
	return z.WriteZeroes(ctx, off, length)
}

func (d *Device) unmapFault(ctx context.Context, off, length int64) error {
	d.inflight.Add(1)
	defer d.inflight.Add(-1)
	r, rel := d.match(Unmap, off, length)
	if r == nil {
		return nil
	}
	if err := apply(ctx, r, rel); err != nil {
		return err
	}
	switch r.Kind {
	case EIO, ShortWrite:
		return &Error{Op: "unmap", Off: faultAt(r, off), Kind: backstore.ErrIO}
	case NoSpace:
		return &Error{Op: "unmap", Off: faultAt(r, off), Kind: backstore.ErrNoSpace}
	}
	return nil
}

// Extents implements backstore.ExtentMapper when the wrapped device does.
func (d *Device) Extents(ctx context.Context, off, length int64, max int) ([]backstore.Extent, error) {
	m, ok := d.dev.(backstore.ExtentMapper)
	if !ok {
		return nil, backstore.ErrUnsupported
	}
	return m.Extents(ctx, off, length, max)
}

// Refresh implements backstore.Resizer when the wrapped device does.
func (d *Device) Refresh() (backstore.Info, error) {
	r, ok := d.dev.(backstore.Resizer)
	if !ok {
		return d.dev.Info(), errors.ErrUnsupported
	}
	return r.Refresh()
}
