//go:build e2e

package e2e

// CHAP and initiator access control with libiscsi's tools (iscsi-inq,
// iscsi-ls) against our daemon:
//
//	go test -tags e2e -run 'TestCHAP' -v ./test/e2e/

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// The secrets of the CHAP end-to-end tests. TestCHAPNoSecretsInLogs and
// each test's final check look for them in the daemon logs.
const (
	chapUser          = "e2e-user"
	chapSecret        = "e2e-initiator-secret-1"
	chapTargetUser    = "e2e-target"
	chapTargetSecret  = "e2e-target-secret-22"
	chapDiscUser      = "e2e-disc"
	chapDiscSecret    = "e2e-discovery-secret-333"
	chapWrongSecret   = "e2e-wrong-secret-4444"
	chapRefused       = "iqn.2026-11.test:e2e-refused"
	chapRefusedByFile = "iqn.2026-11.test:e2e-refused-by-ietd"
)

var chapSecrets = []string{chapSecret, chapTargetSecret, chapDiscSecret, chapWrongSecret}

// chapNoLeak fails when log contains any CHAP secret of the tests.
func chapNoLeak(t *testing.T, name, log string, extra ...string) {
	t.Helper()
	if log == "" {
		t.Errorf("%s: empty daemon log", name)
	}
	for _, s := range append(append([]string(nil), chapSecrets...), extra...) {
		if strings.Contains(log, s) {
			t.Errorf("%s: daemon log contains the secret or CHAP value %q", name, s)
		}
	}
}

