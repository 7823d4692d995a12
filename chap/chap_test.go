package chap

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The vectors were computed independently with Python's hashlib as
// H(identifier || secret || challenge) (RFC 1994 §4.1).
func TestResponseVectors(t *testing.T) {
	secret := []byte("iscsi-target-secret1")
	challenge := make([]byte, 16)
	for i := range challenge {
		challenge[i] = byte(i)
	}
	for _, tc := range []struct {
		alg  Algorithm
		want string
	}{
		{MD5, "2e0f20d9a0c1ec1011b27f8e2a2bb229"},
		{SHA1, "f6059dbd0eb1ec2ce72a0eda295fdaabe31631a6"},
		{SHA256, "7f2755b7d7a5d68d14cd73e31e8c2b2788d0e1488cc5ad56639b8cdc32e8a970"},
		{SHA3256, "f6372524bd20b1c5cbd2332b174b9bd00f606fd9f090d03e4b68402d0cc6c327"},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			got := Response(tc.alg, 0x2a, secret, challenge)
			if hex.EncodeToString(got) != tc.want {
				t.Errorf("got %x, want %s", got, tc.want)
			}
			if len(got) != tc.alg.Size() {
				t.Errorf("size %d, want %d", len(got), tc.alg.Size())
			}
		})
	}
}

