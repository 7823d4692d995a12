package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Target is what the runner needs from a running iSCSI target;
// *harness.Peer implements it.
type Target interface {
	// URL returns the iscsi:// URL of the LU of kind k (plain when absent).
	URL(k harness.LUNKind) string
	// Has reports whether the target offers kind k.
	Has(k harness.LUNKind) bool
	// Command runs an initiator tool in the target's network namespace.
	Command(ctx context.Context, name string, args ...string) *exec.Cmd
	// Alive reports whether the target process runs (polled during a suite
	// to stop the tool soon after the target died).
	Alive() bool
	// Probe checks that the target process runs and accepts connections.
	Probe(timeout time.Duration) error
	// Restart starts the target again (after a crash, or for Fresh).
	Restart(ctx context.Context) error
}

// Options configures Run.
type Options struct {
	// Catalog is the installed test list (LoadCatalog).
	Catalog *Catalog
	// Suites to run, in order; nil = all suites of the catalog.
	Suites []string
	// PlainOnly runs every suite on the plain LUN (the "plain" columns of
	// conformance-baseline.md) instead of its best-coverage LUN.
	PlainOnly bool
	// NoSanitize leaves out --allow-sanitize (Sanitize then skips).
	NoSanitize bool
	// SingleMultipathURL gives MultipathIO one URL instead of the same URL
	// twice (its tests then skip, as in gotgt-assessment.md §6).
	SingleMultipathURL bool
	// Timeout per suite process; default 300 s. KillGrace is the time
	// between SIGTERM and SIGKILL; default 10 s.
	Timeout, KillGrace time.Duration
	// Fresh restarts the target before every suite. Without it, the target
	// is restarted only when it crashed or stopped answering.
	Fresh bool
	// OutDir, when set, receives OutDir/<suite>.out and .err.
	OutDir string
	// Progress, when set, gets one line per suite.
	Progress func(format string, args ...any)
}

// maxOutput caps the captured output of one suite process.
const maxOutput = 64 << 20

// RunPeer runs the suites against a harness peer.
func RunPeer(ctx context.Context, p *harness.Peer, o Options) (*TargetResult, error) {
	r, err := Run(ctx, p.Name, p, o)
	if r != nil {
		r.Version = p.Version
	}
	return r, err
}

