package pdu

import (
	"bytes"
	"fmt"
)

// Limits for the text codec (RFC 7143 §6.1). Key names are at most 63 bytes.
// Values may be long for binary keys such as CHAP_C/CHAP_R, so the default
// value limit is 8192 bytes, and the number of pairs is capped so a peer cannot
// make the target build an unbounded list.
const (
	MaxKeyLength      = 63
	MaxValueLength    = 8192
	DefaultMaxKeys    = 256
	DefaultMaxTextLen = 64 << 10
)

// KV is one key=value pair.
type KV struct {
	Key   string
	Value string
}

// Keys is an ordered list of text keys as they appeared on the wire.
type Keys []KV

// Get returns the value of the first pair named key.
func (k Keys) Get(key string) (string, bool) {
	for _, kv := range k {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Add appends a pair.
func (k *Keys) Add(key, value string) { *k = append(*k, KV{key, value}) }

// TextLimits bounds ParseText.
type TextLimits struct {
	MaxKeys  int // 0 means DefaultMaxKeys
	MaxBytes int // 0 means DefaultMaxTextLen
}

// ParseText decodes a text data segment: key=value pairs each terminated by
// a NUL byte (RFC 7143 §6.1). Empty strings between NULs (padding some
// initiators send) are skipped and the last pair may lack its NUL. A pair
// without '=', an empty or over-long key, or an over-long value is an error.
func ParseText(data []byte, lim TextLimits) (Keys, error) {
	maxKeys, maxBytes := lim.MaxKeys, lim.MaxBytes
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxTextLen
	}
	if len(data) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTextDataTooLarge, len(data), maxBytes)
	}
	var keys Keys
	for len(data) > 0 {
		var item []byte
		if i := bytes.IndexByte(data, 0); i >= 0 {
			item, data = data[:i], data[i+1:]
		} else {
			item, data = data, nil
		}
		if len(item) == 0 {
			continue
		}
		eq := bytes.IndexByte(item, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: %q has no '='", ErrMalformedText, truncate(item))
		}
		key, value := item[:eq], item[eq+1:]
		if len(key) == 0 {
			return nil, fmt.Errorf("%w: empty key", ErrMalformedText)
		}
		if len(key) > MaxKeyLength {
			return nil, fmt.Errorf("%w: key %q", ErrTextKeyTooLong, truncate(key))
		}
		if len(value) > MaxValueLength {
			return nil, fmt.Errorf("%w: value of %q is %d bytes", ErrTextKeyTooLong, key, len(value))
		}
		if !validKeyName(key) {
			return nil, fmt.Errorf("%w: invalid key name %q", ErrMalformedText, truncate(key))
		}
		if len(keys) >= maxKeys {
			return nil, fmt.Errorf("%w: more than %d", ErrTooManyTextKeys, maxKeys)
		}
		keys = append(keys, KV{string(key), string(value)})
	}
	return keys, nil
}

// validKeyName checks the key-name alphabet of RFC 7143 §6.1: letters,
// digits, '.', '-', '+', '@', '_' (and ':' used by some vendor keys).
func validKeyName(k []byte) bool {
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_', c == ':':
		default:
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	const n = 32
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// AppendText appends keys in wire form to dst.
func AppendText(dst []byte, keys Keys) []byte {
	for _, kv := range keys {
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	return dst
}