// tool runs a libiscsi tool with extra environment and returns its
// combined output and error.
func tool(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	harness.Bound(cmd, 5*time.Second)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func writeSecret(t *testing.T, dir, name, value string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCHAPLibiscsi: one-way and mutual CHAP for normal sessions.
func TestCHAPLibiscsi(t *testing.T) {
	harness.RequireTools(t, "iscsi-inq")
	const iqn = "iqn.2026-11.test:e2e-chap"
	dir := t.TempDir()
	tg := libiscsiStart(t, iqn, nil,
		"--chap-user", chapUser,
		// A trailing newline, as `echo secret > file` writes it.
		"--chap-secret-file", writeSecret(t, dir, "secret", chapSecret+"\n"),
		"--mutual-chap-user", chapTargetUser,
		"--mutual-chap-secret-file", writeSecret(t, dir, "mutual", chapTargetSecret),
		"--auth-failure-delay", "300ms")
	url := func(cred string) string { return "iscsi://" + cred + tg.Portal + "/" + iqn + "/0" }
	init := []string{"-i", libiscsiInitiator}
	ok := func(t *testing.T, env []string, u string) {
		t.Helper()
		out, err := tool(t, env, "iscsi-inq", append(init, u)...)
		if err != nil || !strings.Contains(out, "Peripheral Device Type:DIRECT_ACCESS") {
			t.Fatalf("iscsi-inq: %v\n%s", err, out)
		}
	}
	refused := func(t *testing.T, env []string, u, want string) {
		t.Helper()
		before := strings.Count(tg.Log(), "status=0x0201")
		out, err := tool(t, env, "iscsi-inq", append(init, u)...)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("iscsi-inq: err %v, want failure with %q:\n%s", err, want, out)
		}
		if want == "Authentication failure(513)" && strings.Count(tg.Log(), "status=0x0201") != before+1 {
			t.Errorf("daemon did not log one more 0x0201 refusal")
		}
	}
	t.Run("url", func(t *testing.T) { ok(t, nil, url(chapUser+"%"+chapSecret+"@")) })
	t.Run("env", func(t *testing.T) {
		ok(t, []string{"LIBISCSI_CHAP_USERNAME=" + chapUser, "LIBISCSI_CHAP_PASSWORD=" + chapSecret}, url(""))
	})
	t.Run("wrong secret", func(t *testing.T) {
		refused(t, nil, url(chapUser+"%"+chapWrongSecret+"@"), "Authentication failure(513)")
		if !strings.Contains(tg.Log(), "wrong CHAP_R") {
			t.Error("daemon log does not name the wrong response")
		}
	})
	t.Run("empty secret", func(t *testing.T) { refused(t, nil, url(chapUser+"%@"), "Authentication failure(513)") })
	t.Run("missing secret", func(t *testing.T) { refused(t, nil, url(""), "Authentication failure(513)") })
	t.Run("trailing newline hint", func(t *testing.T) {
		refused(t, []string{"LIBISCSI_CHAP_USERNAME=" + chapUser, "LIBISCSI_CHAP_PASSWORD=" + chapSecret + "\n"}, url(""), "Authentication failure(513)")
		if !strings.Contains(tg.Log(), "only by trailing whitespace") {
			t.Error("daemon log lacks the trailing-whitespace hint")
		}
	})
	mutualEnv := func(targetSecret string) []string {
		return []string{"LIBISCSI_CHAP_USERNAME=" + chapUser, "LIBISCSI_CHAP_PASSWORD=" + chapSecret,
			"LIBISCSI_CHAP_TARGET_USERNAME=" + chapTargetUser, "LIBISCSI_CHAP_TARGET_PASSWORD=" + targetSecret}
	}
	t.Run("mutual", func(t *testing.T) {
		// LIBISCSI_DEBUG=10 makes libiscsi print the target's login keys,
		// so this exchange's challenge and responses are known and can be
		// looked for in the daemon log.
		out, err := tool(t, append(mutualEnv(chapTargetSecret), "LIBISCSI_DEBUG=10"), "iscsi-inq", append(init, url(""))...)
		if err != nil || !strings.Contains(out, "Peripheral Device Type:DIRECT_ACCESS") {
			t.Fatalf("iscsi-inq: %v\n%s", err, out)
		}
		key := func(k string) string {
			m := regexp.MustCompile(`TargetLoginReply: ` + k + `=(\S+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no %s in libiscsi's debug output:\n%s", k, out)
			}
			return m[1]
		}
		challenge, targetResponse := key("CHAP_C"), key("CHAP_R")
		id, err := chap.ParseIdentifier(key("CHAP_I"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := chap.DecodeBinary(challenge, chap.MaxChallenge)
		if err != nil {
			t.Fatal(err)
		}
		initiatorResponse := hex.EncodeToString(chap.Response(chap.MD5, id, []byte(chapSecret), c))
		chapNoLeak(t, "TestCHAPLibiscsi/mutual", tg.Log(), strings.TrimPrefix(challenge, "0x"),
			strings.TrimPrefix(targetResponse, "0x"), initiatorResponse)
	})
	t.Run("mutual wrong target secret", func(t *testing.T) {
		// The target proves the secret it has; the initiator refuses it.
		refused(t, mutualEnv(chapWrongSecret), url(""), "Invalid CHAP_R response from the target")
	})
	t.Run("no secrets in the log", func(t *testing.T) { chapNoLeak(t, "TestCHAPLibiscsi", tg.Log()) })
}

// TestCHAPDiscoveryAndACL: discovery CHAP (secret from the environment)
// enforced for iscsi-ls, and initiator access control: a refused name gets
// 0x0202 and does not see the target in SendTargets.
func TestCHAPDiscoveryAndACL(t *testing.T) {
	harness.RequireTools(t, "iscsi-inq", "iscsi-ls")
	const iqn = "iqn.2026-11.test:e2e-acl"
	deny := writeSecret(t, t.TempDir(), "initiators.deny", "# ietd format\n"+iqn+" iqn\\.2026-11\\.test:e2e-refused-by-.*\nALL 192.0.2.0/24\n")
	t.Setenv("ISCSI_TARGET_DISCOVERY_CHAP_SECRET", chapDiscSecret)
	tg := libiscsiStart(t, iqn, nil,
		"--discovery-chap-user", chapDiscUser,
		"--deny-initiator", "*:e2e-refused",
		"--initiators-deny", deny,
		"--auth-failure-delay", "300ms")
	portal := "iscsi://" + tg.Portal
	cred := "iscsi://" + chapDiscUser + "%" + chapDiscSecret + "@" + tg.Portal
	t.Run("discovery without credentials", func(t *testing.T) {
		out, err := tool(t, nil, "iscsi-ls", "-i", libiscsiInitiator, portal)
		if err == nil || strings.Contains(out, "Target:") {
			t.Fatalf("iscsi-ls without credentials: %v\n%s", err, out)
		}
	})
	t.Run("discovery wrong secret", func(t *testing.T) {
		out, err := tool(t, nil, "iscsi-ls", "-i", libiscsiInitiator, "iscsi://"+chapDiscUser+"%"+chapWrongSecret+"@"+tg.Portal)
		if err == nil || !strings.Contains(out, "Authentication failure(513)") {
			t.Fatalf("iscsi-ls with a wrong secret: %v\n%s", err, out)
		}
	})
	t.Run("discovery", func(t *testing.T) {
		out, err := tool(t, nil, "iscsi-ls", "-i", libiscsiInitiator, cred)
		if err != nil || !strings.Contains(out, "Target:"+iqn+" ") {
			t.Fatalf("iscsi-ls: %v\n%s", err, out)
		}
	})
	for _, name := range []string{chapRefused, chapRefusedByFile} {
		t.Run("refused "+name, func(t *testing.T) {
			out, err := tool(t, nil, "iscsi-ls", "-i", name, cred)
			if err != nil || strings.Contains(out, "Target:") {
				t.Fatalf("iscsi-ls as a refused initiator: %v\n%s", err, out)
			}
			out, err = tool(t, nil, "iscsi-inq", "-i", name, portal+"/"+iqn+"/0")
			if err == nil || !strings.Contains(out, "Authorization failure(514)") {
				t.Fatalf("iscsi-inq as a refused initiator: %v\n%s", err, out)
			}
		})
	}
	t.Run("log", func(t *testing.T) {
		log := tg.Log()
		if !strings.Contains(log, "status=0x0202") || !strings.Contains(log, "initiators.deny line 2") {
			t.Error("daemon log lacks the 0x0202 refusals")
		}
		chapNoLeak(t, "TestCHAPDiscoveryAndACL", log)
	})
}

// TestCHAPSeedSecret: the seed deployment's Secret (values "username\n",
// "password\n", an 8-byte password) mounted as a directory. The daemon
// refuses the short secret by default with a clear error and exit status
// 2; with --chap-min-secret-length 8 it trims the newlines and libiscsi
// logs in with username/password.
func TestCHAPSeedSecret(t *testing.T) {
	harness.RequireTools(t, "iscsi-inq")
	dir := filepath.Join(harness.RepoRoot(), "test", "e2e", "testdata", "seed-chap-secret")
	b, bdir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := b.Build(bdir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--admin-socket", "none",
		"--state-dir", t.TempDir(), "--lun", filepath.Join(t.TempDir(), "l.img")+",size=16MiB", "--chap-secret-dir", dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "secret is 8 bytes, at least 12 required") {
		t.Fatalf("daemon with an 8-byte secret: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "password") && !strings.Contains(string(out), "node.session.auth.password") {
		t.Errorf("error output may contain the secret:\n%s", out)
	}

	const iqn = "iqn.2016-04.world.srv:target00"
	tg := libiscsiStart(t, iqn, nil, "--chap-secret-dir", dir, "--chap-min-secret-length", "8")
	u := "iscsi://username%password@" + tg.Portal + "/" + iqn + "/0"
	if out, err := tool(t, nil, "iscsi-inq", "-i", "iqn.2016-04.world.srv:node1", u); err != nil {
		t.Fatalf("iscsi-inq with the seed credentials: %v\n%s", err, out)
	}
	log := tg.Log()
	if !strings.Contains(log, "removed surrounding whitespace") || !strings.Contains(log, "down to 8 bytes") {
		t.Errorf("daemon did not warn about the trimmed values and the short secret")
	}
	if strings.Contains(log, "=password") || strings.Contains(log, "\"password\"") {
		t.Errorf("daemon log contains the secret")
	}
}
