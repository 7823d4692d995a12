package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// render is what the golden files hold: every diagnostic, then the
// model as YAML when the file had no errors.
func render(t *testing.T, f *File, ds Diags) string {
	t.Helper()
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.String() + "\n")
	}
	if len(ds.Errs()) == 0 && f != nil {
		out, err := Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range files {
		if strings.HasSuffix(in, ".golden") {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var f *File
			var ds Diags
			if Detect(data) == FormatIETD {
				f, ds = ParseIETD(data)
			} else {
				f, ds = Parse(data)
			}
			got := render(t, f, ds)
			golden := in + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d golden inputs", n)
	}
}
