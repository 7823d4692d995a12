//go:build e2e

package e2e

// Observability end to end: the daemon's /metrics, /healthz and /readyz
// while qemu-img's libiscsi driver and iscsi-inq drive real I/O, and the
// systemd notification protocol of the real binary on a fake
// NOTIFY_SOCKET.
//
//	go test -tags e2e -run 'TestDaemonMetrics|TestDaemonSystemdNotify' -v ./test/e2e/

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// sample names one series: metric name and labels, as in the exposition
// (client_golang sorts labels by name).
func sample(name string, kv ...string) string {
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	if len(ps) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name + "{")
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", p.k, p.v)
	}
	b.WriteByte('}')
	return b.String()
}

// probeClient closes every connection after its request: idle keep-alive
// connections would hold goroutines in the daemon, which the harness's
// goroutine-leak check counts.
var probeClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpGet returns the status and body of http://addr/path.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics, lints it with promlint and returns the samples.
func scrape(t *testing.T, addr string) (map[string]float64, string) {
	t.Helper()
	code, body := httpGet(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m, body
}

// delta is after[key] - before[key]; a missing series is a failure.
func delta(t *testing.T, before, after map[string]float64, key string) float64 {
	t.Helper()
	a, ok := after[key]
	if !ok {
		t.Fatalf("no series %s", key)
	}
	return a - before[key]
}

// waitFor polls until cond holds (bounded; the events happen on the
// daemon's goroutines after the initiator has exited).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 300 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestDaemonMetrics(t *testing.T) {
	harness.RequireTools(t, "qemu-img", "iscsi-inq")
	const iqn = "iqn.2026-11.test:e2e-metrics"
	const size = 8 << 20
	dir := t.TempDir()
	tg := libiscsiStart(t, iqn, []string{
		filepath.Join(dir, "lun0.img") + ",size=8MiB",
		filepath.Join(dir, "lun1.img") + ",size=4MiB",
	})
	addr := tg.MetricsAddr

	if code, body := httpGet(t, addr, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	waitFor(t, "/readyz 200", func() bool { code, _ := httpGet(t, addr, "/readyz"); return code == 200 })

	lun := func(name, l string, kv ...string) string {
		return sample(name, append([]string{"target", iqn, "lun", l}, kv...)...)
	}
	s0, _ := scrape(t, addr)
	if got := s0[lun("iscsi_target_lun_capacity_bytes", "1")]; got != 4<<20 {
		t.Errorf("LUN 1 capacity %v, want %d", got, 4<<20)
	}

	// Write a random image with qemu-img's libiscsi driver.
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,initiator-name=%s",
		tg.Portal, iqn, libiscsiInitiator)
	src := filepath.Join(dir, "src.img")
	want := libiscsiImage(t, src, size, 7)
	libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", src, opts)
	waitFor(t, "the session to end", func() bool {
		s, _ := scrape(t, addr)
		return s[sample("iscsi_target_sessions", "target", iqn)] == 0
	})
	s1, _ := scrape(t, addr)
	if d := delta(t, s0, s1, lun("iscsi_target_written_bytes_total", "0")); d != size {
		t.Errorf("written bytes grew by %v, want %d", d, size)
	}
	writes := delta(t, s0, s1, lun("iscsi_target_scsi_commands_total", "0", "class", "write"))
	if writes < 1 || writes > size/512 {
		t.Errorf("%v write commands for %d bytes", writes, size)
	}
	if d := delta(t, s0, s1, lun("iscsi_target_scsi_command_duration_seconds_count", "0", "class", "write")); d != writes {
		t.Errorf("write latency histogram counted %v, commands %v", d, writes)
	}
	if d := delta(t, s0, s1, lun("iscsi_target_read_bytes_total", "0")); d != 0 {
		t.Errorf("read bytes grew by %v while only writing", d)
	}
	if d := delta(t, s0, s1, sample("iscsi_target_logins_total", "result", "success")); d != 1 {
		t.Errorf("successful logins grew by %v, want 1 (qemu-img's session)", d)
	}
	if d := delta(t, s0, s1, lun("iscsi_target_written_bytes_total", "1")); d != 0 {
		t.Errorf("LUN 1 written bytes grew by %v", d)
	}

	// Read it back.
	back := filepath.Join(dir, "back.img")
	libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "--image-opts", opts, "-O", "raw", back)
	if got := libiscsiFileSum(t, back); got != want {
		t.Fatal("read-back image differs")
	}
	waitFor(t, "the session to end", func() bool {
		s, _ := scrape(t, addr)
		return s[sample("iscsi_target_sessions", "target", iqn)] == 0
	})
	s2, _ := scrape(t, addr)
	if d := delta(t, s1, s2, lun("iscsi_target_read_bytes_total", "0")); d != size {
		t.Errorf("read bytes grew by %v, want %d", d, size)
	}
	if d := delta(t, s1, s2, lun("iscsi_target_written_bytes_total", "0")); d != 0 {
		t.Errorf("written bytes grew by %v while only reading", d)
	}
	reads := delta(t, s1, s2, lun("iscsi_target_scsi_commands_total", "0", "class", "read"))
	if d := delta(t, s1, s2, lun("iscsi_target_scsi_command_duration_seconds_count", "0", "class", "read")); reads < 1 || d != reads {
		t.Errorf("%v read commands, latency histogram counted %v", reads, d)
	}

	// An INQUIRY for a VPD page that does not exist: one ILLEGAL REQUEST.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inq := exec.CommandContext(ctx, "iscsi-inq", "-i", libiscsiInitiator, "-e", "1", "-c", "127",
		fmt.Sprintf("iscsi://%s/%s/1", tg.Portal, iqn))
	harness.Bound(inq, 5*time.Second)
	out, err := inq.CombinedOutput()
	if err == nil {
		t.Fatalf("iscsi-inq of VPD page 7Fh succeeded:\n%s", out)
	}
	waitFor(t, "the session to end", func() bool {
		s, _ := scrape(t, addr)
		return s[sample("iscsi_target_sessions", "target", iqn)] == 0
	})
	s3, body := scrape(t, addr)
	if d := delta(t, s2, s3, lun("iscsi_target_scsi_errors_total", "1", "sense_key", "illegal_request")); d != 1 {
		t.Errorf("ILLEGAL REQUEST on LUN 1 grew by %v, want 1 (iscsi-inq said: %s)", d, bytes.TrimSpace(out))
	}
	if d := delta(t, s2, s3, sample("iscsi_target_logins_total", "result", "success")); d != 1 {
		t.Errorf("successful logins grew by %v, want 1", d)
	}
	for _, k := range []string{"authentication_failed", "not_found", "aborted"} {
		if v := s3[sample("iscsi_target_logins_total", "result", k)]; v != 0 {
			t.Errorf("logins %s: %v, want 0", k, v)
		}
	}
	if s3[sample("iscsi_target_connections")] != 0 {
		t.Errorf("connections %v after every initiator left", s3[sample("iscsi_target_connections")])
	}
	if v := s3[sample("iscsi_target_panics_total", "layer", "scsi")] + s3[sample("iscsi_target_panics_total", "layer", "iscsi")]; v != 0 {
		t.Errorf("panics: %v", v)
	}
	if strings.Contains(body, libiscsiInitiator) {
		t.Error("the exposition contains the initiator name")
	}
	for _, k := range []string{"go_goroutines", "process_resident_memory_bytes", "iscsi_target_build_info"} {
		if !strings.Contains(body, "\n"+k) {
			t.Errorf("no %s in the exposition", k)
		}
	}

	// The single-writer lease: libiscsi's initiator holds it (no live
	// session now); another initiator name takes it over.
	tgtLabel := []string{"target", iqn}
	if v := s3[sample("iscsi_target_lease_held", tgtLabel...)]; v != 1 {
		t.Errorf("lease_held %v after libiscsi's sessions, want 1", v)
	}
	if v := s3[sample("iscsi_target_lease_holder_alive", tgtLabel...)]; v != 0 {
		t.Errorf("lease_holder_alive %v with no session, want 0", v)
	}
	other := exec.CommandContext(ctx, "iscsi-inq", "-i", "iqn.2026-11.test:e2e-metrics-other",
		fmt.Sprintf("iscsi://%s/%s/0", tg.Portal, iqn))
	harness.Bound(other, 5*time.Second)
	if out, err := other.CombinedOutput(); err != nil {
		t.Fatalf("iscsi-inq as another initiator: %v\n%s", err, out)
	}
	waitFor(t, "the session to end", func() bool {
		s, _ := scrape(t, addr)
		return s[sample("iscsi_target_sessions", tgtLabel...)] == 0
	})
	s4, _ := scrape(t, addr)
	if d := delta(t, s3, s4, sample("iscsi_target_lease_takeovers_total", tgtLabel...)); d != 1 {
		t.Errorf("lease takeovers grew by %v, want 1", d)
	}
	if d := delta(t, s3, s4, sample("iscsi_target_lease_epoch", tgtLabel...)); d != 1 {
		t.Errorf("lease epoch grew by %v, want 1", d)
	}
	if v := s4[sample("iscsi_target_fenced_nexuses", tgtLabel...)]; v < 1 {
		t.Errorf("fenced_nexuses %v after a takeover, want at least 1", v)
	}

	// Shutdown: /readyz turns 503 while sessions drain. A session that
	// stays logged in holds the drain open long enough to see it.
	c := rawLogin(t, tg.Portal, iqn, 3)
	defer c.Close()
	if err := tg.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 503 during shutdown", func() bool {
		code, _ := httpGet(t, addr, "/readyz")
		return code == 503
	})
	c.Logout()
	if err := tg.Wait(30 * time.Second); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
}

