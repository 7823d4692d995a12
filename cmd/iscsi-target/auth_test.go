package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/chap"
)

func parseAuthArgs(t *testing.T, env map[string]string, args ...string) (*authSettings, error) {
	t.Helper()
	var (
		as   *authSettings
		perr error
	)
	app := &cli.App{Flags: authFlags(), DisableSliceFlagSeparator: true, Action: func(c *cli.Context) error {
		as, perr = parseAuth(c, func(k string) string { return env[k] })
		return nil
	}}
	if err := app.Run(append([]string{"iscsi-target"}, args...)); err != nil {
		t.Fatal(err)
	}
	return as, perr
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseAuth(t *testing.T) {
	d := t.TempDir()
	sf := writeFile(t, d, "secret", "initiator-secret-1\n")
	mf := writeFile(t, d, "mutual", "target-secret-222")
	short := writeFile(t, d, "short", "password\n")

	as, err := parseAuthArgs(t, nil, "--chap-user", "user1", "--chap-secret-file", sf,
		"--mutual-chap-user", "tgt", "--mutual-chap-secret-file", mf, "--chap-algorithms", "sha256,md5")
	if err != nil {
		t.Fatal(err)
	}
	s := as.cfg.Session
	if s == nil || s.Initiator.User != "user1" || string(s.Initiator.Secret) != "initiator-secret-1" ||
		s.Target == nil || string(s.Target.Secret) != "target-secret-222" || len(s.Algorithms) != 2 || s.Algorithms[0] != chap.SHA256 {
		t.Fatalf("session %+v", s)
	}
	if as.cfg.Discovery != nil || as.acl != nil {
		t.Fatalf("unexpected discovery/acl: %+v", as)
	}
	if len(as.notes) != 1 || !strings.Contains(as.notes[0], "whitespace") || strings.Contains(as.notes[0], "initiator-secret-1") {
		t.Fatalf("notes %q", as.notes)
	}

	// The secret from the environment.
	as, err = parseAuthArgs(t, map[string]string{envDiscoveryCHAPSecret: "discovery-secret-9"}, "--discovery-chap-user", "d")
	if err != nil || as.cfg.Discovery == nil || string(as.cfg.Discovery.Initiator.Secret) != "discovery-secret-9" || as.cfg.Session != nil {
		t.Fatalf("env: %+v %v", as, err)
	}

	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--chap-user", "u"}, "needs a secret"},
		{nil, []string{"--chap-secret-file", sf}, "without --chap-user"},
		{map[string]string{envCHAPSecret: "x-secret-12345"}, []string{"--chap-user", "u", "--chap-secret-file", sf}, "use one"},
		{nil, []string{"--chap-user", "u", "--chap-secret-file", short}, "at least 12"},
		{nil, []string{"--chap-user", "u", "--chap-secret-file", sf, "--mutual-chap-user", "t", "--mutual-chap-secret-file", sf}, "must differ"},
		{nil, []string{"--mutual-chap-user", "t", "--mutual-chap-secret-file", mf}, "needs initiator CHAP"},
		{nil, []string{"--chap-algorithms", "md4"}, "unknown algorithm"},
		{nil, []string{"--chap-min-secret-length", "0"}, "want 1-255"},
		{nil, []string{"--chap-secret-dir", d, "--chap-user", "u"}, "cannot be combined"},
		{nil, []string{"--chap-user", "u", "--chap-secret-file", filepath.Join(d, "missing")}, "no such file"},
		{nil, []string{"--allow-initiator", "iqn[x"}, "pattern"},
		{nil, []string{"--initiators-deny", writeFile(t, d, "deny", "ALL 10.0.0.0/99\n")}, "bad address"},
	} {
		if _, err := parseAuthArgs(t, tc.env, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}

	// The seed deployment's 8-byte password needs a lower minimum.
	as, err = parseAuthArgs(t, nil, "--chap-user", "username", "--chap-secret-file", short, "--chap-min-secret-length", "8")
	if err != nil || string(as.cfg.Session.Initiator.Secret) != "password" {
		t.Fatalf("min 8: %+v %v", as, err)
	}
}

func TestParseAuthSecretDir(t *testing.T) {
	// The layout of the seed deployment's chap-secret.yaml, mounted.
	d := t.TempDir()
	writeFile(t, d, "node.session.auth.username", "username\n")
	writeFile(t, d, "node.session.auth.password", "password-long\n")
	writeFile(t, d, "node.session.auth.username_in", "target\n")
	writeFile(t, d, "node.session.auth.password_in", "target-password\n")
	as, err := parseAuthArgs(t, nil, "--chap-secret-dir", d, "--allow-initiator", "iqn.2016-04.world.srv:*",
		"--initiators-allow", writeFile(t, t.TempDir(), "allow", "ALL 10.0.0.0/8\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := as.cfg.Session
	if s.Initiator.User != "username" || string(s.Initiator.Secret) != "password-long" || s.Target.User != "target" {
		t.Fatalf("got %+v", s)
	}
	if as.acl == nil || len(as.acl.Allow) != 1 || len(as.acl.IETAllow) != 1 {
		t.Fatalf("acl %+v", as.acl)
	}
	joined := strings.Join(as.notes, "\n")
	if !strings.Contains(joined, "node.session.auth.password") || !strings.Contains(joined, "refuses nobody") || strings.Contains(joined, "password-long") {
		t.Fatalf("notes %q", as.notes)
	}
}
