// Package chap implements the Challenge-Handshake Authentication Protocol
// as iSCSI uses it (RFC 1994, RFC 7143 §12.1.3): the digest algorithms by
// their IANA numbers, CHAP_A preference matching, challenges, responses,
// the binary value encodings of CHAP_C and CHAP_R, and loading of
// credentials from files. It imports nothing else of this module.
package chap

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Algorithm is a CHAP digest algorithm, numbered as in the IANA "PPP
// Authentication Algorithms" registry used by CHAP_A (RFC 7143 §12.1.3).
type Algorithm uint8

// The algorithms iSCSI uses. Some older targets (tgt, IET) number SHA-1 as
// 7; this package follows IANA, as LIO and open-iscsi do.
const (
	MD5     Algorithm = 5
	SHA1    Algorithm = 6
	SHA256  Algorithm = 7
	SHA3256 Algorithm = 8
)

// DefaultAlgorithms is the default preference order: strongest first.
func DefaultAlgorithms() []Algorithm { return []Algorithm{SHA3256, SHA256, SHA1, MD5} }

// String returns the name open-iscsi uses in node.session.auth.chap_algs.
func (a Algorithm) String() string {
	switch a {
	case MD5:
		return "MD5"
	case SHA1:
		return "SHA1"
	case SHA256:
		return "SHA256"
	case SHA3256:
		return "SHA3-256"
	}
	return "CHAP_A(" + strconv.Itoa(int(a)) + ")"
}

// Valid reports whether a is one of the supported algorithms.
func (a Algorithm) Valid() bool { return a >= MD5 && a <= SHA3256 }

// Size is the digest length in bytes (the length of CHAP_R).
func (a Algorithm) Size() int {
	switch a {
	case MD5:
		return md5.Size
	case SHA1:
		return sha1.Size
	case SHA256, SHA3256:
		return 32
	}
	return 0
}

func (a Algorithm) newHash() hash.Hash {
	switch a {
	case MD5:
		return md5.New()
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA3256:
		return sha3.New256()
	}
	return nil
}

// ParseAlgorithm accepts an IANA number (5-8) or a name: MD5, SHA1 (SHA-1),
// SHA256 (SHA-256), SHA3-256 (SHA3256, SHA3_256), case-insensitive.
func ParseAlgorithm(s string) (Algorithm, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	switch strings.NewReplacer("-", "", "_", "").Replace(t) {
	case "5", "MD5":
		return MD5, nil
	case "6", "SHA1":
		return SHA1, nil
	case "7", "SHA256":
		return SHA256, nil
	case "8", "SHA3256":
		return SHA3256, nil
	}
	return 0, fmt.Errorf("chap: unknown algorithm %q (want MD5, SHA1, SHA256, SHA3-256 or 5-8)", s)
}

// ParseAlgorithms parses a comma-separated preference list, rejecting
// duplicates and an empty list.
func ParseAlgorithms(s string) ([]Algorithm, error) {
	var out []Algorithm
	seen := map[Algorithm]bool{}
	for _, f := range strings.Split(s, ",") {
		a, err := ParseAlgorithm(f)
		if err != nil {
			return nil, err
		}
		if seen[a] {
			return nil, fmt.Errorf("chap: algorithm %v listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// Select picks the algorithm for an initiator's CHAP_A list (RFC 7143
// §12.1.3: "CHAP_A=<A1,A2,...>"): the first of ours, in our preference
// order, that the initiator offered. Unknown or malformed list items are
// ignored, as RFC 7143 §6.2 asks of list negotiation. ok is false when
// nothing matches.
func Select(offer string, preference []Algorithm) (Algorithm, bool) {
	if len(offer) > 255 {
		return 0, false
	}
	offered := map[Algorithm]bool{}
	for _, f := range strings.Split(offer, ",") {
		n, err := strconv.ParseUint(f, 10, 8)
		if err != nil {
			continue
		}
		offered[Algorithm(n)] = true
	}
	for _, a := range preference {
		if offered[a] {
			return a, true
		}
	}
	return 0, false
}

// Response computes the CHAP response of RFC 1994 §4.1: the digest of the
// identifier octet, the secret and the challenge, concatenated.
func Response(a Algorithm, id byte, secret, challenge []byte) []byte {
	h := a.newHash()
	if h == nil {
		return nil
	}
	h.Write([]byte{id})
	h.Write(secret)
	h.Write(challenge)
	return h.Sum(nil)
}
