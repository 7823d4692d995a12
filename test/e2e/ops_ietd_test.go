//go:build e2e

package e2e

// The seed deployment's ietd.conf, served as it is: its target, its LUN
// (Path rewritten to a temporary file) and its CHAP credentials, which
// the seed's Kubernetes Secret also carries (base64 of "username\n" and
// "password\n").

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

const seedIQN = "iqn.2016-04.world.srv:target00"

// seedCredentials reads the user and password of the seed's CHAP Secret,
// as the kubelet would hand them to open-iscsi (surrounding whitespace
// removed, as open-iscsi does).
func seedCredentials(t *testing.T) (string, string) {
	t.Helper()
	b, err := os.ReadFile("testdata/seed-chap-secret.yaml")
	if err != nil {
		t.Fatal(err)
	}
	val := func(key string) string {
		m := regexp.MustCompile(regexp.QuoteMeta(key) + `:\s*(\S+)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s not in the seed Secret", key)
		}
		v, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(v), "\n") {
			t.Fatalf("%s: the seed value was expected to end in a newline", key)
		}
		return strings.TrimSpace(string(v))
	}
	return val("node.session.auth.username"), val("node.session.auth.password")
}

func TestSeedIETDConfWithCHAP(t *testing.T) {
	harness.RequireTools(t, "iscsi-ls", "iscsi-readcapacity16", "qemu-img")
	dir := t.TempDir()
	seed, err := os.ReadFile("testdata/seed-ietd.conf")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "sdc.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "ietd.conf")
	if !strings.Contains(string(seed), "Path=/dev/sdc,") {
		t.Fatalf("seed ietd.conf changed:\n%s", seed)
	}
	writeConfig(t, conf, strings.Replace(string(seed), "Path=/dev/sdc,", "Path="+img+",", 1))
	// ietd's access files next to ietd.conf: everyone denied, our
	// initiator allowed (ietd semantics: allow makes exceptions to deny).
	writeConfig(t, filepath.Join(dir, "initiators.deny"), "ALL ALL\n")
	writeConfig(t, filepath.Join(dir, "initiators.allow"), seedIQN+" "+libiscsiInitiator+"\n")

	out, code := cli(t, "config", "check", conf)
	if code != 0 || !strings.Contains(out, "ok (ietd.conf, 1 target(s), 1 LUN(s)") || !strings.Contains(out, "chap_min_secret_length set to 8") {
		t.Fatalf("config check of the seed ietd.conf: exit %d\n%s", code, out)
	}
	tg := startDaemon(t, harness.TargetOptions{Config: conf, IQN: seedIQN})
	user, pass := seedCredentials(t)

	url := fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", user, pass, tg.Portal, seedIQN)
	if got := readCapacity(t, url); got != fmt.Sprint(64<<20) {
		t.Fatalf("size %s", got)
	}
	ls := libiscsiRun(t, time.Minute, "iscsi-ls", "-i", libiscsiInitiator, "-s", fmt.Sprintf("iscsi://%s%%%s@%s", user, pass, tg.Portal))
	if !strings.Contains(ls, seedIQN) || !strings.Contains(ls, "Lun:0") {
		t.Fatalf("iscsi-ls:\n%s", ls)
	}
	// Data through qemu-img with the same credentials.
	src := filepath.Join(dir, "src.raw")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,user=%s,password=%s,initiator-name=%s",
		tg.Portal, seedIQN, user, pass, libiscsiInitiator)
	libiscsiRun(t, 2*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", src, opts)
	back := filepath.Join(dir, "back.raw")
	libiscsiRun(t, 2*time.Minute, "qemu-img", "convert", "--image-opts", opts, "-O", "raw", back)
	got, err := os.ReadFile(back)
	if err != nil || len(got) != 64<<20 || string(got[:len(data)]) != string(data) {
		t.Fatalf("data read back differs (%d bytes, %v)", len(got), err)
	}

	// Without credentials, with a wrong secret, or from an initiator the
	// access files deny, the login is refused.
	for _, args := range [][]string{
		{"-i", libiscsiInitiator, fmt.Sprintf("iscsi://%s/%s/0", tg.Portal, seedIQN)},
		{"-i", libiscsiInitiator, fmt.Sprintf("iscsi://%s%%wrong-secret-123@%s/%s/0", user, tg.Portal, seedIQN)},
		{"-i", "iqn.2026-11.test:not-in-initiators-allow", fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", user, pass, tg.Portal, seedIQN)},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "iscsi-readcapacity16", args...)
		harness.Bound(cmd, 5*time.Second)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("login %v succeeded:\n%s", args, out)
		}
	}
	if !strings.Contains(tg.Log(), "iqn.2026-11.test:not-in-initiators-allow") || !strings.Contains(tg.Log(), "status=0x0202") {
		t.Fatal("the denied initiator was not refused with 0x0202")
	}
}
