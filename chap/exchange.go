package chap

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Credential is a CHAP name (CHAP_N) and its secret.
type Credential struct {
	User   string
	Secret []byte
}

// TargetConfig is the target side of CHAP for one kind of session.
type TargetConfig struct {
	// Algorithms in preference order; empty means DefaultAlgorithms.
	Algorithms []Algorithm
	// Initiator is the name and secret the initiator must prove.
	Initiator Credential
	// Target, when set, lets the target authenticate itself to an
	// initiator that asks for it (mutual CHAP: the initiator sends CHAP_I
	// and CHAP_C). Without it a request for mutual CHAP fails.
	Target *Credential
	// MinSecretLength is the shortest secret Validate accepts; 0 means
	// DefaultMinSecretLength.
	MinSecretLength int
}

// Validate checks the configuration: user names present, secrets long
// enough and, for mutual CHAP, the two secrets different (RFC 7143
// §12.1.3 forbids using one secret in both directions).
func (c *TargetConfig) Validate() error {
	min := c.MinSecretLength
	if min == 0 {
		min = DefaultMinSecretLength
	}
	for _, a := range c.Algorithms {
		if !a.Valid() {
			return fmt.Errorf("chap: unsupported algorithm %v", a)
		}
	}
	if err := CheckUser(c.Initiator.User); err != nil {
		return err
	}
	if err := CheckSecret(c.Initiator.Secret, min); err != nil {
		return fmt.Errorf("%w (initiator secret for user %q)", err, c.Initiator.User)
	}
	if c.Target != nil {
		if err := CheckUser(c.Target.User); err != nil {
			return err
		}
		if err := CheckSecret(c.Target.Secret, min); err != nil {
			return fmt.Errorf("%w (mutual CHAP secret for user %q)", err, c.Target.User)
		}
		if bytes.Equal(c.Target.Secret, c.Initiator.Secret) {
			return ErrEqualSecrets
		}
	}
	return nil
}

// ErrEqualSecrets rejects mutual CHAP with the same secret in both
// directions, which would let an attacker reflect challenges.
var ErrEqualSecrets = errors.New("chap: the mutual CHAP secret must differ from the initiator's secret (RFC 7143 §12.1.3)")

// Failure is an authentication failure. Reason is safe to log: it never
// contains a secret, challenge or response.
type Failure struct {
	Reason string
	// Hint, when not empty, explains a near miss that an operator can fix
	// (the secrets differ only by surrounding whitespace).
	Hint string
}

func (f *Failure) Error() string { return "chap: " + f.Reason }

func fail(format string, args ...any) *Failure {
	return &Failure{Reason: fmt.Sprintf(format, args...)}
}

type exchangeState uint8

const (
	wantAlgorithm exchangeState = iota
	wantResponse
	authenticated
	failed
)

// Exchange runs the target side of one CHAP authentication (RFC 7143
// §12.1.3):
//
//	I->T  CHAP_A=<A1,A2,...>
//	T->I  CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
//	I->T  CHAP_N=<N> CHAP_R=<R> [CHAP_I=<I'> CHAP_C=<C'>]
//	T->I  [CHAP_N=<N'> CHAP_R=<R'>]
//
// It is not safe for concurrent use; one login owns it.
type Exchange struct {
	cfg       *TargetConfig
	rand      io.Reader
	state     exchangeState
	alg       Algorithm
	id        byte
	challenge []byte
	// seen reports whether a challenge was issued by this server on any
	// connection, so one reflected from another connection is refused.
	seen func(challenge []byte) bool
}

// NewExchange starts an exchange. random is the source of identifiers
// and challenges; nil means crypto/rand. reflected, when not nil, reports
// whether a challenge from the initiator is one this server issued on
// another connection.
func NewExchange(cfg *TargetConfig, random io.Reader, reflected func([]byte) bool) *Exchange {
	if random == nil {
		random = rand.Reader
	}
	return &Exchange{cfg: cfg, rand: random, seen: reflected}
}

// Algorithm returns the selected algorithm (0 before CHAP_A was handled).
func (e *Exchange) Algorithm() Algorithm { return e.alg }

// Challenge returns the challenge sent to the initiator (nil before).
func (e *Exchange) Challenge() []byte { return e.challenge }

// Done reports whether the initiator has been authenticated.
func (e *Exchange) Done() bool { return e.state == authenticated }

// Key names.
const (
	KeyA = "CHAP_A"
	KeyI = "CHAP_I"
	KeyC = "CHAP_C"
	KeyN = "CHAP_N"
	KeyR = "CHAP_R"
)

// Step consumes the CHAP keys of one Login Request (each key at most once)
// and returns the keys to answer with, in order. An error is a *Failure;
// after it the exchange stays failed.
func (e *Exchange) Step(keys map[string]string) ([][2]string, error) {
	out, err := e.step(keys)
	if err != nil {
		e.state = failed
	}
	return out, err
}

