package main

import (
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// fakeNotifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it returns the messages as they arrive.
func fakeNotifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 64)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

// next returns the next notification; the bound only keeps a broken
// build from hanging the test run.
func next(t *testing.T, msgs <-chan string, want string) string {
	t.Helper()
	select {
	case m := <-msgs:
		if !strings.Contains(m, want) {
			t.Fatalf("notification %q, want one with %q", m, want)
		}
		return m
	case <-time.After(30 * time.Second):
		t.Fatalf("no notification (waiting for %q)", want)
	}
	return ""
}

func cliContext(t *testing.T, metricsListen string) *cli.Context {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("metrics-listen", metricsListen, "")
	return cli.NewContext(newApp(), fs, nil)
}

func TestSystemdNotify(t *testing.T) {
	msgs := fakeNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: pings every 10 ms
	t.Setenv("WATCHDOG_PID", "")
	tg := targettest.Start(t, targettest.Options{})
	log := logrus.NewEntry(logrus.New())
	o, err := startObservability(cliContext(t, ""), tg.Server, log)
	if err != nil {
		t.Fatal(err)
	}
	o.ready()
	next(t, msgs, "READY=1")
	for range 3 {
		next(t, msgs, "WATCHDOG=1")
	}
	o.stopping()
	// Watchdog pings may still be in flight; STOPPING=1 must follow.
	for {
		m := next(t, msgs, "=1")
		if strings.Contains(m, "STOPPING=1") {
			break
		}
		if m != "WATCHDOG=1" {
			t.Fatalf("unexpected notification %q", m)
		}
	}
	o.Close()
}

func TestSystemdNotifyWithoutWatchdog(t *testing.T) {
	msgs := fakeNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "")
	tg := targettest.Start(t, targettest.Options{})
	o, err := startObservability(cliContext(t, ""), tg.Server, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	o.ready()
	next(t, msgs, "READY=1")
	o.reloading()
	if m := next(t, msgs, "RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("reload notification %q lacks MONOTONIC_USEC", m)
	}
	o.reloaded()
	next(t, msgs, "READY=1")
	o.stopping()
	next(t, msgs, "STOPPING=1") // no WATCHDOG=1 in between
	o.Close()
}

func TestMetricsListenerAndHealthCommand(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	// Pick a free loopback port for the listener.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o, err := startObservability(cliContext(t, addr), tg.Server, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if code := run([]string{"iscsi-target", "health", "--metrics-listen", addr}); code != exitOK {
		t.Errorf("health: exit %d, want 0", code)
	}
	if code := run([]string{"iscsi-target", "health", "--ready", "--metrics-listen", addr}); code != exitFailure {
		t.Errorf("health --ready before ready: exit %d, want 1", code)
	}
	o.ready()
	if code := run([]string{"iscsi-target", "health", "--ready", "--metrics-listen", addr}); code != exitOK {
		t.Errorf("health --ready: exit %d, want 0", code)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %v %v", resp, err)
	}
	resp.Body.Close()
	o.stopping()
	if code := run([]string{"iscsi-target", "health", "--ready", "--metrics-listen", addr}); code != exitFailure {
		t.Errorf("health --ready while stopping: exit %d, want 1", code)
	}

	// A second daemon on the same metrics address fails to start.
	if _, err := startObservability(cliContext(t, addr), tg.Server, logrus.NewEntry(logrus.New())); err == nil {
		t.Error("a second listener on the same address started")
	}
	if _, err := startObservability(cliContext(t, "9273"), tg.Server, logrus.NewEntry(logrus.New())); err == nil {
		t.Error("--metrics-listen without a host was accepted")
	}
}

func TestHealthCommandFailures(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "wedged", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	addr := strings.TrimPrefix(down.URL, "http://")
	if code := run([]string{"iscsi-target", "health", "--metrics-listen", addr}); code != exitFailure {
		t.Errorf("503: exit %d, want 1", code)
	}
	if code := run([]string{"iscsi-target", "health", "--metrics-listen", ""}); code != exitUsage {
		t.Errorf("empty address: exit %d, want 2", code)
	}
	down.Close()
	if code := run([]string{"iscsi-target", "health", "--metrics-listen", addr, "--timeout", "2s"}); code != exitFailure {
		t.Errorf("nothing listening: exit %d, want 1", code)
	}
}

func TestProbeURL(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ready  bool
		want   string
	}{
		{"127.0.0.1:9273", false, "http://127.0.0.1:9273/healthz"},
		{"0.0.0.0:9273", true, "http://127.0.0.1:9273/readyz"},
		{"[::]:9273", false, "http://[::1]:9273/healthz"},
		{":9273", false, "http://127.0.0.1:9273/healthz"},
		{"[::1]:1234", false, "http://[::1]:1234/healthz"},
		{"10.0.0.5:9273", false, "http://10.0.0.5:9273/healthz"},
	} {
		got, err := probeURL(tc.listen, tc.ready)
		if err != nil || got != tc.want {
			t.Errorf("probeURL(%q, %v) = %q, %v; want %q", tc.listen, tc.ready, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "9273", "host"} {
		if _, err := probeURL(bad, false); err == nil {
			t.Errorf("probeURL(%q): no error", bad)
		}
	}
}
