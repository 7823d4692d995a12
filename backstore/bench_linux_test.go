package backstore_test

import (
	"path/filepath"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

const benchSize = 64 << 20

// benchFile returns a 64 MiB file whose every page has been written, so
// that reads and writes hit the page cache.
func benchFile(b *testing.B, opts backstore.FileOptions) *backstore.File {
	b.Helper()
	opts.CreateSize = benchSize
	f, err := backstore.OpenFile(filepath.Join(b.TempDir(), "bench.img"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	buf := bufpool.Aligned(1 << 20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < benchSize; off += int64(len(buf)) {
		if err := f.WriteAt(b.Context(), buf, off, 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	return f
}

func benchIO(b *testing.B, opts backstore.FileOptions, n int, do func(f *backstore.File, p []byte, off int64) error) {
	f := benchFile(b, opts)
	buf := bufpool.Aligned(n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if err := do(f, buf, off); err != nil {
			b.Fatal(err)
		}
		off += int64(n)
		if off+int64(n) > benchSize {
			off = 0
		}
	}
}

func BenchmarkFileIO(b *testing.B) {
	read := func(f *backstore.File, p []byte, off int64) error { return f.ReadAt(b.Context(), p, off) }
	write := func(f *backstore.File, p []byte, off int64) error { return f.WriteAt(b.Context(), p, off, 0) }
	fua := func(f *backstore.File, p []byte, off int64) error {
		return f.WriteAt(b.Context(), p, off, backstore.WriteFUA)
	}
	cases := []struct {
		name string
		n    int
		do   func(*backstore.File, []byte, int64) error
		opts backstore.FileOptions
	}{
		{"ReadAt/4KiB", 4 << 10, read, backstore.FileOptions{}},
		{"ReadAt/1MiB", 1 << 20, read, backstore.FileOptions{}},
		{"WriteAt/4KiB", 4 << 10, write, backstore.FileOptions{}},
		{"WriteAt/1MiB", 1 << 20, write, backstore.FileOptions{}},
		{"WriteAtFUA/4KiB", 4 << 10, fua, backstore.FileOptions{}},
		{"Direct/ReadAt/4KiB", 4 << 10, read, backstore.FileOptions{Direct: true}},
		{"Direct/WriteAt/4KiB", 4 << 10, write, backstore.FileOptions{Direct: true}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchIO(b, c.opts, c.n, c.do) })
	}
}

func BenchmarkFileReadAtParallel4KiB(b *testing.B) {
	f := benchFile(b, backstore.FileOptions{})
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := bufpool.Aligned(4096)
		off := int64(0)
		for pb.Next() {
			if err := f.ReadAt(b.Context(), buf, off); err != nil {
				b.Error(err)
				return
			}
			off = (off + 4096) % benchSize
		}
	})
}
