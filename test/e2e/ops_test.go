//go:build e2e

package e2e

// Operations end to end: the daemon run from a configuration file,
// reloaded (SIGHUP and `iscsi-target reload`) under a libiscsi session
// that keeps reading, a bad file refused, LUNs grown online and seen by
// libiscsi's iscsi-readcapacity16.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// cli runs an iscsi-target operator command and returns its output and
// exit code.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := b.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	harness.Bound(cmd, 5*time.Second)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), exitCode(err)
}

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

type sessionRow struct {
	Target        string
	InitiatorName string
	TSIH          uint16
}

func sessionsOf(t *testing.T, stateDir, initiator string) []sessionRow {
	t.Helper()
	out, code := cli(t, "sessions", "--json", "--state-dir", stateDir)
	if code != 0 {
		t.Fatalf("sessions: %s", out)
	}
	var all, mine []sessionRow
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("sessions output: %v\n%s", err, out)
	}
	for _, s := range all {
		if s.InitiatorName == initiator {
			mine = append(mine, s)
		}
	}
	return mine
}

// tur sends TEST UNIT READY to lun and returns status and ASC/ASCQ.
func tur(t *testing.T, c *targettest.Client, lun uint16) (uint8, byte, byte) {
	t.Helper()
	r, err := c.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{LUN: scsi.EncodeLUN(lun)})
	if err != nil {
		t.Fatalf("TEST UNIT READY LUN %d: %v", lun, err)
	}
	_, asc, ascq := r.SenseKey()
	return r.Status, asc, ascq
}

const (
	opsA    = "iqn.2026-11.test:ops-a"
	opsB    = "iqn.2026-11.test:ops-b"
	opsC    = "iqn.2026-11.test:ops-c"
	perfIQN = "iqn.2026-11.test:e2e-perf"
)