func (e *Exchange) step(keys map[string]string) ([][2]string, error) {
	for k := range keys {
		switch k {
		case KeyA, KeyI, KeyC, KeyN, KeyR:
		default:
			return nil, fail("unknown key %.20s", k)
		}
	}
	switch e.state {
	case wantAlgorithm:
		offer, ok := keys[KeyA]
		if !ok || len(keys) != 1 {
			return nil, fail("expected CHAP_A alone in the first CHAP request")
		}
		prefs := e.cfg.Algorithms
		if len(prefs) == 0 {
			prefs = DefaultAlgorithms()
		}
		a, ok := Select(offer, prefs)
		if !ok {
			return nil, fail("no acceptable algorithm in CHAP_A=%.40q (allowed: %s)", offer, algList(prefs))
		}
		var buf [1]byte
		if _, err := io.ReadFull(e.rand, buf[:]); err != nil {
			return nil, fail("random source: %v", err)
		}
		// A challenge at least as long as the digest and never shorter
		// than 16 bytes.
		c := make([]byte, max(a.Size(), 16))
		if _, err := io.ReadFull(e.rand, c); err != nil {
			return nil, fail("random source: %v", err)
		}
		e.alg, e.id, e.challenge = a, buf[0], c
		e.state = wantResponse
		return [][2]string{
			{KeyA, fmt.Sprint(int(a))},
			{KeyI, fmt.Sprint(int(e.id))},
			{KeyC, EncodeHex(c)},
		}, nil
	case wantResponse:
		return e.verify(keys)
	case authenticated:
		return nil, fail("CHAP keys after authentication completed")
	}
	return nil, fail("exchange already failed")
}

func (e *Exchange) verify(keys map[string]string) ([][2]string, error) {
	if _, ok := keys[KeyA]; ok {
		return nil, fail("CHAP_A sent twice")
	}
	name, okN := keys[KeyN]
	rv, okR := keys[KeyR]
	if !okN || !okR {
		return nil, fail("CHAP_N or CHAP_R missing")
	}
	iv, okI := keys[KeyI]
	cv, okC := keys[KeyC]
	mutual := okI || okC
	var (
		tid byte
		tc  []byte
	)
	if mutual {
		if !okI || !okC {
			return nil, fail("mutual CHAP needs both CHAP_I and CHAP_C")
		}
		if e.cfg.Target == nil {
			return nil, fail("initiator asked for mutual CHAP, but no target credentials are configured")
		}
		var err error
		if tid, err = ParseIdentifier(iv); err != nil {
			return nil, fail("bad CHAP_I: not a number 0-255")
		}
		if tc, err = DecodeBinary(cv, MaxChallenge); err != nil {
			return nil, fail("bad CHAP_C: %v", err)
		}
		if bytes.Equal(tc, e.challenge) || (e.seen != nil && e.seen(tc)) {
			return nil, fail("initiator's CHAP_C reflects a challenge this target issued")
		}
		if bytes.Equal(e.cfg.Target.Secret, e.cfg.Initiator.Secret) {
			return nil, ErrEqualSecretsFailure()
		}
	}
	r, err := DecodeBinary(rv, e.alg.Size())
	if err != nil {
		return nil, fail("bad CHAP_R: %v", err)
	}
	if len(r) != e.alg.Size() {
		return nil, fail("CHAP_R has %d bytes, %v needs %d", len(r), e.alg, e.alg.Size())
	}
	if bytes.Equal(r, e.challenge[:min(len(r), len(e.challenge))]) {
		return nil, fail("CHAP_R reflects the target's challenge")
	}
	want := Response(e.alg, e.id, e.cfg.Initiator.Secret, e.challenge)
	userOK := subtle.ConstantTimeCompare([]byte(name), []byte(e.cfg.Initiator.User)) == 1
	respOK := subtle.ConstantTimeCompare(r, want) == 1
	if !userOK {
		f := fail("CHAP_N %.64q is not the configured user", name)
		if strings.TrimSpace(name) == e.cfg.Initiator.User {
			f.Hint = "CHAP_N differs from the configured user only by surrounding whitespace (a trailing newline from `echo user | base64`?)"
		}
		return nil, f
	}
	if !respOK {
		f := fail("wrong CHAP_R for user %q (wrong secret)", name)
		f.Hint = e.whitespaceHint(r)
		return nil, f
	}
	e.state = authenticated
	if !mutual {
		return nil, nil
	}
	t := e.cfg.Target
	return [][2]string{
		{KeyN, t.User},
		{KeyR, EncodeHex(Response(e.alg, tid, t.Secret, tc))},
	}, nil
}

// ErrEqualSecretsFailure is the login-time form of ErrEqualSecrets.
func ErrEqualSecretsFailure() *Failure {
	return &Failure{Reason: "mutual CHAP with equal secrets in both directions is refused"}
}

// whitespaceHint checks whether the initiator's response was computed with
// the configured secret plus or minus surrounding whitespace, the usual
// result of `echo secret | base64` in a Kubernetes Secret.
func (e *Exchange) whitespaceHint(r []byte) string {
	s := e.cfg.Initiator.Secret
	variants := [][]byte{
		append(append([]byte(nil), s...), '\n'),
		append(append([]byte(nil), s...), '\r', '\n'),
		append(append([]byte(nil), s...), ' '),
		bytes.TrimSpace(s),
	}
	for i, v := range variants {
		if i == len(variants)-1 && len(v) == len(s) {
			continue
		}
		if subtle.ConstantTimeCompare(r, Response(e.alg, e.id, v, e.challenge)) == 1 {
			if i == len(variants)-1 {
				return "the initiator's secret equals the configured secret without its surrounding whitespace"
			}
			return "the initiator's secret differs from the configured one only by trailing whitespace (a newline from `echo secret | base64`?); fix the initiator's secret"
		}
	}
	return ""
}

func algList(as []Algorithm) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = fmt.Sprintf("%d=%v", int(a), a)
	}
	return strings.Join(s, ",")
}
