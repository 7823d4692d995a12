// Package harness starts iSCSI targets for end-to-end tests: our daemon
// (built from this repository, with the race detector), and the peers the
// comparison tables measure (tgt, gotgt v0.2.2). Every target listens on
// loopback or inside a network namespace the harness creates.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Builder builds the daemon binary once per test process.
type Builder struct {
	once sync.Once
	path string
	err  error
	// Race builds with -race (default for e2e runs).
	Race bool
}

// Build returns the path of the built daemon, building it on first use
// into dir (usually a directory kept for the whole test binary).
func (b *Builder) Build(dir string) (string, error) {
	b.once.Do(func() {
		out := filepath.Join(dir, "iscsi-target")
		args := []string{"build", "-o", out}
		if b.Race {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/iscsi-target")
		cmd := exec.Command("go", args...)
		cmd.Dir = RepoRoot()
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, buf.String())
			return
		}
		b.path = out
	})
	return b.path, b.err
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitListening polls addr until a TCP connect succeeds or timeout passes.
func WaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Target is a running instance of our daemon.
type Target struct {
	t        testing.TB
	bin      string
	args     []string
	Portal   string // host:port
	IQN      string
	StateDir string
	// MetricsAddr is the --metrics-listen address the harness chose, or
	// "" when the test passed its own.
	MetricsAddr string
	logPath     string
	cmd         *exec.Cmd
	done        chan error
	// baseline is the daemon's goroutine count when idle after start (0
	// when unknown); the leak check compares against it.
	baseline int
}

// TargetOptions configures StartTarget.
type TargetOptions struct {
	// IQN of the target; default iqn.2026-11.test:e2e.
	IQN string
	// LUNs are --lun specs, e.g. "/tmp/x.img,size=64MiB". Default: one
	// 64 MiB sparse file in a temp dir.
	LUNs []string
	// Extra flags appended to the serve command line.
	Extra []string
	// Listen address; default 127.0.0.1 on a free port.
	Listen string
	// StateDir; default a temp dir.
	StateDir string
	// Config is a --config file; with it, no --iqn and no default LUN
	// are passed (IQN must name a target of the file).
	Config string
}

// StartTarget builds (once, via b) and starts the daemon, waits until it
// listens, and stops it (SIGTERM, then SIGKILL) when the test ends. The
// daemon's log is written to a file and dumped on test failure.
func StartTarget(t testing.TB, b *Builder, buildDir string, o TargetOptions) *Target {
	t.Helper()
	bin, err := b.Build(buildDir)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if o.IQN == "" {
		o.IQN = "iqn.2026-11.test:e2e"
	}
	dir := t.TempDir()
	if len(o.LUNs) == 0 && o.Config == "" {
		o.LUNs = []string{filepath.Join(dir, "lun0.img") + ",size=64MiB"}
	}
	if o.Listen == "" {
		o.Listen = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(dir, "state")
	}
	args := []string{"serve", "--listen", o.Listen, "--state-dir", o.StateDir, "--log-level", "debug"}
	if o.Config != "" {
		args = append(args, "--config", o.Config)
	} else {
		args = append(args, "--iqn", o.IQN)
	}
	for _, l := range o.LUNs {
		args = append(args, "--lun", l)
	}
	args = append(args, o.Extra...)
	// Every daemon gets its own metrics port (the default 9273 would
	// collide between parallel tests) unless the test chose one.
	metricsAddr := ""
	if !slices.ContainsFunc(o.Extra, func(a string) bool { return strings.HasPrefix(a, "--metrics-listen") }) {
		metricsAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		args = append(args, "--metrics-listen", metricsAddr)
	}
	tg := &Target{t: t, bin: bin, args: args, Portal: o.Listen, IQN: o.IQN, MetricsAddr: metricsAddr,
		StateDir: o.StateDir, logPath: filepath.Join(dir, "target.log")}
	tg.start()
	t.Cleanup(func() {
		if !t.Failed() {
			tg.checkNoLeaks()
		}
		tg.Stop()
		if t.Failed() {
			t.Logf("target log (%s):\n%s", tg.logPath, tailFile(tg.logPath, 200))
		}
	})
	return tg
}

