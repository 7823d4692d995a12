package target

import (
	"io"

	"github.com/iscsi-target/iscsi-target/internal/bufpool"
)

// Receive buffering. An idle connection should hold little memory, a busy
// one should read many PDUs per system call. rxReader buffers through a
// small buffer of its own, and borrows a large one from the server's pool
// while the stream is busy (a read filled the whole buffer), returning it
// after two consecutive reads that would have fit the small one. Reads at
// least as large as the current buffer bypass it when it is empty, so
// large data segments go straight into the command's buffer.
const (
	rxSmall = 4 << 10
	rxLarge = 64 << 10
	// rxQuietFills is how many consecutive small fills give the large
	// buffer back.
	rxQuietFills = 2
)

type rxReader struct {
	rd    io.Reader
	pool  *bufpool.Pool
	small []byte
	large *[]byte // borrowed while busy
	buf   []byte  // small or *large
	r, w  int
	err   error
	full  bool // the last fill filled the buffer
	quiet int  // consecutive fills of less than rxSmall bytes
}

func newRxReader(rd io.Reader, pool *bufpool.Pool) *rxReader {
	small := make([]byte, rxSmall)
	return &rxReader{rd: rd, pool: pool, small: small, buf: small}
}

// Buffered returns the number of bytes read ahead.
func (b *rxReader) Buffered() int { return b.w - b.r }

// choose picks the buffer for the next fill; the buffer is empty.
func (b *rxReader) choose() {
	switch {
	case b.full && b.large == nil:
		b.large = b.pool.Get(rxLarge)
		b.buf = *b.large
	case b.large != nil && b.quiet >= rxQuietFills:
		b.release()
	}
}

// release returns the large buffer, if any; the buffer must be empty (or
// the reader finished).
func (b *rxReader) release() {
	if b.large != nil {
		b.pool.Put(b.large)
		b.large = nil
		b.buf = b.small
		b.r, b.w = 0, 0
	}
}

// Read implements io.Reader with bufio.Reader's contract: it returns
// buffered bytes first, and at most one read of the underlying reader.
func (b *rxReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if b.err != nil {
			err := b.err
			b.err = nil
			return 0, err
		}
		b.r, b.w = 0, 0
		b.choose()
		if len(p) >= len(b.buf) {
			// Straight into the caller's memory.
			return b.rd.Read(p)
		}
		n, err := b.rd.Read(b.buf)
		if n < 0 {
			n = 0
		}
		b.w = n
		b.full = n == len(b.buf)
		if n < rxSmall {
			b.quiet++
		} else {
			b.quiet = 0
		}
		if n == 0 {
			return 0, err
		}
		b.err = err
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