// Run runs each suite in its own iscsi-test-cu process against t and
// classifies the results. It returns an error only for a bad
// configuration or when ctx ends; suite problems are in the results.
func Run(ctx context.Context, name string, t Target, o Options) (*TargetResult, error) {
	if o.Catalog == nil {
		return nil, errors.New("conformance: no catalog")
	}
	suites, err := o.Catalog.Select(o.Suites)
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 300 * time.Second
	}
	if o.KillGrace == 0 {
		o.KillGrace = 10 * time.Second
	}
	if o.OutDir != "" {
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	res := &TargetResult{Target: name}
	rmbCache := map[string]*bool{}
	for i, suite := range suites {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var sr SuiteResult
		restarted, uerr := ensureUp(ctx, t, o.Fresh && i > 0)
		if restarted {
			res.Restarts++
		}
		if uerr != nil {
			sr = SuiteResult{Suite: suite, Kind: kindFor(suite, o), Status: StatusError,
				Message: uerr.Error(), ExitCode: -1}
			sr.UsedKind = sr.Kind
			sr.Tests = Classify(suite, o.Catalog.Tests[suite], nil, StatusError, nil)
			sr.count()
		} else {
			sr = runSuite(ctx, t, suite, o, rmbCache)
		}
		res.Suites = append(res.Suites, sr)
		if o.Progress != nil {
			c := sr.Counts
			o.Progress("%-6s %-24s %-5s tests %3d pass %3d fail %3d skip %3d genuine %3d  %5.1fs %s",
				name, suite, sr.UsedKind, c.Tests, c.Pass, c.Fail, c.Skip, c.Genuine,
				sr.Duration.Seconds(), sr.Note())
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// ensureUp restarts t when forced or when it does not answer.
func ensureUp(ctx context.Context, t Target, force bool) (bool, error) {
	if !force && t.Probe(5*time.Second) == nil {
		return false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := t.Restart(rctx); err != nil {
		return true, fmt.Errorf("target restart failed: %w", err)
	}
	return true, nil
}

func kindFor(suite string, o Options) harness.LUNKind {
	if o.PlainOnly {
		return harness.KindPlain
	}
	return BestKind(suite)
}

// Args returns the iscsi-test-cu arguments for suite on url.
func Args(suite, url string, o Options) []string {
	args := []string{"--dataloss"}
	if suite == "Sanitize" && !o.NoSanitize {
		args = append(args, "--allow-sanitize")
	}
	args = append(args, "--test=ALL."+suite, url)
	if suite == "MultipathIO" && !o.SingleMultipathURL {
		args = append(args, url) // a second session to the same LU
	}
	return args
}

func runSuite(ctx context.Context, t Target, suite string, o Options, rmbCache map[string]*bool) SuiteResult {
	sr := SuiteResult{Suite: suite, Kind: kindFor(suite, o)}
	sr.UsedKind = sr.Kind
	if !t.Has(sr.UsedKind) {
		sr.UsedKind = sr.Kind.Fallback()
	}
	if !t.Has(sr.UsedKind) {
		sr.UsedKind = harness.KindPlain
	}
	sr.URL = t.URL(sr.UsedKind)
	tests := o.Catalog.Tests[suite]

	var rmb *bool
	if needsRMB(suite, tests) {
		if v, ok := rmbCache[sr.URL]; ok {
			rmb = v
		} else {
			rmb = inquireRMB(ctx, t, sr.URL)
			rmbCache[sr.URL] = rmb
		}
	}

	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := t.Command(sctx, "iscsi-test-cu", Args(suite, sr.URL, o)...)
	harness.Bound(cmd, o.KillGrace)
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	var runErr error
	died := false
	if runErr = cmd.Start(); runErr == nil {
		died, runErr = watch(t, cancel, cmd)
	}
	sr.Duration = time.Since(begin)
	sr.ExitCode = -1
	if cmd.ProcessState != nil {
		sr.ExitCode = cmd.ProcessState.ExitCode()
	}
	if o.OutDir != "" {
		base := filepath.Join(o.OutDir, suite)
		_ = os.WriteFile(base+".out", stdout.Bytes(), 0o644)
		_ = os.WriteFile(base+".err", stderr.Bytes(), 0o644)
	}

	run, perr := ParseCUnit(stdout.String())
	if perr == nil {
		if err := run.Check(); err != nil {
			sr.ParseWarning = err.Error()
		}
	} else {
		sr.ParseWarning = perr.Error()
	}

	// Did the target survive? A dead or unreachable target outranks a
	// timeout, which outranks an aborted tool.
	switch probeErr := t.Probe(5 * time.Second); {
	case died:
		sr.Status, sr.Message = StatusCrash, "target process died during the suite"+crashLine(t)
	case probeErr != nil:
		sr.Status, sr.Message = StatusCrash, "target down after the suite: "+probeErr.Error()+crashLine(t)
	case ctx.Err() != nil:
		sr.Status, sr.Message = StatusError, "interrupted: "+ctx.Err().Error()
	case sctx.Err() != nil:
		sr.Status, sr.Message = StatusTimeout, fmt.Sprintf("suite killed after %v (target hung?)", o.Timeout)
	case run == nil || run.Summary == nil:
		sr.Status = StatusAborted
		sr.Message = abortMessage(runErr, run, stderr.String())
	default:
		sr.Status = StatusOK
		if len(run.SuiteInitFailed) > 0 {
			sr.Message = "suite initialisation failed"
		}
	}
	if stdout.truncated {
		sr.ParseWarning = strings.TrimSpace(sr.ParseWarning + " output truncated")
	}
	sr.Tests = Classify(suite, tests, run, sr.Status, rmb)
	sr.count()
	return sr
}

// deathGrace is how long the tool may keep running after the target
// process died (libiscsi retries the connection forever).
var deathGrace = 5 * time.Second

// watch waits for cmd while polling the target. When the target process
// dies it gives the tool deathGrace to finish, then cancels it (SIGTERM,
// later SIGKILL through cmd.Cancel and WaitDelay). It returns whether the
// target died and Wait's error.
func watch(t Target, cancel context.CancelFunc, cmd *exec.Cmd) (bool, error) {
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var grace <-chan time.Time
	died := false
	for {
		select {
		case err := <-waitc:
			return died, err
		case <-tick.C:
			if !died && !t.Alive() {
				died = true
				grace = time.After(deathGrace)
			}
		case <-grace:
			grace = nil
			cancel()
		}
	}
}

func abortMessage(runErr error, run *CUnitRun, stderr string) string {
	var parts []string
	if runErr != nil {
		parts = append(parts, runErr.Error())
	}
	if run != nil && len(run.Preamble) > 0 {
		parts = append(parts, strings.Join(firstN(run.Preamble, 3), " | "))
	}
	if s := strings.TrimSpace(stderr); s != "" {
		lines := strings.Split(s, "\n")
		if len(lines) > 3 {
			lines = lines[len(lines)-3:]
		}
		parts = append(parts, strings.Join(lines, " | "))
	}
	return "no Run Summary: " + strings.Join(parts, "; ")
}

// crashLine returns ": <first panic or fatal error line>" from the target
// log when the target exposes it.
func crashLine(t Target) string {
	lt, ok := t.(interface{ LogTail(n int) string })
	if !ok {
		return ""
	}
	for _, l := range strings.Split(lt.LogTail(400), "\n") {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			return ": " + strings.TrimSpace(l)
		}
	}
	return ""
}

var removableRE = regexp.MustCompile(`(?m)^Removable:\s*(\d)`)

// inquireRMB reads the RMB bit with iscsi-inq; nil when it cannot.
func inquireRMB(ctx context.Context, t Target, url string) *bool {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := t.Command(ctx, "iscsi-inq", url)
	harness.Bound(cmd, 5*time.Second)
	out, err := cmd.Output()
	if err != nil {
		return nil
	}
	return ParseRMB(string(out))
}

// ParseRMB extracts the RMB bit from iscsi-inq's standard INQUIRY output.
func ParseRMB(out string) *bool {
	m := removableRE.FindStringSubmatch(out)
	if m == nil {
		return nil
	}
	v := m[1] != "0"
	return &v
}

// capped is a bytes.Buffer that drops output past maxOutput.
type capped struct {
	bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.Len(); len(p) > room {
		c.truncated = true
		if room > 0 {
			c.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return c.Buffer.Write(p)
}
