package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	for in, want := range map[string]Format{
		"Target iqn.2016-04.world.srv:target00\n": FormatIETD,
		"# c\n\n  incominguser u p\n":             FormatIETD,
		"Alias x\n":                               FormatIETD,
		"targets:\n  - name: x\n":                 FormatYAML,
		"---\ntargets: []\n":                      FormatYAML,
		"- a\n":                                   FormatYAML,
		"{targets: []}\n":                         FormatYAML,
		"":                                        FormatYAML,
		"listen:\n":                               FormatYAML,
		"Target: iqn.2016-04.world.srv:target00\n": FormatYAML,
	} {
		if got := Detect([]byte(in)); got != want {
			t.Errorf("Detect(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestLoadWarnsAboutReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ietd.conf")
	data, err := os.ReadFile("testdata/seed-ietd.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, format, ds, err := Load(p)
	if err != nil || f == nil || format != FormatIETD {
		t.Fatalf("Load: %v %v %v", f, format, err)
	}
	// The file-mode warning (no line) and the short-secret warning.
	if len(ds) != 2 || ds[0].Line != 0 || !strings.Contains(ds[0].Msg, "chmod 600") ||
		ds[1].Line != 3 || !strings.Contains(ds[1].Msg, "chap_min_secret_length set to 8") || len(ds.Errs()) != 0 {
		t.Fatalf("diags %v, want the chmod and the short-secret warnings", ds)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, ds, err = Load(p); err != nil || len(ds) != 1 {
		t.Fatalf("0600 file: %v %v", ds, err)
	}
	if f.Targets[0].CHAP.Users[0].User != "username" || f.Targets[0].CHAP.Users[0].Secret != "password" {
		t.Fatalf("seed credentials not imported: %+v", f.Targets[0].CHAP)
	}
}

func TestLoadRefusesOversizeAndNonRegular(t *testing.T) {
	dir := t.TempDir()
	if _, _, _, err := Load(dir); err == nil {
		t.Fatal("a directory was accepted")
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("oversize file: %v", err)
	}
}

// TestImportRoundTrip: the YAML printed for an ietd.conf parses back to
// the same model.
func TestImportRoundTrip(t *testing.T) {
	for _, in := range []string{"testdata/golden/ietd-full.conf", "testdata/seed-ietd.conf"} {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		f, ds := ParseIETD(data)
		if len(ds.Errs()) != 0 {
			t.Fatalf("%s: %v", in, ds)
		}
		out, err := Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		g, ds := Parse(out)
		if len(ds) != 0 {
			t.Fatalf("%s: re-parse: %v\n%s", in, ds, out)
		}
		again, err := Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(out) {
			t.Fatalf("%s: round trip differs:\n%s\n---\n%s", in, out, again)
		}
	}
}

func TestDiagsErr(t *testing.T) {
	ds := Diags{{Line: 3, Column: 2, Msg: "bad"}, {Line: 4, Column: 1, Severity: Warning, Msg: "meh"}}
	err := ds.Err("x.yaml")
	if err == nil || err.Error() != "x.yaml:3:2: error: bad" {
		t.Fatalf("Err = %v", err)
	}
	if (Diags{{Severity: Warning}}).Err("x") != nil {
		t.Fatal("warnings made an error")
	}
}