// TestResponseConstruction checks the RFC 1994 layout against a digest
// built by hand: the identifier is one octet, then the secret, then the
// challenge.
func TestResponseConstruction(t *testing.T) {
	c, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	h := md5.New()
	h.Write([]byte{1})
	h.Write([]byte("secret"))
	h.Write(c)
	if got := Response(MD5, 1, []byte("secret"), c); !bytes.Equal(got, h.Sum(nil)) {
		t.Fatalf("got %x, want %x", got, h.Sum(nil))
	}
	if got := hex.EncodeToString(Response(MD5, 1, []byte("secret"), c)); got != "204bb003332f6932b63b47c2c4e1a547" {
		t.Fatalf("got %s", got)
	}
	if Response(Algorithm(9), 1, nil, nil) != nil {
		t.Fatal("unknown algorithm gave a response")
	}
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		offer string
		pref  []Algorithm
		want  Algorithm
		ok    bool
	}{
		{"5", DefaultAlgorithms(), MD5, true},
		{"5,6,7,8", DefaultAlgorithms(), SHA3256, true},
		{"7,5", DefaultAlgorithms(), SHA256, true},
		{"8,7,6,5", []Algorithm{MD5, SHA1}, MD5, true},
		{"5", []Algorithm{SHA256}, 0, false},
		{"junk,,6,300", DefaultAlgorithms(), SHA1, true},
		{"", DefaultAlgorithms(), 0, false},
		{"9,10", DefaultAlgorithms(), 0, false},
		{strings.Repeat("5,", 200), DefaultAlgorithms(), 0, false},
	} {
		got, ok := Select(tc.offer, tc.pref)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Select(%.20q, %v) = %v, %v; want %v, %v", tc.offer, tc.pref, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseAlgorithms(t *testing.T) {
	got, err := ParseAlgorithms("sha3-256, SHA-256,sha1,md5")
	if err != nil || len(got) != 4 || got[0] != SHA3256 || got[1] != SHA256 || got[2] != SHA1 || got[3] != MD5 {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := ParseAlgorithms("7,5"); err != nil || got[0] != SHA256 || got[1] != MD5 {
		t.Fatalf("numbers: %v %v", got, err)
	}
	for _, bad := range []string{"", "md4", "md5,md5", "9"} {
		if _, err := ParseAlgorithms(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if SHA3256.String() != "SHA3-256" || Algorithm(3).String() != "CHAP_A(3)" {
		t.Error("String")
	}
}

func TestDecodeBinary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string // hex; "" means error
	}{
		{"0x00ff", 16, "00ff"},
		{"0X0A0b", 16, "0a0b"},
		{"0xabc", 16, "0abc"},
		{"0bAAEC", 16, "000102"},
		{"0BAAECAw==", 16, "00010203"},
		{"0bAAECAw", 16, "00010203"},
		{"0x" + strings.Repeat("ab", 17), 16, ""},
		{"0b" + strings.Repeat("QUFB", 8), 16, ""},
		{"0x", 16, ""},
		{"0b", 16, ""},
		{"ff00", 16, ""},
		{"0xzz", 16, ""},
		{"0b!!!!", 16, ""},
		{"0y00", 16, ""},
		{"", 16, ""},
	} {
		got, err := DecodeBinary(tc.in, tc.max)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("%q: got %x, %v; want ErrMalformed", tc.in, got, err)
			}
			continue
		}
		if err != nil || hex.EncodeToString(got) != tc.want {
			t.Errorf("%q: got %x, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseIdentifier(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "255": 255, "7": 7, "0x1f": 31, "0xFF": 255,
		"256": -1, "-1": -1, "": -1, "0x": -1, "0x100": -1, "1234": -1, "a": -1, " 1": -1} {
		got, err := ParseIdentifier(in)
		if want < 0 {
			if err == nil {
				t.Errorf("%q accepted as %d", in, got)
			}
			continue
		}
		if err != nil || int(got) != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := TargetConfig{Initiator: Credential{"user", []byte("twelve-bytes")}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	short := TargetConfig{Initiator: Credential{"user", []byte("password")}}
	err := short.Validate()
	if err == nil || !strings.Contains(err.Error(), "at least 12") || strings.Contains(err.Error(), "password\"") {
		t.Fatalf("short secret: %v", err)
	}
	short.MinSecretLength = 8
	if err := short.Validate(); err != nil {
		t.Fatalf("min 8: %v", err)
	}
	equal := TargetConfig{Initiator: Credential{"u", []byte("same-secret-123")}, Target: &Credential{"t", []byte("same-secret-123")}}
	if err := equal.Validate(); !errors.Is(err, ErrEqualSecrets) {
		t.Fatalf("equal secrets: %v", err)
	}
	noUser := TargetConfig{Initiator: Credential{"", []byte("twelve-bytes")}}
	if noUser.Validate() == nil {
		t.Fatal("empty user accepted")
	}
	ctl := TargetConfig{Initiator: Credential{"user\n", []byte("twelve-bytes")}}
	if ctl.Validate() == nil {
		t.Fatal("user with newline accepted")
	}
	long := TargetConfig{Initiator: Credential{"u", bytes.Repeat([]byte("x"), 256)}}
	if long.Validate() == nil {
		t.Fatal("256-byte secret accepted")
	}
	badAlg := TargetConfig{Algorithms: []Algorithm{4}, Initiator: good.Initiator}
	if badAlg.Validate() == nil {
		t.Fatal("algorithm 4 accepted")
	}
}

func TestReadFileTrims(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "s")
	os.WriteFile(p, []byte("password-1234\n"), 0o600)
	v, trimmed, err := ReadFile(p)
	if err != nil || string(v) != "password-1234" || !trimmed {
		t.Fatalf("got %q %v %v", v, trimmed, err)
	}
	os.WriteFile(p, []byte("password-1234"), 0o600)
	if v, trimmed, err = ReadFile(p); err != nil || string(v) != "password-1234" || trimmed {
		t.Fatalf("got %q %v %v", v, trimmed, err)
	}
	os.WriteFile(p, []byte(" \n"), 0o600)
	if _, _, err = ReadFile(p); err == nil {
		t.Fatal("blank file accepted")
	}
	os.WriteFile(p, bytes.Repeat([]byte("a"), 5000), 0o600)
	if _, _, err = ReadFile(p); err == nil {
		t.Fatal("huge file accepted")
	}
	if _, _, err = ReadFile(filepath.Join(d, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestReadDirKubernetesLayout reads the layout the seed deployment's
// chap-secret.yaml produces when mounted ("username\n", "password\n").
func TestReadDirKubernetesLayout(t *testing.T) {
	d := t.TempDir()
	w := func(k, v string) { os.WriteFile(filepath.Join(d, k), []byte(v), 0o600) }
	w(KeySessionUser, "username\n")
	w(KeySessionPassword, "password\n")
	dc, err := ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	if dc.Session == nil || dc.Session.User != "username" || string(dc.Session.Secret) != "password" {
		t.Fatalf("session %+v", dc.Session)
	}
	if dc.SessionIn != nil || dc.Discovery != nil || len(dc.Trimmed) != 2 {
		t.Fatalf("got %+v", dc)
	}
	w(KeySessionUserIn, "target")
	if _, err := ReadDir(d); err == nil || !strings.Contains(err.Error(), KeySessionPasswordIn) {
		t.Fatalf("half pair: %v", err)
	}
	w(KeySessionPasswordIn, "target-secret-1")
	w(KeyDiscoveryUser, "disc")
	w(KeyDiscoveryPassword, "disc-secret-12")
	dc, err = ReadDir(d)
	if err != nil || dc.SessionIn.User != "target" || dc.Discovery.User != "disc" || dc.DiscoveryIn != nil {
		t.Fatalf("got %+v, %v", dc, err)
	}
	if _, err := ReadDir(t.TempDir()); err == nil {
		t.Fatal("empty directory accepted")
	}
}

func BenchmarkResponse(b *testing.B) {
	secret := []byte("iscsi-target-secret1")
	c := make([]byte, 32)
	for _, a := range DefaultAlgorithms() {
		b.Run(a.String(), func(b *testing.B) {
			for b.Loop() {
				Response(a, 1, secret, c)
			}
		})
	}
}