func TestReloadKeepsLibiscsiSessionReading(t *testing.T) {
	harness.RequireTools(t, "iscsi-perf", "iscsi-ls")
	dir := t.TempDir()
	conf := filepath.Join(dir, "iscsi-target.yaml")
	v1 := fmt.Sprintf(`# several initiator names log in: no single-writer lease
access: shared
targets:
  - name: %s
    luns:
      - {path: %s/a0.img, size: 64MiB}
      - {path: %s/a1.img, size: 16MiB}
  - name: %s
    luns:
      - {path: %s/b0.img, size: 16MiB}
`, opsA, dir, dir, opsB, dir)
	writeConfig(t, conf, v1)
	tg := startDaemon(t, harness.TargetOptions{Config: conf, IQN: opsA})

	// A raw session to observe unit attentions; LUN 0's power-on UA is consumed.
	raw := rawLogin(t, tg.Portal, opsA, 7)
	// A libiscsi session reading LUN 0 at queue depth 32 until interrupted;
	// -x 0: a dropped session is an error, not a silent reconnect.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	perf := exec.CommandContext(ctx, "iscsi-perf", "-i", perfIQN, "-x", "0",
		fmt.Sprintf("iscsi://%s/%s/0", tg.Portal, opsA))
	harness.Bound(perf, 5*time.Second)
	var perfOut bytes.Buffer
	perf.Stdout, perf.Stderr = &perfOut, &perfOut
	if err := perf.Start(); err != nil {
		t.Fatal(err)
	}
	var before []sessionRow
	for i := 0; i < 200 && len(before) == 0; i++ {
		time.Sleep(50 * time.Millisecond)
		before = sessionsOf(t, tg.StateDir, perfIQN)
	}
	if len(before) != 1 {
		t.Fatalf("iscsi-perf session not seen: %v\n%s", before, perfOut.String())
	}

	// A bad file is refused with its line number and changes nothing.
	writeConfig(t, conf, strings.Replace(v1, "size: 16MiB}", "size: 16MiB, color: red}", 1))
	out, code := cli(t, "reload", "--state-dir", tg.StateDir)
	if code == 0 || !strings.Contains(out, `:7:`) || !strings.Contains(out, `unknown key "color"`) {
		t.Fatalf("bad file: exit %d, %s", code, out)
	}
	if st, _, _ := tur(t, raw, 0); st != 0 {
		t.Fatalf("refused reload raised a unit attention on LUN 0 (status %d)", st)
	}

	// Add LUN 2 and target C, remove LUN 1 and target B.
	writeConfig(t, conf, fmt.Sprintf(`# several initiator names log in: no single-writer lease
access: shared
targets:
  - name: %s
    luns:
      - {path: %s/a0.img, size: 64MiB}
      - {id: 2, path: %s/a2.img, size: 32MiB}
  - name: %s
    luns:
      - {path: %s/c0.img, size: 16MiB}
`, opsA, dir, dir, opsC, dir))
	out, code = cli(t, "reload", "--json", "--state-dir", tg.StateDir)
	if code != 0 {
		t.Fatalf("reload: %s", out)
	}
	var res struct {
		AddedTargets   []string `json:"added_targets"`
		RemovedTargets []string `json:"removed_targets"`
		AddedLUNs      []string `json:"added_luns"`
		RemovedLUNs    []string `json:"removed_luns"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("reload output: %v\n%s", err, out)
	}
	if fmt.Sprint(res.AddedTargets, res.RemovedTargets, res.AddedLUNs, res.RemovedLUNs) !=
		fmt.Sprintf("[%s] [%s] [%s/2] [%s/1]", opsC, opsB, opsA, opsA) {
		t.Fatalf("reload result: %s", out)
	}

	// The libiscsi session is the same one and still reading.
	after := sessionsOf(t, tg.StateDir, perfIQN)
	if len(after) != 1 || after[0].TSIH != before[0].TSIH {
		t.Fatalf("iscsi-perf session changed across the reload: before %v, after %v", before, after)
	}
	// The raw session sees REPORTED LUNS DATA HAS CHANGED, then the new inventory.
	if st, asc, ascq := tur(t, raw, 0); st != 2 || asc != 0x3F || ascq != 0x0E {
		t.Fatalf("LUN 0 after reload: status %d sense %02x/%02x, want 3F/0E", st, asc, ascq)
	}
	if st, asc, _ := tur(t, raw, 1); st != 2 || asc != 0x25 {
		t.Fatalf("removed LUN 1: status %d asc %02x, want LOGICAL UNIT NOT SUPPORTED", st, asc)
	}
	ls := libiscsiRun(t, time.Minute, "iscsi-ls", "-i", libiscsiInitiator, "-s", "iscsi://"+tg.Portal)
	if !strings.Contains(ls, opsA) || !strings.Contains(ls, opsC) || strings.Contains(ls, opsB) ||
		!strings.Contains(ls, "Lun:2") || strings.Contains(ls, "Lun:1 ") {
		t.Fatalf("iscsi-ls after reload:\n%s", ls)
	}

	// SIGHUP does the same: put LUN 1 back.
	writeConfig(t, conf, fmt.Sprintf(`# several initiator names log in: no single-writer lease
access: shared
targets:
  - name: %s
    luns:
      - {path: %s/a0.img, size: 64MiB}
      - {path: %s/a1.img, size: 16MiB}
      - {id: 2, path: %s/a2.img, size: 32MiB}
`, opsA, dir, dir, dir))
	if err := tg.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded := false
	for i := 0; i < 200 && !reloaded; i++ {
		time.Sleep(50 * time.Millisecond)
		reloaded = strings.Count(tg.Log(), "configuration reloaded") >= 2
	}
	if !reloaded {
		t.Fatal("SIGHUP did not reload")
	}
	if st, asc, ascq := tur(t, raw, 0); st != 2 || asc != 0x3F || ascq != 0x0E {
		t.Fatalf("LUN 0 after SIGHUP: status %d sense %02x/%02x, want 3F/0E", st, asc, ascq)
	}

	// iscsi-perf kept reading on the same session after both reloads:
	// its commands appear in the daemon's debug log after the last reload.
	var sessionID string
	logins := 0
	for _, l := range strings.Split(tg.Log(), "\n") {
		if strings.Contains(l, `msg="iscsi: login"`) && strings.Contains(l, perfIQN) {
			logins++
			if i := strings.Index(l, " session="); i >= 0 {
				sessionID = strings.Fields(l[i+1:])[0]
			}
		}
	}
	if logins != 1 || sessionID == "" {
		t.Fatalf("iscsi-perf logged in %d times; want 1 (no reconnect)", logins)
	}
	readsAfter := func() int {
		log := tg.Log()
		i := strings.LastIndex(log, "configuration reloaded")
		return strings.Count(log[i:], "op=88 "+sessionID)
	}
	n0 := readsAfter()
	for i := 0; i < 200 && readsAfter() < n0+1000; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if n := readsAfter(); n < n0+1000 {
		t.Fatalf("iscsi-perf issued %d READ(16)s after the reload; want it to keep reading", n)
	}
	// iscsi-perf stops issuing at the first SIGINT and exits at the second
	// (its in-flight count is off by one after it retries a command that
	// got a unit attention, so a single SIGINT may wait forever).
	_ = perf.Process.Signal(syscall.SIGINT)
	time.Sleep(200 * time.Millisecond)
	_ = perf.Process.Signal(syscall.SIGINT)
	if err := perf.Wait(); err != nil {
		t.Fatalf("iscsi-perf: %v\n%s", err, perfOut.String())
	}
	for _, bad := range []string{"failed", "reconnect", "maximum number of command retries"} {
		if strings.Contains(perfOut.String(), bad) {
			t.Fatalf("iscsi-perf reported %q:\n%s", bad, perfOut.String())
		}
	}
}

// readCapacity returns the size libiscsi's iscsi-readcapacity16 reports.
func readCapacity(t *testing.T, url string) string {
	t.Helper()
	out := libiscsiRun(t, time.Minute, "iscsi-readcapacity16", "-i", libiscsiInitiator, url)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Total size:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Total size:"))
		}
	}
	t.Fatalf("no Total size in:\n%s", out)
	return ""
}

func TestOnlineResizeSeenByLibiscsi(t *testing.T) {
	harness.RequireTools(t, "iscsi-readcapacity16")
	dir := t.TempDir()
	conf := filepath.Join(dir, "iscsi-target.yaml")
	writeConfig(t, conf, fmt.Sprintf("access: shared\ntargets:\n  - name: %s\n    luns:\n      - {path: %s/a0.img, size: 32MiB}\n", opsA, dir))
	tg := startDaemon(t, harness.TargetOptions{Config: conf, IQN: opsA})
	url := fmt.Sprintf("iscsi://%s/%s/0", tg.Portal, opsA)
	if got := readCapacity(t, url); got != fmt.Sprint(32<<20) {
		t.Fatalf("initial size %s", got)
	}
	raw := rawLogin(t, tg.Portal, opsA, 9)

	out, code := cli(t, "lun", "resize", "--state-dir", tg.StateDir, "--target", opsA, "--lun", "0", "--size", "96MiB")
	if code != 0 || !strings.Contains(out, "196608 blocks of 512 bytes (96MiB)") {
		t.Fatalf("lun resize: exit %d, %s", code, out)
	}
	if st, asc, ascq := tur(t, raw, 0); st != 2 || asc != 0x2A || ascq != 0x09 {
		t.Fatalf("after resize: status %d sense %02x/%02x, want CAPACITY DATA HAS CHANGED", st, asc, ascq)
	}
	if got := readCapacity(t, url); got != fmt.Sprint(96<<20) {
		t.Fatalf("size after lun resize: %s", got)
	}
	if out, code := cli(t, "lun", "resize", "--state-dir", tg.StateDir, "--target", opsA, "--lun", "0", "--size", "64MiB"); code == 0 ||
		!strings.Contains(out, "would destroy data") {
		t.Fatalf("shrink: exit %d, %s", code, out)
	}

	// Grown behind the daemon's back (as after lvextend or truncate): a
	// reload re-reads the size.
	if err := os.Truncate(filepath.Join(dir, "a0.img"), 128<<20); err != nil {
		t.Fatal(err)
	}
	if out, code := cli(t, "reload", "--state-dir", tg.StateDir); code != 0 || !strings.Contains(out, "resized LUN: "+opsA+"/0") {
		t.Fatalf("reload: exit %d, %s", code, out)
	}
	if st, asc, ascq := tur(t, raw, 0); st != 2 || asc != 0x2A || ascq != 0x09 {
		t.Fatalf("after reload: status %d sense %02x/%02x, want CAPACITY DATA HAS CHANGED", st, asc, ascq)
	}
	if got := readCapacity(t, url); got != fmt.Sprint(128<<20) {
		t.Fatalf("size after reload: %s", got)
	}
}
