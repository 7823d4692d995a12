package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LUNKind names the logical-unit variants the libiscsi suites need for full
// coverage (conformance-baseline.md §1-2).
type LUNKind string

// The LUN kinds every peer tries to expose.
const (
	KindPlain LUNKind = "plain" // ordinary read-write disk
	KindRO    LUNKind = "ro"    // write-protected (MODE SENSE WP=1)
	KindRMB   LUNKind = "rmb"   // removable medium (INQUIRY RMB=1)
	KindThin  LUNKind = "thin"  // thin provisioned (LBPME=1)
	// KindThin4K is a thin provisioned LU with 4096-byte logical blocks,
	// so one logical block per physical block (LBPPB=1). A peer without
	// it uses its thin LU (Fallback).
	KindThin4K LUNKind = "thin4k"
)

// Kinds lists the LUN kinds in display order.
var Kinds = []LUNKind{KindPlain, KindRO, KindRMB, KindThin, KindThin4K}

// Fallback is the kind a peer without k uses instead: the thin LU for the
// 4096-byte thin LU, else the plain LU.
func (k LUNKind) Fallback() LUNKind {
	if k == KindThin4K {
		return KindThin
	}
	return KindPlain
}

// Resolve returns the kind the peer actually serves for k: k itself, its
// fallback, or the plain LU.
func (p *Peer) Resolve(k LUNKind) LUNKind {
	for _, c := range []LUNKind{k, k.Fallback()} {
		if p.Has(c) {
			return c
		}
	}
	return KindPlain
}

// LU addresses one logical unit: a target name and a LUN number.
type LU struct {
	IQN string
	LUN int
}

// Peer is a running iSCSI target of any implementation (ours, tgt, gotgt)
// seen the same way by tests: a portal reachable from Netns (empty = the
// host's namespace), logical units by kind, a log, and Stop/Restart/Close.
// Initiator tools must be started with Command so they run in the right
// network namespace.
type Peer struct {
	// Name is the short implementation name: "ours", "tgt" or "gotgt".
	Name string
	// Version describes the implementation, e.g. "tgt 1.0.85".
	Version string
	// Portal is host:port as the initiator dials it.
	Portal string
	// Netns is the network namespace to run initiators in ("" = host).
	Netns string
	// LUs maps the LUN kinds this peer exposes to their address. KindPlain
	// is always present.
	LUs map[LUNKind]LU
	// Dir holds the peer's images, configuration and log.
	Dir string
	// LogPath is the daemon's combined stdout/stderr.
	LogPath string

	mu      sync.Mutex
	proc    *proc                           // the daemon, when the launcher owns it
	ext     *Target                         // or a daemon started by StartTarget
	startFn func(ctx context.Context) error // starts the daemon and configures it
	stopFn  func() error                    // stops the daemon gracefully
	closers []func() error                  // run once by Close, last first
	closed  bool
}

// running, pid and exitErr look at whichever process the peer wraps.
// Callers hold p.mu.
func (p *Peer) running() bool {
	switch {
	case p.proc != nil:
		return !p.proc.exited()
	case p.ext != nil:
		return !p.ext.Exited()
	}
	return false
}

func (p *Peer) pid() int {
	switch {
	case p.proc != nil:
		return p.proc.pid()
	case p.ext != nil && p.ext.cmd != nil:
		return p.ext.PID()
	}
	return 0
}

func (p *Peer) exitErr() error {
	switch {
	case p.proc != nil:
		return p.proc.exitErr()
	case p.ext != nil && p.ext.Exited():
		err := <-p.ext.done
		p.ext.done <- err
		return err
	}
	return nil
}

// URL returns the iscsi:// URL of the LU of kind k, falling back as
// Resolve does when the peer has no such kind.
func (p *Peer) URL(k LUNKind) string {
	lu := p.LUs[p.Resolve(k)]
	return fmt.Sprintf("iscsi://%s/%s/%d", p.Portal, lu.IQN, lu.LUN)
}

// Has reports whether the peer exposes a LU of kind k.
func (p *Peer) Has(k LUNKind) bool {
	_, ok := p.LUs[k]
	return ok
}

