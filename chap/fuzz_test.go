package chap

import (
	"testing"
)

// FuzzCHAP feeds arbitrary CHAP key values to the parsers and to an
// exchange: no panic, no output beyond the limits, errors are Failures.
func FuzzCHAP(f *testing.F) {
	for _, s := range []string{"0x00ff", "0bAAEC", "0X", "0b====", "5,6,7,8", "255", "0x1f", "", "0xabc"} {
		f.Add(s, s)
	}
	cfg := &TargetConfig{Initiator: Credential{"user", []byte("user-secret-12")}, Target: &Credential{"t", []byte("target-secret-1")}}
	f.Fuzz(func(t *testing.T, a, b string) {
		if v, err := DecodeBinary(a, 64); err == nil && (len(v) == 0 || len(v) > 64) {
			t.Fatalf("DecodeBinary(%q) returned %d bytes", a, len(v))
		}
		_, _ = ParseIdentifier(a)
		_, _ = Select(a, DefaultAlgorithms())
		e := NewExchange(cfg, nil, nil)
		out, err := e.Step(map[string]string{KeyA: a})
		if err != nil {
			if _, ok := err.(*Failure); !ok {
				t.Fatalf("error %T", err)
			}
			return
		}
		if len(out) != 3 {
			t.Fatalf("answer %v", out)
		}
		_, err = e.Step(map[string]string{KeyN: "user", KeyR: b, KeyI: a, KeyC: b})
		if err == nil {
			t.Fatalf("random response %q authenticated", b)
		}
	})
}
