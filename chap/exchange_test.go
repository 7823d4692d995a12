package chap

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// run performs an exchange the way an initiator would and returns the
// target's final answer or failure.
func run(t *testing.T, cfg *TargetConfig, offer string, respond func(alg Algorithm, id byte, c []byte) map[string]string) ([][2]string, error) {
	t.Helper()
	e := NewExchange(cfg, nil, nil)
	out, err := e.Step(map[string]string{KeyA: offer})
	if err != nil {
		return nil, err
	}
	if len(out) != 3 || out[0][0] != KeyA || out[1][0] != KeyI || out[2][0] != KeyC {
		t.Fatalf("first answer %v", out)
	}
	id, err := ParseIdentifier(out[1][1])
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeBinary(out[2][1], 1024)
	if err != nil || len(c) < e.Algorithm().Size() || len(c) < 16 {
		t.Fatalf("challenge %q: %v", out[2][1], err)
	}
	out, err = e.Step(respond(e.Algorithm(), id, c))
	if err == nil && !e.Done() {
		t.Fatal("no error but not done")
	}
	return out, err
}

func oneWay(user, secret string) func(Algorithm, byte, []byte) map[string]string {
	return func(a Algorithm, id byte, c []byte) map[string]string {
		return map[string]string{KeyN: user, KeyR: EncodeHex(Response(a, id, []byte(secret), c))}
	}
}

func TestExchange(t *testing.T) {
	cfg := &TargetConfig{
		Initiator: Credential{"user1", []byte("user1-secret-1")},
		Target:    &Credential{"target1", []byte("target1-secret-2")},
	}
	for _, offer := range []string{"5", "6", "7", "8", "5,6,7,8"} {
		if _, err := run(t, cfg, offer, oneWay("user1", "user1-secret-1")); err != nil {
			t.Errorf("CHAP_A=%s: %v", offer, err)
		}
	}
	failures := map[string]struct {
		offer   string
		respond func(Algorithm, byte, []byte) map[string]string
		reason  string
	}{
		"wrong secret": {"5", oneWay("user1", "wrong-secret-99"), "wrong CHAP_R"},
		"empty secret": {"5", oneWay("user1", ""), "wrong CHAP_R"},
		"wrong user":   {"5", oneWay("user2", "user1-secret-1"), "not the configured user"},
		"unsupported":  {"4,9", nil, "no acceptable algorithm"},
		"no response": {"5", func(Algorithm, byte, []byte) map[string]string {
			return map[string]string{KeyN: "user1"}
		}, "missing"},
		"short response": {"7", func(a Algorithm, id byte, c []byte) map[string]string {
			return map[string]string{KeyN: "user1", KeyR: EncodeHex(Response(MD5, id, []byte("user1-secret-1"), c))}
		}, "CHAP_R has 16 bytes"},
		"reflected response": {"5", func(a Algorithm, id byte, c []byte) map[string]string {
			return map[string]string{KeyN: "user1", KeyR: EncodeHex(c[:16])}
		}, "reflects"},
		"reflected challenge": {"5", func(a Algorithm, id byte, c []byte) map[string]string {
			m := oneWay("user1", "user1-secret-1")(a, id, c)
			m[KeyI], m[KeyC] = "1", EncodeHex(c)
			return m
		}, "reflects"},
		"bad CHAP_I": {"5", func(a Algorithm, id byte, c []byte) map[string]string {
			m := oneWay("user1", "user1-secret-1")(a, id, c)
			m[KeyI], m[KeyC] = "300", "0x0102030405060708"
			return m
		}, "bad CHAP_I"},
		"CHAP_I without CHAP_C": {"5", func(a Algorithm, id byte, c []byte) map[string]string {
			m := oneWay("user1", "user1-secret-1")(a, id, c)
			m[KeyI] = "3"
			return m
		}, "both CHAP_I and CHAP_C"},
		"CHAP_A again": {"5", func(a Algorithm, id byte, c []byte) map[string]string {
			m := oneWay("user1", "user1-secret-1")(a, id, c)
			m[KeyA] = "5"
			return m
		}, "twice"},
	}
	for name, tc := range failures {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.respond == nil {
				_, err = NewExchange(cfg, nil, nil).Step(map[string]string{KeyA: tc.offer})
			} else {
				_, err = run(t, cfg, tc.offer, tc.respond)
			}
			var f *Failure
			if !errors.As(err, &f) || !strings.Contains(f.Reason, tc.reason) {
				t.Fatalf("got %v, want a failure with %q", err, tc.reason)
			}
			if strings.Contains(f.Reason, "secret-") {
				t.Fatalf("reason leaks a secret: %q", f.Reason)
			}
		})
	}
}

