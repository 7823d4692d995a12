package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iscsi-target/iscsi-target/internal/config"
)

// runApp runs the CLI with args and returns its exit code, stdout and stderr.
func runApp(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	app := newApp()
	var out, errb bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errb
	err := app.Run(append([]string{"iscsi-target"}, args...))
	code := exitOK
	if err != nil {
		code = exitFailure
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		errb.WriteString(err.Error() + "\n")
	}
	return code, out.String(), errb.String()
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("targets:\n  - name: iqn.2026-11.test:t\n    luns:\n      - path: /srv/x.img\n"), 0o600)
	code, out, _ := runApp(t, "config", "check", good)
	if code != exitOK || !strings.Contains(out, "ok (YAML, 1 target(s), 1 LUN(s)") {
		t.Fatalf("good file: code %d, %q", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("targets:\n  - name: iqn.2026-11.test:t\n    lunz: []\n"), 0o600)
	code, _, errs := runApp(t, "config", "check", bad)
	if code != exitUsage || !strings.Contains(errs, bad+":3:5: error: targets[0]: unknown key \"lunz\"") {
		t.Fatalf("bad file: code %d, %q", code, errs)
	}
	code, _, _ = runApp(t, "config", "check")
	if code != exitUsage {
		t.Fatalf("no argument: code %d", code)
	}
}

func TestConfigImportIETDSeed(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ietd.conf")
	data, err := os.ReadFile("../../internal/config/testdata/seed-ietd.conf")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(conf, data, 0o600)
	os.WriteFile(filepath.Join(dir, "initiators.allow"), []byte("ALL ALL\n"), 0o644)
	code, out, errs := runApp(t, "config", "import-ietd", conf)
	if code != exitOK {
		t.Fatalf("import: code %d, %s", code, errs)
	}
	f, ds := config.Parse([]byte(out))
	if len(ds.Errs()) != 0 {
		t.Fatalf("imported YAML does not parse: %v\n%s", ds, out)
	}
	tg := f.Targets[0]
	if tg.Name != "iqn.2016-04.world.srv:target00" || tg.LUNs[0].Path != "/dev/sdc" ||
		tg.CHAP == nil || tg.CHAP.Users[0].User != "username" || tg.CHAP.Users[0].Secret != "password" ||
		tg.ACL.AllowFile != filepath.Join(dir, "initiators.allow") || tg.ACL.DenyFile != "" {
		t.Fatalf("imported model %+v\n%s", tg, out)
	}
	// check detects the format and reads the same file.
	code, out, _ = runApp(t, "config", "check", conf)
	if code != exitOK || !strings.Contains(out, "ietd.conf") {
		t.Fatalf("check of ietd.conf: %d %q", code, out)
	}
	// An ietd.conf with errors prints no YAML.
	os.WriteFile(conf, []byte("Target iqn.2016-04.world.srv:t\n  Lun 0 Type=fileio\n"), 0o600)
	code, out, errs = runApp(t, "config", "import-ietd", conf)
	if code != exitUsage || out != "" || !strings.Contains(errs, conf+":2:3: error: Lun 0: Path= is required") {
		t.Fatalf("bad ietd.conf: %d %q %q", code, out, errs)
	}
}