func (tg *Target) start() {
	tg.t.Helper()
	f, err := os.OpenFile(tg.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tg.t.Fatalf("log file: %v", err)
	}
	// Where this run's output starts (Restart appends to the same log).
	logStart, _ := f.Seek(0, io.SeekEnd)
	cmd := exec.Command(tg.bin, tg.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		tg.t.Fatalf("start target: %v", err)
	}
	f.Close()
	tg.cmd = cmd
	tg.done = make(chan error, 1)
	go func() { tg.done <- cmd.Wait() }()
	if err := WaitListening(tg.Portal, 20*time.Second); err != nil {
		tg.t.Fatalf("target did not start: %v\n%s", err, tailFile(tg.logPath, 50))
	}
	// The portal's socket exists before the metrics and admin listeners
	// do; the daemon logs "serving" once all of them are up (and just
	// before /readyz turns 200).
	if err := tg.waitServing(logStart, 20*time.Second); err != nil {
		tg.t.Fatalf("target did not start: %v\n%s", err, tailFile(tg.logPath, 50))
	}
	// The idle goroutine count, for the leak check (no admin socket, no
	// check: a test may run the daemon with --admin-socket none). The
	// portal accepting does not mean every listener (other portals,
	// metrics) has started: take the count once it holds still.
	tg.baseline = 0
	last, same := -1, 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && same < 3; time.Sleep(50 * time.Millisecond) {
		r, err := tg.Runtime(false, false)
		if err != nil {
			return
		}
		if r.Goroutines == last {
			same++
		} else {
			last, same = r.Goroutines, 1
		}
		tg.baseline = max(tg.baseline, r.Goroutines)
	}
}

// waitServing waits until the daemon's output from offset on holds its
// "serving" line (text or JSON log format), or the daemon exits.
func (tg *Target) waitServing(offset int64, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(tg.logPath); err == nil && int64(len(b)) > offset {
			out := b[offset:]
			if bytes.Contains(out, []byte("msg=serving ")) || bytes.Contains(out, []byte(`"msg":"serving"`)) {
				return nil
			}
		}
		select {
		case err := <-tg.done:
			tg.done <- err
			return fmt.Errorf("the daemon exited before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no \"serving\" line in the log after %v", timeout)
		}
	}
}

// PID returns the daemon's process id.
func (tg *Target) PID() int { return tg.cmd.Process.Pid }

// Log returns the daemon's log so far.
func (tg *Target) Log() string {
	b, _ := os.ReadFile(tg.logPath)
	return string(b)
}

// Signal sends sig to the daemon.
func (tg *Target) Signal(sig os.Signal) error { return tg.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the daemon to exit and returns its exit error
// (nil for exit status 0).
func (tg *Target) Wait(timeout time.Duration) error {
	select {
	case err := <-tg.done:
		tg.done <- err
		return err
	case <-time.After(timeout):
		return context.DeadlineExceeded
	}
}

// Exited reports whether the daemon has exited.
func (tg *Target) Exited() bool {
	select {
	case err := <-tg.done:
		tg.done <- err
		return true
	default:
		return false
	}
}

// Stop terminates the daemon: SIGTERM, then SIGKILL after 15 s.
func (tg *Target) Stop() error {
	if tg.cmd == nil || tg.Exited() {
		return nil
	}
	_ = tg.cmd.Process.Signal(syscall.SIGTERM)
	err := tg.Wait(15 * time.Second)
	if errors.Is(err, context.DeadlineExceeded) {
		_ = tg.cmd.Process.Kill()
		err = tg.Wait(5 * time.Second)
	}
	return err
}

// Kill sends SIGKILL and waits for the exit.
func (tg *Target) Kill() {
	if tg.cmd == nil || tg.Exited() {
		return
	}
	_ = tg.cmd.Process.Kill()
	_ = tg.Wait(10 * time.Second)
}

// Restart starts the daemon again with the same arguments (after Stop or
// Kill), appending to the same log.
func (tg *Target) Restart() {
	tg.t.Helper()
	if !tg.Exited() {
		tg.t.Fatalf("restart: daemon still running")
	}
	tg.start()
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var reports []string
	if len(s) > lines {
		// A race or panic report above the tail is what the failure
		// needs most; keep it whole.
		reports = crashReports(s[:len(s)-lines])
		s = s[len(s)-lines:]
	}
	return strings.Join(append(reports, s...), "\n")
}

// crashReports returns the race detector's reports and Go panics found in
// lines, each up to 150 lines, prefixed by where it starts.
func crashReports(lines []string) []string {
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.Contains(l, "WARNING: DATA RACE") && !strings.HasPrefix(l, "panic: ") && !strings.HasPrefix(l, "fatal error: ") {
			continue
		}
		out = append(out, fmt.Sprintf("[report at log line %d]", i+1))
		end := min(i+150, len(lines))
		for j := i; j < end; j++ {
			out = append(out, lines[j])
			if j > i && lines[j] == "==================" {
				end = j + 1
				break
			}
		}
		i = end - 1
	}
	if len(out) > 0 {
		out = append(out, "[log tail]")
	}
	return out
}
