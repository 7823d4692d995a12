package pdu

import (
	"encoding/binary"
	"errors"
)

// BHSLen is the length of the Basic Header Segment (RFC 7143 §11.2.1).
const BHSLen = 48

// ReservedTag is the all-ones value used for an unused Initiator or Target
// Transfer Tag (RFC 7143 §11.18, §11.19).
const ReservedTag uint32 = 0xffffffff

// Flag bits of byte 0 and byte 1 shared by several PDUs.
const (
	flagImmediate = 0x40 // byte 0: I bit
	flagFinal     = 0x80 // byte 1: F bit (T bit in Login PDUs)
	opcodeMask    = 0x3f
)

// Errors returned by decoders. They are wrapped with detail, so compare with
// errors.Is.
var (
	ErrShortBuffer      = errors.New("iscsi: short buffer")
	ErrWrongOpcode      = errors.New("iscsi: wrong opcode for this PDU type")
	ErrBadHeaderDigest  = errors.New("iscsi: header digest mismatch")
	ErrBadDataDigest    = errors.New("iscsi: data digest mismatch")
	ErrSegmentTooLong   = errors.New("iscsi: data segment longer than MaxRecvDataSegmentLength")
	ErrAHSTooLong       = errors.New("iscsi: additional header segments too long")
	ErrMalformedAHS     = errors.New("iscsi: malformed additional header segment")
	ErrMalformedText    = errors.New("iscsi: malformed text key=value data")
	ErrTooManyTextKeys  = errors.New("iscsi: too many text keys")
	ErrTextKeyTooLong   = errors.New("iscsi: text key or value too long")
	ErrTextDataTooLarge = errors.New("iscsi: text data too large")
)

// BHS is the raw 48-byte Basic Header Segment. The accessors read the fields
// that every PDU carries at the same offset (RFC 7143 §11.2.1).
type BHS [BHSLen]byte

// Opcode returns the PDU's opcode.
func (h *BHS) Opcode() Opcode { return Opcode(h[0] & opcodeMask) }

// Immediate reports the I bit (immediate delivery).
func (h *BHS) Immediate() bool { return h[0]&flagImmediate != 0 }

// Final reports the F bit (T bit for Login PDUs).
func (h *BHS) Final() bool { return h[1]&flagFinal != 0 }

// TotalAHSLength is the length of the additional header segments in bytes.
func (h *BHS) TotalAHSLength() int { return int(h[4]) * 4 }

// DataSegmentLength is the payload length in bytes, excluding padding.
func (h *BHS) DataSegmentLength() int {
	return int(h[5])<<16 | int(h[6])<<8 | int(h[7])
}

// SetLengths stores TotalAHSLength (bytes, multiple of 4) and DataSegmentLength.
func (h *BHS) SetLengths(ahsBytes, dataLen int) {
	h[4] = byte(ahsBytes / 4)
	h[5] = byte(dataLen >> 16)
	h[6] = byte(dataLen >> 8)
	h[7] = byte(dataLen)
}

// LUN returns bytes 8-15 as an integer (the raw SAM LUN field for the PDUs
// that carry one).
func (h *BHS) LUN() uint64 { return binary.BigEndian.Uint64(h[8:16]) }

// InitiatorTaskTag returns bytes 16-19.
func (h *BHS) InitiatorTaskTag() uint32 { return binary.BigEndian.Uint32(h[16:20]) }

// Reset zeroes the header.
func (h *BHS) Reset() { *h = BHS{} }

func (h *BHS) u32(off int) uint32       { return binary.BigEndian.Uint32(h[off : off+4]) }
func (h *BHS) setU32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:off+4], v) }
func (h *BHS) u16(off int) uint16       { return binary.BigEndian.Uint16(h[off : off+2]) }
func (h *BHS) setU16(off int, v uint16) { binary.BigEndian.PutUint16(h[off:off+2], v) }
func (h *BHS) u64(off int) uint64       { return binary.BigEndian.Uint64(h[off : off+8]) }
func (h *BHS) setU64(off int, v uint64) { binary.BigEndian.PutUint64(h[off:off+8], v) }

// setOpcode writes byte 0 with the opcode and the immediate bit.
func (h *BHS) setOpcode(op Opcode, immediate bool) {
	b := byte(op) & opcodeMask
	if immediate {
		b |= flagImmediate
	}
	h[0] = b
}

func boolBit(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

// Pad returns the number of padding bytes that follow n bytes of data so the
// next segment starts on a 4-byte boundary (RFC 7143 §11.2.3).
func Pad(n int) int { return (4 - n&3) & 3 }
