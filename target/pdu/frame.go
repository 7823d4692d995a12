package pdu

import (
	"fmt"
	"io"
)

// MaxAHSLength bounds the additional header segments this target accepts. The
// only AHS an initiator sends are the Extended CDB (a CDB of up to 260
// bytes) and the Bidirectional Read Expected Data Transfer Length, so 264
// bytes is ample (TotalAHSLength can claim up to 1020).
const MaxAHSLength = 264

// Digests selects which CRC32C digests are in use on a connection.
type Digests struct {
	Header bool
	Data   bool
}

// Header is a received header: the BHS plus any AHS, read and validated by
// ReadHeader. AHS points into AHSBuf.
type Header struct {
	BHS    BHS
	AHS    []byte
	AHSBuf [MaxAHSLength]byte
	// digest receives the header digest (a field, not a local, so reading
	// it through an io.Reader does not allocate).
	digest [DigestLen]byte
}

// ReadHeader reads one BHS, its AHS and its header digest from r, and checks
// the digest and the announced data segment length against maxData (the
// MaxRecvDataSegmentLength this side declared) before anything is allocated.
// The data segment is left unread: the caller reads it with ReadData into
// memory of its choosing.
func ReadHeader(r io.Reader, h *Header, d Digests, maxData int) error {
	if _, err := io.ReadFull(r, h.BHS[:]); err != nil {
		return err
	}
	ahsLen := h.BHS.TotalAHSLength()
	if ahsLen > MaxAHSLength {
		// Consume nothing more: the stream cannot be trusted.
		return fmt.Errorf("%w: %d bytes", ErrAHSTooLong, ahsLen)
	}
	h.AHS = h.AHSBuf[:ahsLen]
	if ahsLen > 0 {
		if _, err := io.ReadFull(r, h.AHS); err != nil {
			return err
		}
	}
	if d.Header {
		dg := h.digest[:]
		if _, err := io.ReadFull(r, dg); err != nil {
			return err
		}
		crc := UpdateCRC32C(CRC32C(h.BHS[:]), h.AHS)
		if got := GetDigest(dg); got != crc {
			return fmt.Errorf("%w: got %08x, computed %08x", ErrBadHeaderDigest, got, crc)
		}
	}
	if n := h.BHS.DataSegmentLength(); n > maxData {
		return fmt.Errorf("%w: %d > %d", ErrSegmentTooLong, n, maxData)
	}
	return nil
}

// ReadData reads a data segment of len(dst) bytes, its padding and, with data
// digests on, its digest. The whole segment is consumed even when the digest
// does not match, so the caller may answer with a Reject and keep reading.
func ReadData(r io.Reader, dst []byte, d Digests) error {
	return ReadSegment(r, dst, len(dst), nil, d)
}

// ReadSegment reads a data segment of n bytes, keeping the first len(dst)
// of them in dst (len(dst) <= n) and dropping the rest through scratch,
// then its padding and digest. The digest covers the whole segment.
func ReadSegment(r io.Reader, dst []byte, n int, scratch []byte, d Digests) error {
	if n == 0 {
		// An empty data segment has neither padding nor digest (RFC 7143 §11.2).
		return nil
	}
	if len(dst) > n {
		dst = dst[:n]
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return err
	}
	crc := uint32(0)
	if d.Data {
		crc = CRC32C(dst)
	}
	for rest := n - len(dst); rest > 0; {
		c := min(rest, len(scratch))
		if c == 0 {
			return fmt.Errorf("iscsi: ReadSegment needs a scratch buffer")
		}
		if _, err := io.ReadFull(r, scratch[:c]); err != nil {
			return err
		}
		if d.Data {
			crc = UpdateCRC32C(crc, scratch[:c])
		}
		rest -= c
	}
	pad := Pad(n)
	m := pad
	if d.Data {
		m += DigestLen
	}
	if m == 0 {
		return nil
	}
	// The tail goes through scratch when there is one: a local array
	// passed to an io.Reader would be moved to the heap on every call.
	var tail []byte
	if len(scratch) >= 3+DigestLen {
		tail = scratch[:m]
	} else {
		tail = make([]byte, m)
	}
	if _, err := io.ReadFull(r, tail[:m]); err != nil {
		return err
	}
	if d.Data {
		crc = UpdateCRC32C(crc, tail[:pad])
		if got := GetDigest(tail[pad:m]); got != crc {
			return fmt.Errorf("%w: got %08x, computed %08x", ErrBadDataDigest, got, crc)
		}
	}
	return nil
}

