package target

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

// chunkReader returns at most the next chunk size per Read, like a socket
// delivering segments.
type chunkReader struct {
	data   []byte
	chunks []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[0])
		c.chunks = c.chunks[1:]
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestRxReaderDataIntact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var chunks []int
	for i := 0; i < 4000; i++ {
		chunks = append(chunks, 1+rng.IntN(100<<10))
	}
	pool := bufpool.New()
	b := newRxReader(&chunkReader{data: data, chunks: chunks}, pool)
	var got []byte
	for {
		p := make([]byte, 1+rng.IntN(70<<10))
		if rng.IntN(3) == 0 {
			p = p[:48]
		}
		n, err := io.ReadFull(b, p)
		got = append(got, p[:n]...)
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d written (or different)", len(got), len(data))
	}
	b.release()
	if out := pool.Stats().OutstandingBytes; out != 0 {
		t.Fatalf("%d bytes still borrowed after release", out)
	}
}

func TestRxReaderBorrowsOnlyWhileBusy(t *testing.T) {
	pool := bufpool.New()
	// Busy: a stream of 48-byte headers arriving 64 KiB at a time.
	busy := bytes.Repeat([]byte{1}, 1<<20)
	b := newRxReader(&chunkReader{data: busy}, pool)
	hdr := make([]byte, 48)
	for i := 0; i < 1000; i++ {
		if _, err := io.ReadFull(b, hdr); err != nil {
			t.Fatal(err)
		}
	}
	if b.large == nil {
		t.Fatal("a busy stream did not get the large buffer")
	}
	// Quiet: single PDUs, each read alone; the large buffer goes back.
	idle := &chunkReader{data: bytes.Repeat([]byte{2}, 48*10), chunks: []int{48, 48, 48, 48, 48, 48, 48, 48, 48, 48}}
	b.r, b.w = 0, 0 // drop the rest of the busy stream
	b.rd = idle
	for i := 0; i < 4; i++ {
		if _, err := io.ReadFull(b, hdr); err != nil {
			t.Fatal(err)
		}
	}
	if b.large != nil {
		t.Fatal("the large buffer was kept after the stream went quiet")
	}
	if out := pool.Stats().OutstandingBytes; out != 0 {
		t.Fatalf("%d bytes still borrowed", out)
	}
	// Reads as large as the buffer bypass it.
	b.rd = &chunkReader{data: bytes.Repeat([]byte{3}, 8192)}
	big := make([]byte, 8192)
	if _, err := io.ReadFull(b, big); err != nil || b.Buffered() != 0 || b.large != nil {
		t.Fatalf("direct read: err %v, buffered %d, large %v", err, b.Buffered(), b.large != nil)
	}
}
