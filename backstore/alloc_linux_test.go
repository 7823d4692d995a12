package backstore_test

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// TestFileAllocation: Used follows st_blocks through writes and punched
// holes; Available is the unallocated rest of the file (the test file
// system has room for 8 MiB).
func TestFileAllocation(t *testing.T) {
	const size = 8 << 20
	f, path := mustOpenTemp(t, size, backstore.FileOptions{})
	stBytes := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Blocks * 512
	}
	a, err := f.Allocation()
	if err != nil {
		t.Fatal(err)
	}
	if a.Used != stBytes() || a.Used+a.Available != size || !a.Shared {
		t.Fatalf("fresh file: %+v, st_blocks %d", a, stBytes())
	}
	if err := f.WriteAt(t.Context(), bytes.Repeat([]byte{1}, 2<<20), 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	a, err = f.Allocation()
	if err != nil {
		t.Fatal(err)
	}
	if a.Used != stBytes() || a.Used < 2<<20 || a.Available != size-a.Used {
		t.Fatalf("after 2 MiB: %+v, st_blocks %d", a, stBytes())
	}
	if f.Info().CanUnmap {
		if err := f.Unmap(t.Context(), 1<<20, 2<<20); err != nil {
			t.Fatal(err)
		}
		if a, err = f.Allocation(); err != nil || a.Used != stBytes() || a.Used >= 2<<20 {
			t.Fatalf("after punching: %+v (%v), st_blocks %d", a, err, stBytes())
		}
	}
	f.Close()
	if _, err := f.Allocation(); !errors.Is(err, backstore.ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

func TestMemoryAllocation(t *testing.T) {
	m := backstore.NewMemory(64 << 10)
	if err := m.WriteAt(t.Context(), make([]byte, 5000), 4096, 0); err != nil {
		t.Fatal(err)
	}
	a, err := m.Allocation()
	if err != nil || a.Used != 2*backstore.MemoryGranule || a.Available != 64<<10-a.Used || a.Shared {
		t.Fatalf("%+v %v", a, err)
	}
	if err := m.Unmap(t.Context(), 0, 64<<10); err != nil {
		t.Fatal(err)
	}
	if a, err = m.Allocation(); err != nil || a.Used != 0 {
		t.Fatalf("after unmap %+v %v", a, err)
	}
}