// DiscardData reads and drops a data segment of n bytes with its padding and
// digest, using scratch as the bounce buffer. It verifies the digest, so a
// corrupted segment is still reported.
func DiscardData(r io.Reader, n int, scratch []byte, d Digests) error {
	return ReadSegment(r, nil, n, scratch, d)
}

// HeaderDigest returns the digest of a BHS followed by ahs.
func HeaderDigest(h *BHS, ahs []byte) uint32 { return UpdateCRC32C(CRC32C(h[:]), ahs) }

// Tail is the bytes that follow a data segment on the wire: padding and,
// with data digests on, the CRC32C of data plus padding.
type Tail struct {
	buf [3 + DigestLen]byte
	n   int
}

// Bytes returns the encoded tail.
func (t *Tail) Bytes() []byte { return t.buf[:t.n] }

// Compute fills t for the data segment made of parts (whose lengths sum to
// the segment length).
func (t *Tail) Compute(d Digests, parts ...[]byte) {
	total := 0
	crc := CRC32C(nil)
	for _, p := range parts {
		total += len(p)
		if d.Data {
			crc = UpdateCRC32C(crc, p)
		}
	}
	t.ComputeCRC(d, total, crc)
}

// ComputeCRC fills t for a segment of total bytes whose running CRC32C
// (without padding) is crc; with d.Data false, crc is ignored.
func (t *Tail) ComputeCRC(d Digests, total int, crc uint32) {
	pad := Pad(total)
	t.buf = [len(t.buf)]byte{}
	t.n = pad
	if d.Data && total > 0 {
		crc = UpdateCRC32C(crc, t.buf[:pad])
		PutDigest(t.buf[pad:], crc)
		t.n += DigestLen
	}
}

// ExtendedCDB returns the CDB continuation from an Extended CDB AHS
// (RFC 7143 §11.3.5), or nil if there is none. It validates the AHS chain.
func ExtendedCDB(ahs []byte) ([]byte, error) {
	var ext []byte
	for len(ahs) > 0 {
		if len(ahs) < 4 {
			return nil, fmt.Errorf("%w: truncated AHS header", ErrMalformedAHS)
		}
		l := int(ahs[0])<<8 | int(ahs[1])
		typ := ahs[2]
		// AHSLength counts the bytes after the reserved byte; each AHS is
		// padded to a 4-byte boundary.
		body := 4 + l - 1
		if l == 0 || body > len(ahs) {
			return nil, fmt.Errorf("%w: AHS length %d", ErrMalformedAHS, l)
		}
		switch typ {
		case 1: // Extended CDB: the reserved byte, then CDB bytes 16..
			if ext != nil {
				return nil, fmt.Errorf("%w: two Extended CDB AHS", ErrMalformedAHS)
			}
			ext = ahs[4:body]
		case 2: // Bidirectional Read Expected Data Transfer Length
			if l != 5 {
				return nil, fmt.Errorf("%w: bidirectional AHS length %d", ErrMalformedAHS, l)
			}
		default:
			return nil, fmt.Errorf("%w: AHS type %d", ErrMalformedAHS, typ)
		}
		body += Pad(body)
		if body > len(ahs) {
			body = len(ahs)
		}
		ahs = ahs[body:]
	}
	return ext, nil
}