func TestExchangeMutual(t *testing.T) {
	cfg := &TargetConfig{
		Algorithms: []Algorithm{SHA256, MD5},
		Initiator:  Credential{"user1", []byte("user1-secret-1")},
		Target:     &Credential{"target1", []byte("target1-secret-2")},
	}
	ic := []byte("initiator-challenge-0123456789ab")
	out, err := run(t, cfg, "5,7", func(a Algorithm, id byte, c []byte) map[string]string {
		if a != SHA256 {
			t.Errorf("selected %v, want SHA256", a)
		}
		m := oneWay("user1", "user1-secret-1")(a, id, c)
		m[KeyI], m[KeyC] = "77", "0b"+"aW5pdGlhdG9yLWNoYWxsZW5nZS0wMTIzNDU2Nzg5YWI="
		return m
	})
	if err != nil {
		t.Fatal(err)
	}
	want := EncodeHex(Response(SHA256, 77, []byte("target1-secret-2"), ic))
	if len(out) != 2 || out[0] != [2]string{KeyN, "target1"} || out[1] != [2]string{KeyR, want} {
		t.Fatalf("got %v, want CHAP_N=target1 CHAP_R=%s", out, want)
	}

	// Without target credentials, a request for mutual CHAP fails.
	oneWayCfg := &TargetConfig{Initiator: cfg.Initiator}
	_, err = run(t, oneWayCfg, "5", func(a Algorithm, id byte, c []byte) map[string]string {
		m := oneWay("user1", "user1-secret-1")(a, id, c)
		m[KeyI], m[KeyC] = "1", EncodeHex(ic)
		return m
	})
	if err == nil || !strings.Contains(err.Error(), "no target credentials") {
		t.Fatalf("got %v", err)
	}

	// Equal secrets are refused at login even if configuration checks
	// were bypassed.
	eq := &TargetConfig{Initiator: cfg.Initiator, Target: &Credential{"t", []byte("user1-secret-1")}}
	_, err = run(t, eq, "5", func(a Algorithm, id byte, c []byte) map[string]string {
		m := oneWay("user1", "user1-secret-1")(a, id, c)
		m[KeyI], m[KeyC] = "1", EncodeHex(ic)
		return m
	})
	if err == nil || !strings.Contains(err.Error(), "equal secrets") {
		t.Fatalf("got %v", err)
	}

	// A challenge issued on another connection is refused too.
	issued := []byte("challenge-from-another-conn-0001")
	e := NewExchange(cfg, nil, func(c []byte) bool { return bytes.Equal(c, issued) })
	out, _ = e.Step(map[string]string{KeyA: "5"})
	id, _ := ParseIdentifier(out[1][1])
	c, _ := DecodeBinary(out[2][1], 64)
	m := oneWay("user1", "user1-secret-1")(MD5, id, c)
	m[KeyI], m[KeyC] = "1", EncodeHex(issued)
	if _, err := e.Step(m); err == nil || !strings.Contains(err.Error(), "reflects") {
		t.Fatalf("got %v", err)
	}
}

func TestExchangeWhitespaceHint(t *testing.T) {
	cfg := &TargetConfig{Initiator: Credential{"username", []byte("password-1234")}}
	_, err := run(t, cfg, "5", oneWay("username", "password-1234\n"))
	var f *Failure
	if !errors.As(err, &f) || !strings.Contains(f.Hint, "trailing whitespace") {
		t.Fatalf("got %v (hint %q)", err, f.Hint)
	}
	_, err = run(t, cfg, "5", oneWay("username\n", "password-1234"))
	if !errors.As(err, &f) || !strings.Contains(f.Hint, "CHAP_N differs") {
		t.Fatalf("got %v", err)
	}
	_, err = run(t, cfg, "5", oneWay("username", "other-password"))
	if !errors.As(err, &f) || f.Hint != "" {
		t.Fatalf("unrelated secret gave hint %q", f.Hint)
	}
}

func TestExchangeOrder(t *testing.T) {
	cfg := &TargetConfig{Initiator: Credential{"u", []byte("u-secret-12345")}}
	e := NewExchange(cfg, nil, nil)
	if _, err := e.Step(map[string]string{KeyN: "u", KeyR: "0x00"}); err == nil {
		t.Fatal("response before CHAP_A accepted")
	}
	if _, err := e.Step(map[string]string{KeyA: "5"}); err == nil {
		t.Fatal("exchange continued after a failure")
	}
	e = NewExchange(cfg, nil, nil)
	if _, err := e.Step(map[string]string{KeyA: "5", "CHAP_X": "1"}); err == nil {
		t.Fatal("unknown key accepted")
	}
}
