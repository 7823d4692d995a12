package chap

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Binary values (RFC 7143 §6.1): CHAP_C and CHAP_R are "0x" followed by
// hexadecimal digits or "0b" followed by base64. The decoders bound the
// output before decoding, so a peer cannot make them allocate more than
// the caller allows.

// MaxChallenge is the longest challenge accepted from an initiator in
// mutual CHAP. RFC 7143 §12.1.3 allows up to 1024 bytes.
const MaxChallenge = 1024

// ErrMalformed reports a CHAP value that does not decode.
var ErrMalformed = errors.New("chap: malformed value")

// EncodeHex returns b as "0x" and lower-case hex digits.
func EncodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

// DecodeBinary decodes a binary value given in hex ("0x"/"0X") or base64
// ("0b"/"0B") form. It fails on an empty value, a value longer than max
// bytes, or bad digits. Hex with an odd number of digits is taken as having
// a leading zero (RFC 7143 §6.1 does not require pairs).
func DecodeBinary(s string, max int) ([]byte, error) {
	if len(s) < 3 || s[0] != '0' {
		return nil, fmt.Errorf("%w: want 0x<hex> or 0b<base64>", ErrMalformed)
	}
	body := s[2:]
	switch s[1] {
	case 'x', 'X':
		if (len(body)+1)/2 > max {
			return nil, fmt.Errorf("%w: %d hex digits exceed %d bytes", ErrMalformed, len(body), max)
		}
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("%w: bad hex digits", ErrMalformed)
		}
		return b, nil
	case 'b', 'B':
		enc := base64.StdEncoding
		if !strings.HasSuffix(body, "=") && len(body)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		if enc.DecodedLen(len(body)) > max+2 {
			return nil, fmt.Errorf("%w: base64 value exceeds %d bytes", ErrMalformed, max)
		}
		b, err := enc.Strict().DecodeString(body)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%w: bad base64", ErrMalformed)
		}
		if len(b) > max {
			return nil, fmt.Errorf("%w: base64 value exceeds %d bytes", ErrMalformed, max)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: want 0x<hex> or 0b<base64>", ErrMalformed)
}

// ParseIdentifier parses CHAP_I: a number 0-255 in decimal or "0x" hex
// (RFC 7143 §12.1.3, RFC 1994 §4.1: one octet).
func ParseIdentifier(s string) (byte, error) {
	var (
		n   uint64
		err error
	)
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		n, err = strconv.ParseUint(s[2:], 16, 8)
	case s == "" || len(s) > 3:
		err = strconv.ErrSyntax
	default:
		n, err = strconv.ParseUint(s, 10, 8)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: CHAP_I %q is not a number 0-255", ErrMalformed, truncate(s))
	}
	return byte(n), nil
}

func truncate(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}