// Command returns a command that runs name in the peer's network
// namespace. The caller owns it (timeouts, output).
func (p *Peer) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if p.Netns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Netns, name}, args...)...)
}

// Run runs name with args in the peer's namespace under timeout and returns
// its stdout and stderr.
func (p *Peer) Run(ctx context.Context, timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := p.Command(ctx, name, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%s: %w after %v", name, ctx.Err(), timeout)
	}
	return o.String(), e.String(), err
}

// PID returns the daemon's process id (0 if not running).
func (p *Peer) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return 0
	}
	return p.pid()
}

// Alive reports whether the daemon process is running.
func (p *Peer) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

// ExitError returns how the daemon ended, or nil while it runs.
func (p *Peer) ExitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr()
}

// Probe checks that the daemon runs and accepts TCP connections on its
// portal from inside its namespace.
func (p *Peer) Probe(timeout time.Duration) error {
	if !p.Alive() {
		return fmt.Errorf("%s: process not running (%v)", p.Name, p.ExitError())
	}
	return DialIn(p.Netns, p.Portal, timeout)
}

// Restart stops the daemon (if running) and starts and configures it again
// with the same settings. Images keep their data.
func (p *Peer) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("harness: peer closed")
	}
	if err := p.stopFn(); err != nil {
		return fmt.Errorf("%s: stop: %w", p.Name, err)
	}
	if err := p.startFn(ctx); err != nil {
		_ = p.stopFn()
		return fmt.Errorf("%s: start: %w\n%s", p.Name, err, tailFile(p.LogPath, 30))
	}
	return nil
}

// Stop stops the daemon; Restart can start it again.
func (p *Peer) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopFn()
}

// Close stops the daemon and releases everything the launcher created
// (network namespace, temporary directories). It is idempotent.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if p.stopFn != nil { // nil when the launch failed before it was set
		errs = append(errs, p.stopFn())
	}
	for i := len(p.closers) - 1; i >= 0; i-- {
		errs = append(errs, p.closers[i]())
	}
	return errors.Join(errs...)
}

// Log returns the daemon log so far.
func (p *Peer) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the daemon log.
func (p *Peer) LogTail(n int) string { return tailFile(p.LogPath, n) }

// launch runs startFn for a fresh peer and closes it on failure.
func (p *Peer) launch(ctx context.Context) error {
	p.mu.Lock()
	err := p.startFn(ctx)
	p.mu.Unlock()
	if err != nil {
		tail := tailFile(p.LogPath, 30)
		_ = p.Close()
		return fmt.Errorf("%s: %w\nlog tail:\n%s", p.Name, err, tail)
	}
	return nil
}

// attach registers t.Cleanup to close the peer and dump its log tail when
// the test failed.
func (p *Peer) attach(t testing.TB) {
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("%s: close: %v", p.Name, err)
		}
		if t.Failed() {
			t.Logf("%s log (%s), last lines:\n%s", p.Name, p.LogPath, p.LogTail(60))
		}
	})
}

// RequireTools checks that every named program is on PATH. A missing tool
// fails the test when the environment variable CI is "true" and skips it
// with a clear message otherwise.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		Unavailable(t, "missing tools %s (Debian: libiscsi-bin, qemu-utils, qemu-block-extra, tgt, iproute2)",
			strings.Join(missing, ", "))
	}
}

// RequireRoot needs uid 0 (network namespaces, tgtd), with the same CI rule
// as RequireTools.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (network namespaces, tgtd)")
	}
}

// Unavailable fails the test under CI=true and skips it otherwise.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: missing prerequisites are failures)", msg)
	}
	t.Skipf("SKIP: %s (set CI=true to make this a failure)", msg)
}

// MissingTools returns the names not found on PATH.
func MissingTools(names ...string) []string {
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	return missing
}

// terminate is used by commands started with Setpgid: SIGTERM to the whole
// process group.
func terminate(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
}

// Bound makes cmd behave like `timeout -k grace`: when its context ends the
// process group gets SIGTERM, and SIGKILL grace later. Call before Start.
func Bound(cmd *exec.Cmd, grace time.Duration) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Cancel = func() error { return terminate(cmd) }
	cmd.WaitDelay = grace
}
