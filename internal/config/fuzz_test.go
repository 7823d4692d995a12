package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds both parsers arbitrary files: they must not panic,
// every diagnostic must carry a line inside the file (or none), and a
// file without errors must print as YAML that parses without errors.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		lines := 1
		for _, c := range data {
			if c == '\n' {
				lines++
			}
		}
		for _, parse := range []func([]byte) (*File, Diags){Parse, ParseIETD} {
			cf, ds := parse(data)
			for _, d := range ds {
				if d.Line < 0 || d.Line > lines+1 {
					t.Fatalf("diag %v outside the file's %d lines", d, lines)
				}
			}
			if len(ds.Errs()) != 0 || cf == nil {
				continue
			}
			out, err := Marshal(cf)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if _, ds2 := Parse(out); len(ds2.Errs()) != 0 {
				t.Fatalf("valid model printed as invalid YAML: %v\n%s", ds2, out)
			}
		}
	})
}
