package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/target"
)

// effectiveFor runs serve's flag parsing with args and returns the model
// serve would run.
func effectiveFor(t *testing.T, args ...string) (*config.File, error) {
	t.Helper()
	var f *config.File
	cmd := serveCommand()
	cmd.Action = func(c *cli.Context) error {
		sc, err := parseServe(c)
		if err != nil {
			return err
		}
		f, _, err = effectiveConfig(c, sc)
		return err
	}
	app := newApp()
	app.Commands = []*cli.Command{cmd}
	err := app.Run(append([]string{"iscsi-target", "serve"}, args...))
	return f, err
}

func TestFlagsOverrideTheFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.yaml")
	os.WriteFile(conf, []byte(`listen: ["127.0.0.1:3260"]
access: shared
nop_interval: 7s
limits: {max_connections: 100, data_buffer_budget: 64MiB}
targets:
  - name: iqn.2026-11.test:a
    luns: [{path: /srv/a.img}]
  - name: iqn.2026-11.test:b
    max_sessions: 3
    luns: [{path: /srv/b.img}]
`), 0o600)

	// The file alone.
	f, err := effectiveFor(t, "--config", conf)
	if err != nil {
		t.Fatal(err)
	}
	if f.Listen[0] != "127.0.0.1:3260" || f.Access != "shared" || *f.NOPInterval != 7*time.Second || len(f.Targets) != 2 {
		t.Fatalf("file model %+v", f)
	}
	if l := f.Limits; l.MaxConnections != 100 || l.DataBufferBudget != 64<<20 || l.MaxConnectionsPerSource != 64 {
		t.Fatalf("limits from the file (and the default per source): %+v", l)
	}
	if f, err := effectiveFor(t, "--max-connections-per-source", "9", "--lun", "/srv/x.img,size=1MiB"); err != nil ||
		f.Limits.MaxConnectionsPerSource != 9 || f.Limits.MaxConnections != 1024 || f.Limits.DataBufferBudget != 256<<20 {
		t.Fatalf("limits from flags alone: %v %+v", err, f.Limits)
	}
	if f, err := effectiveFor(t, "--config", conf, "--max-connections", "7"); err != nil || f.Limits.MaxConnections != 7 || f.Limits.DataBufferBudget != 64<<20 {
		t.Fatalf("--max-connections over the file: %v %+v", err, f.Limits)
	}
	// Flags on the command line win; --lun replaces the LUNs of --iqn.
	f, err = effectiveFor(t, "--config", conf, "--listen", "127.0.0.2:3261", "--access", "single-writer",
		"--nop-interval", "2s", "--max-sessions", "1", "--iqn", "iqn.2026-11.test:a", "--lun", "/srv/x.img,size=1MiB")
	if err != nil {
		t.Fatal(err)
	}
	if f.Listen[0] != "127.0.0.2:3261" || f.Access != "single-writer" || *f.NOPInterval != 2*time.Second {
		t.Fatalf("overridden model %+v", f)
	}
	if a := f.Targets[0]; a.Name != "iqn.2026-11.test:a" || len(a.LUNs) != 1 || a.LUNs[0].Path != "/srv/x.img" || a.MaxSessions != 1 {
		t.Fatalf("target a: %+v", a)
	}
	if b := f.Targets[1]; b.MaxSessions != 3 || b.LUNs[0].Path != "/srv/b.img" {
		t.Fatalf("target b (own max_sessions kept): %+v", b)
	}
	// --lun for a target the file does not have adds it.
	if f, err = effectiveFor(t, "--config", conf, "--iqn", "iqn.2026-11.test:c", "--lun", "/srv/c.img"); err != nil || len(f.Targets) != 3 {
		t.Fatalf("added target: %v %+v", err, f)
	}
	// A flag that makes the model invalid is refused: /srv/a.img twice.
	if _, err := effectiveFor(t, "--config", conf, "--iqn", "iqn.2026-11.test:c", "--lun", "/srv/a.img"); err == nil {
		t.Fatal("a LUN path served twice was accepted")
	}
	// Without --config the flags are a one-target model.
	f, err = effectiveFor(t, "--iqn", "iqn.2026-11.test:z", "--lun", "/srv/z.img", "--lun", "/srv/y.img,id=5")
	if err != nil || len(f.Targets) != 1 || len(f.Targets[0].LUNs) != 2 || *f.Targets[0].LUNs[1].ID != 5 {
		t.Fatalf("flags only: %v %+v", err, f)
	}
}

// busy_poll: the default without file or flag, the file's value, 0 as
// "off" (negative for the target), the flag over the file; the bound
// config checks is the target's.
func TestBusyPollSetting(t *testing.T) {
	if config.MaxBusyPoll != target.MaxBusyPoll {
		t.Fatalf("config.MaxBusyPoll %v, target.MaxBusyPoll %v", config.MaxBusyPoll, target.MaxBusyPoll)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.yaml")
	os.WriteFile(conf, []byte("busy_poll: 0s\ntargets:\n  - name: iqn.2026-11.test:a\n    luns: [{path: /srv/a.img}]\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"--lun", "/srv/x.img,size=1MiB"}, 50 * time.Microsecond},
		{[]string{"--lun", "/srv/x.img,size=1MiB", "--busy-poll", "200us"}, 200 * time.Microsecond},
		{[]string{"--lun", "/srv/x.img,size=1MiB", "--busy-poll", "0"}, -1},
		{[]string{"--config", conf}, -1},
		{[]string{"--config", conf, "--busy-poll", "20us"}, 20 * time.Microsecond},
	} {
		f, err := effectiveFor(t, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := busyPollOf(f); got != tc.want {
			t.Errorf("%v: busy poll %v, want %v", tc.args, got, tc.want)
		}
	}
	a, b := &config.File{}, &config.File{}
	v := 100 * time.Microsecond
	b.BusyPoll = &v
	if w := restartOnly(a, b); len(w) != 1 || w[0] != "busy_poll changed: takes effect at the next restart" {
		t.Fatalf("reload warnings %q", w)
	}
}
