package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// runCLI runs the CLI with args and returns its output and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	err := app.RunContext(context.Background(), append([]string{"iscsi-target"}, args...))
	code := exitOK
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
		out.WriteString(ee.err.Error())
	case err != nil:
		code = exitFailure
		out.WriteString(err.Error())
	}
	return out.String(), code
}

// startTestAdmin serves srv's admin routes on a socket in a temporary
// directory until the test ends and returns the socket's path.
func startTestAdmin(t *testing.T, srv *target.Server) string {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	a, err := startAdmin(sock, adminRoutes(srv), logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return sock
}

func TestLeaseCommands(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	sock := startTestAdmin(t, tg.Server)

	c, err := targettest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.InitiatorName = "iqn.2026-11.test:holder"
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		t.Fatal(err)
	}

	out, code := runCLI(t, "lease", "show", "--admin-socket", sock)
	if code != 0 || !strings.Contains(out, "holder:  iqn.2026-11.test:holder") || !strings.Contains(out, "epoch:   1") ||
		!strings.Contains(out, "sessions: 1") {
		t.Fatalf("lease show (%d):\n%s", code, out)
	}
	out, code = runCLI(t, "lease", "release", "--admin-socket", sock, "--target", tg.IQN)
	if code != 0 || !strings.Contains(out, "released (epoch 2); fenced nexuses: 1") {
		t.Fatalf("lease release (%d):\n%s", code, out)
	}
	out, code = runCLI(t, "lease", "show", "--admin-socket", sock, "--target", tg.IQN, "--json")
	var list []struct {
		Holder string
		Epoch  uint64
		Fenced []struct{ Initiator, ISID string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Holder != "" ||
		list[0].Epoch != 2 || len(list[0].Fenced) != 1 || list[0].Fenced[0].ISID != c.ISID.String() {
		t.Fatalf("lease show --json (%d):\n%s", code, out)
	}
	out, code = runCLI(t, "lease", "release", "--admin-socket", sock, "--target", tg.IQN)
	if code != 0 || !strings.Contains(out, "already free") {
		t.Fatalf("second release (%d):\n%s", code, out)
	}
	if out, code = runCLI(t, "lease", "release", "--admin-socket", sock, "--target", "iqn.2026-11.test:none"); code != exitFailure ||
		!strings.Contains(out, "no such target") {
		t.Fatalf("unknown target (%d):\n%s", code, out)
	}
	if out, code = runCLI(t, "lease", "release", "--admin-socket", sock); code != exitUsage {
		t.Fatalf("missing --target (%d):\n%s", code, out)
	}
	// The fenced nexus cannot come back.
	c2, err := targettest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.InitiatorName = c.InitiatorName
	err = c2.Login(targettest.LoginOptions{Target: tg.IQN})
	var lf *targettest.ErrLoginFailed
	if !errors.As(err, &lf) || lf.Status != pdu.LoginAuthorizationFailure {
		t.Fatalf("fenced nexus login: %v", err)
	}
}

func TestLeaseAllowCommand(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	sock := startTestAdmin(t, tg.Server)
	login := func(isid byte) error {
		c, err := targettest.Dial(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.InitiatorName = "iqn.2026-11.test:holder"
		c.ISID[5] = isid
		return c.Login(targettest.LoginOptions{Target: tg.IQN})
	}
	if err := login(1); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "lease", "release", "--admin-socket", sock, "--target", tg.IQN); code != 0 {
		t.Fatalf("release (%d): %s", code, out)
	}
	out, code := runCLI(t, "lease", "show", "--admin-socket", sock)
	if code != 0 || !strings.Contains(out, "barred:  iqn.2026-11.test:holder") {
		t.Fatalf("show (%d):\n%s", code, out)
	}
	var lf *targettest.ErrLoginFailed
	if err := login(2); !errors.As(err, &lf) || lf.Status != pdu.LoginServiceUnavailable {
		t.Fatalf("barred initiator: %v", err)
	}
	if out, code := runCLI(t, "lease", "allow", "--admin-socket", sock, "--target", tg.IQN); code != 0 ||
		!strings.Contains(out, "may take the lease") {
		t.Fatalf("allow (%d): %s", code, out)
	}
	if err := login(2); err != nil {
		t.Fatalf("allowed initiator: %v", err)
	}
	if out, code := runCLI(t, "lease", "allow", "--admin-socket", sock, "--target", tg.IQN); code != 0 ||
		!strings.Contains(out, "no initiator is barred") {
		t.Fatalf("second allow (%d): %s", code, out)
	}
}