// notifySocket is a unixgram socket standing in for systemd's.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 256)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// TestDaemonSystemdNotify runs the binary as systemd would with
// Type=notify and WatchdogSec: READY=1 only once the iSCSI port accepts
// and /readyz answers 200, WATCHDOG=1 repeatedly, STOPPING=1 on SIGTERM,
// then exit 0.
func TestDaemonSystemdNotify(t *testing.T) {
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := b.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock, msgs := notifySocket(t)
	state := t.TempDir()
	portal := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	maddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cmd := exec.Command(bin, "serve", "--listen", portal, "--state-dir", state, "--iqn", "iqn.2026-11.test:notify",
		"--lun", filepath.Join(state, "lun0.img")+",size=4MiB", "--metrics-listen", maddr)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	_, done := startProcess(t, cmd)
	next := func(want string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case err := <-done:
			t.Fatalf("daemon exited (%v) while waiting for %s", err, want)
		case <-time.After(30 * time.Second):
			t.Fatalf("no notification while waiting for %s", want)
		}
		return ""
	}

	m := next("READY=1")
	if !strings.Contains(m, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	// Ready means ready: the portal accepts and /readyz says so.
	nc, err := net.DialTimeout("tcp", portal, 5*time.Second)
	if err != nil {
		t.Fatalf("READY=1 sent but the portal does not accept: %v", err)
	}
	nc.Close()
	if code, body := httpGet(t, maddr, "/readyz"); code != 200 {
		t.Fatalf("READY=1 sent but /readyz is %d %s", code, body)
	}
	for i := 0; i < 3; i++ {
		if m := next("WATCHDOG=1"); m != "WATCHDOG=1" {
			t.Fatalf("notification %q, want WATCHDOG=1", m)
		}
	}
	// SIGHUP (systemctl reload): RELOADING=1, then READY=1 again.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RELOADING=1", "READY=1"} {
		for {
			m := next(want)
			if strings.Contains(m, want) {
				break
			}
			if m != "WATCHDOG=1" {
				t.Fatalf("notification %q while waiting for %s", m, want)
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		m := next("STOPPING=1")
		if strings.Contains(m, "STOPPING=1") {
			break
		}
		if m != "WATCHDOG=1" {
			t.Fatalf("notification %q before STOPPING=1", m)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit after SIGTERM")
	}
}

// TestDaemonMetricsCHAP: libiscsi logins with a wrong and a right CHAP
// secret move chap_failures_total, chap_successes_total and logins_total
// by one each.
func TestDaemonMetricsCHAP(t *testing.T) {
	harness.RequireTools(t, "iscsi-inq")
	const iqn = "iqn.2026-11.test:e2e-metrics-chap"
	const user, secret = "metrics-user", "metrics-secret-0123"
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := libiscsiStart(t, iqn, []string{filepath.Join(dir, "lun0.img") + ",size=4MiB"},
		"--chap-user", user, "--chap-secret-file", secretFile)
	addr := tg.MetricsAddr
	inq := func(cred string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "iscsi-inq", "-i", libiscsiInitiator,
			fmt.Sprintf("iscsi://%s@%s/%s/0", cred, tg.Portal, iqn))
		harness.Bound(cmd, 5*time.Second)
		return cmd.Run()
	}
	s0, _ := scrape(t, addr)
	if err := inq(user + "%wrong-secret-4567"); err == nil {
		t.Fatal("login with a wrong secret succeeded")
	}
	failed := sample("iscsi_target_logins_total", "result", "authentication_failed")
	waitFor(t, "the refusal to be counted", func() bool { s, _ := scrape(t, addr); return s[failed] > s0[failed] })
	s1, _ := scrape(t, addr)
	if err := inq(user + "%" + secret); err != nil {
		t.Fatalf("login with the right secret: %v", err)
	}
	waitFor(t, "the session to end", func() bool {
		s, _ := scrape(t, addr)
		return s[sample("iscsi_target_sessions", "target", iqn)] == 0
	})
	s2, body := scrape(t, addr)
	for _, c := range []struct {
		key      string
		from, to map[string]float64
		want     float64
	}{
		{failed, s0, s1, 1},
		{sample("iscsi_target_chap_failures_total"), s0, s1, 1},
		{sample("iscsi_target_chap_successes_total"), s0, s1, 0},
		{sample("iscsi_target_chap_successes_total"), s1, s2, 1},
		{sample("iscsi_target_logins_total", "result", "success"), s1, s2, 1},
		{sample("iscsi_target_chap_failures_total"), s1, s2, 0},
	} {
		if d := delta(t, c.from, c.to, c.key); d != c.want {
			t.Errorf("%s grew by %v, want %v", c.key, d, c.want)
		}
	}
	if strings.Contains(body, secret) || strings.Contains(body, user) {
		t.Error("the exposition contains CHAP credentials")
	}
}

// startProcess starts cmd with its output collected in the returned buffer
// and SIGKILL should the test process die; done receives cmd.Wait's result.
// When the test ends the daemon is killed and, if the test failed, its
// output logged.
func startProcess(t *testing.T, cmd *exec.Cmd) (*bytes.Buffer, <-chan error) {
	t.Helper()
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		// Wait has returned once the output is copied: only then may
		// the buffer be read.
		select {
		case <-exited:
			if t.Failed() {
				t.Logf("daemon log:\n%s", log.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("the daemon did not exit 10 s after SIGKILL")
		}
	})
	return &log, done
}
