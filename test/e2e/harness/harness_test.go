package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLUNSpecs(t *testing.T) {
	dir := t.TempDir()
	specs, lus, err := LUNSpecs(dir, "iqn.x", ConformanceLUNs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(dir, "lun0-plain.img") + ",size=512MiB",
		filepath.Join(dir, "lun1-ro.img") + ",size=64MiB,ro",
		filepath.Join(dir, "lun2-rmb.img") + ",size=64MiB,removable",
		filepath.Join(dir, "lun3-thin.img") + ",size=64MiB,thin,sanitize-rate=8MiB",
		filepath.Join(dir, "lun4-thin4k.img") + ",size=64MiB,thin,blocksize=4096",
	}
	if strings.Join(specs, " ") != strings.Join(want, " ") {
		t.Errorf("specs:\n got %q\nwant %q", specs, want)
	}
	for i, k := range Kinds {
		if lus[k] != (LU{"iqn.x", i}) {
			t.Errorf("%s: %+v", k, lus[k])
		}
	}
	st, err := os.Stat(filepath.Join(dir, "lun1-ro.img"))
	if err != nil || st.Size() != 64<<20 {
		t.Errorf("backing file: %v %v", st, err)
	}
	if got := sizeSpec(1000); got != "1000" {
		t.Errorf("sizeSpec(1000) = %s", got)
	}
}

func TestPeerURL(t *testing.T) {
	p := &Peer{Portal: "127.0.0.1:3260", LUs: map[LUNKind]LU{
		KindPlain: {"iqn.a", 1}, KindThin: {"iqn.a-x", 3},
	}}
	if got := p.URL(KindThin); got != "iscsi://127.0.0.1:3260/iqn.a-x/3" {
		t.Errorf("thin: %s", got)
	}
	if got := p.URL(KindRMB); got != "iscsi://127.0.0.1:3260/iqn.a/1" || p.Has(KindRMB) {
		t.Errorf("missing kind falls back to plain: %s", got)
	}
	if got := p.URL(KindThin4K); got != "iscsi://127.0.0.1:3260/iqn.a-x/3" || p.Resolve(KindThin4K) != KindThin {
		t.Errorf("thin4k falls back to thin: %s", got)
	}
	p.LUs[KindThin4K] = LU{"iqn.a-x", 4}
	if got := p.URL(KindThin4K); got != "iscsi://127.0.0.1:3260/iqn.a-x/4" {
		t.Errorf("thin4k: %s", got)
	}
	delete(p.LUs, KindThin)
	delete(p.LUs, KindThin4K)
	if p.Resolve(KindThin4K) != KindPlain {
		t.Errorf("thin4k without thin falls back to plain")
	}
	p.Netns = "ns1"
	if got := strings.Join(p.Command(context.Background(), "iscsi-ls", "-s").Args, " "); got != "ip netns exec ns1 iscsi-ls -s" {
		t.Errorf("command in netns: %s", got)
	}
}

// Bound gives `timeout -k` semantics: a command that ignores nothing is
// ended by SIGTERM as soon as its context ends.
func TestBound(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "sleep 30; echo never")
	Bound(cmd, time.Second)
	start := time.Now()
	out, err := cmd.Output()
	if err == nil || strings.Contains(string(out), "never") {
		t.Fatalf("command was not stopped: %v %q", err, out)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("stopped after %v", el)
	}
}

func TestProcStartStop(t *testing.T) {
	dir := t.TempDir()
	p := &proc{argv: []string{"sh", "-c", "echo hello; exec sleep 30"}, dir: dir, logPath: filepath.Join(dir, "log")}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if p.exited() || p.pid() == 0 {
		t.Fatal("not running")
	}
	if err := p.start(); err == nil {
		t.Error("second start of a running process accepted")
	}
	if err := p.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.exited() {
		t.Error("still running after stop")
	}
	if err := p.start(); err != nil { // restart appends to the same log
		t.Fatal(err)
	}
	if err := p.kill(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p.logPath)
	if strings.Count(string(b), "=== ") != 2 {
		t.Errorf("log:\n%s", b)
	}
}

func TestPickControlPort(t *testing.T) {
	for _, port := range []int{1, 3260, 32767, 60999} {
		if c := pickControlPort(port); c < 20000 || c > 32767 {
			t.Errorf("port %d -> control port %d outside tgtd's range", port, c)
		}
	}
}

func TestTailFileKeepsRaceReport(t *testing.T) {
	var b strings.Builder
	b.WriteString("start\n==================\nWARNING: DATA RACE\nWrite at 0x1 by goroutine 7:\n  pkg.f()\n==================\n")
	for i := 0; i < 300; i++ {
		b.WriteString("level=info msg=filler\n")
	}
	b.WriteString("Found 1 data race(s)\n")
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := tailFile(path, 10)
	for _, want := range []string{"[report at log line 3]", "WARNING: DATA RACE", "  pkg.f()", "[log tail]", "Found 1 data race(s)"} {
		if !strings.Contains(got, want) {
			t.Errorf("tail lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 10+6 {
		t.Errorf("tail has %d lines, want 16 (10 tail, 4 report, 2 markers):\n%s", n, got)
	}
	// Without a report above the tail, just the tail.
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(path, 2); got != "b\nc" {
		t.Errorf("tail = %q, want \"b\\nc\"", got)
	}
}
