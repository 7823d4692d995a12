// Package deploy holds the deployment files (systemd unit, examples,
// Kubernetes manifests); its tests check them. The Kubernetes manifests
// are decoded into the k8s.io/api types by the separate module in
// test/k8s, so that this module does not depend on k8s.io/api.
package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const unitPath = "systemd/iscsi-target.service"

// buildDaemon builds the daemon once per test binary.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iscsi-target")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/iscsi-target")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// verifyUnit runs systemd-analyze verify on the unit text, with its
// ExecStart binary replaced by bin (verify insists that it exists). Any
// output counts as a failure: verify exits 0 on unknown keys and bad
// values, which it only prints.
func verifyUnit(t *testing.T, unit, bin string) (string, error) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found (Debian package systemd; `make deps` installs it): %v", err)
	}
	dir := t.TempDir()
	unit = strings.ReplaceAll(unit, "/usr/local/bin/iscsi-target", bin)
	path := filepath.Join(dir, "iscsi-target.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", path)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestSystemdUnitVerifies(t *testing.T) {
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildDaemon(t)
	out, err := verifyUnit(t, string(b), bin)
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The checker itself must be able to fail.
	bad := strings.Replace(string(b), "ProtectSystem=strict", "ProtectSystem=sometimes\nNoSuchKey=1", 1)
	if out, err := verifyUnit(t, bad, bin); err == nil && out == "" {
		t.Fatal("a unit with a bad value and an unknown key passed verification")
	}
}

// unitSettings parses key=value lines per section.
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q is not key=value", line)
			}
			set[section+"."+k] = append(set[section+"."+k], v)
		}
	}
	return set
}

func TestSystemdUnitHardening(t *testing.T) {
	set := unitSettings(t)
	for key, want := range map[string]string{
		"Service.Type":                    "notify",
		"Service.NotifyAccess":            "main",
		"Service.WatchdogSec":             "30s",
		"Service.ProtectSystem":           "strict",
		"Service.NoNewPrivileges":         "yes",
		"Service.PrivateTmp":              "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.AmbientCapabilities":     "",
		"Service.StateDirectory":          "iscsi-target",
		"Service.ReadWritePaths":          "-/srv/iscsi",
		"Service.ProtectHome":             "yes",
		"Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Service.User":                    "iscsi-target",
	} {
		if got := set[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}
	exec := set["Service.ExecStart"]
	if len(exec) != 1 || !strings.Contains(exec[0], "--state-dir /var/lib/iscsi-target") {
		t.Errorf("ExecStart %q: the state directory must be the StateDirectory", exec)
	}
}

// serveFlags returns the long flags of the serve command.
func serveFlags(t *testing.T, bin string) []string {
	t.Helper()
	flags := subcommandFlags(t, bin, "serve")
	if len(flags) < 5 {
		t.Fatalf("could not read the flags from serve --help: %v", flags)
	}
	return flags
}

// TestExampleFlagsExist checks that every flag the unit and the example
// /etc/default file pass to serve exists.
func TestExampleFlagsExist(t *testing.T) {
	flags := serveFlags(t, buildDaemon(t))
	var args []string
	args = append(args, strings.Fields(unitSettings(t)["Service.ExecStart"][0])...)
	b, err := os.ReadFile("examples/iscsi-target.default")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ISCSI_TARGET_ARGS="); ok {
			args = append(args, strings.Fields(strings.Trim(v, `"`))...)
			found = true
		}
	}
	if !found {
		t.Fatal("examples/iscsi-target.default sets no ISCSI_TARGET_ARGS")
	}
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if !slices.Contains(flags, name) {
			t.Errorf("flag --%s is not a serve flag", name)
		}
	}
}
