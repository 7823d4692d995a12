package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// OursLUN describes one --lun of our daemon's conformance layout.
type OursLUN struct {
	Kind LUNKind
	// Size in bytes of the sparse backing file.
	Size int64
	// Options appended to the --lun spec after the size, e.g. "ro".
	Options string
}

// ConformanceLUNs is the layout used to compare our daemon with tgt: the
// plain LUN at tgt's size, and one 64 MiB LUN per special kind. LUNs are
// numbered in this order (0-4).
var ConformanceLUNs = []OursLUN{
	{KindPlain, 512 << 20, ""},
	{KindRO, 64 << 20, "ro"},
	{KindRMB, 64 << 20, "removable"},
	// SANITIZE OVERWRITE of this LU lasts 8 s: libiscsi Sanitize.Reset
	// checks that a sanitize is still running about 4.5 s after it
	// started, across ABORT TASK, LU and target resets and a reconnect.
	{KindThin, 64 << 20, "thin,sanitize-rate=8MiB"},
	{KindThin4K, 64 << 20, "thin,blocksize=4096"},
}

// ConformanceFlags are the serve flags of the conformance runs besides
// --access shared: no NOP-In pings, because iscsi-test-cu does not read
// its socket while a test sleeps (Sanitize.Reset sleeps 60 s waiting for
// the sanitize to end) and an unanswered ping would end the session.
var ConformanceFlags = []string{"--nop-interval", "0"}

// OursIQN is the target name of our daemon in the conformance layout.
const OursIQN = "iqn.2026-11.test:ours"

// LUNSpecs creates the sparse backing files of layout in dir and returns the
// --lun arguments and the LU addresses by kind (LUN n = n-th entry).
func LUNSpecs(dir, iqn string, layout []OursLUN) ([]string, map[LUNKind]LU, error) {
	var specs []string
	lus := map[LUNKind]LU{}
	for i, l := range layout {
		path := filepath.Join(dir, fmt.Sprintf("lun%d-%s.img", i, l.Kind))
		if err := makeSparse(path, l.Size); err != nil {
			return nil, nil, err
		}
		spec := path + ",size=" + sizeSpec(l.Size)
		if l.Options != "" {
			spec += "," + l.Options
		}
		specs = append(specs, spec)
		if _, dup := lus[l.Kind]; !dup {
			lus[l.Kind] = LU{iqn, i}
		}
	}
	return specs, lus, nil
}

// sizeSpec renders bytes in the daemon's size syntax (MiB when exact).
func sizeSpec(n int64) string {
	if n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + "MiB"
	}
	return strconv.FormatInt(n, 10)
}

// OursOptions configures LaunchOurs.
type OursOptions struct {
	// Bin is the built daemon (Builder.Build).
	Bin string
	// Dir for images, state and log; default a temporary directory that
	// Close removes.
	Dir string
	// Port on 127.0.0.1; default a free port.
	Port int
	// IQN; default OursIQN.
	IQN string
	// Layout of the LUNs; default ConformanceLUNs.
	Layout []OursLUN
	// Access mode; default "shared" (the libiscsi suites log in with two
	// initiator names, which single-writer mode refuses by design).
	Access string
	// Extra flags appended to the serve command line.
	Extra []string
}

// LaunchOurs starts our daemon (already built) outside of a test, for the
// conformance command. Tests use StartTarget and OursPeer instead.
func LaunchOurs(ctx context.Context, o OursOptions) (*Peer, error) {
	p := &Peer{Name: "ours", Version: "iscsi-target (this tree)"}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "ours-peer-")
		if err != nil {
			return nil, err
		}
		o.Dir = d
		p.closers = append(p.closers, func() error { return os.RemoveAll(d) })
	}
	if o.Port == 0 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		o.Port = port
	}
	if o.IQN == "" {
		o.IQN = OursIQN
	}
	if o.Layout == nil {
		o.Layout = ConformanceLUNs
	}
	if o.Access == "" {
		o.Access = "shared"
	}
	specs, lus, err := LUNSpecs(o.Dir, o.IQN, o.Layout)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	p.Dir = o.Dir
	p.Portal = fmt.Sprintf("127.0.0.1:%d", o.Port)
	p.LogPath = filepath.Join(o.Dir, "iscsi-target.log")
	p.LUs = lus
	args := []string{o.Bin, "serve", "--listen", p.Portal, "--iqn", o.IQN,
		"--access", o.Access, "--state-dir", filepath.Join(o.Dir, "state"), "--log-level", "info",
		"--metrics-listen", ""}
	args = append(args, ConformanceFlags...)
	for _, s := range specs {
		args = append(args, "--lun", s)
	}
	args = append(args, o.Extra...)
	p.proc = &proc{argv: args, dir: o.Dir, logPath: p.LogPath}
	p.startFn = func(ctx context.Context) error {
		if err := p.proc.start(); err != nil {
			return err
		}
		return WaitListeningIn("", p.Portal, 20*time.Second, func() bool { return !p.proc.exited() })
	}
	p.stopFn = func() error { return p.proc.stop(15 * time.Second) }
	if err := p.launch(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// OursPeer wraps a daemon started by StartTarget as a Peer, so the
// conformance runner and the peer tables treat it like tgt and gotgt. lus
// maps kinds to LUN numbers of tg.IQN. Stop, Restart and Close act on tg;
// the test's cleanup still owns it.
func OursPeer(tg *Target, lus map[LUNKind]int) *Peer {
	p := &Peer{Name: "ours", Version: "iscsi-target (this tree)", Portal: tg.Portal,
		LUs: map[LUNKind]LU{}, Dir: filepath.Dir(tg.logPath), LogPath: tg.logPath, ext: tg}
	for k, n := range lus {
		p.LUs[k] = LU{tg.IQN, n}
	}
	p.startFn = func(context.Context) error {
		tg.t.Helper()
		tg.Restart() // fails the test itself when the daemon does not come up
		return nil
	}
	p.stopFn = func() error {
		_ = tg.Stop()
		return nil
	}
	return p
}

// StartOurs builds (once) and starts our daemon with the conformance layout
// through StartTarget, and returns it as a Peer.
func StartOurs(t testing.TB, b *Builder, buildDir string, layout []OursLUN, extra ...string) *Peer {
	t.Helper()
	if layout == nil {
		layout = ConformanceLUNs
	}
	specs, lus, err := LUNSpecs(t.TempDir(), OursIQN, layout)
	if err != nil {
		t.Fatalf("luns: %v", err)
	}
	tg := StartTarget(t, b, buildDir, TargetOptions{
		IQN:   OursIQN,
		LUNs:  specs,
		Extra: append(append([]string{"--access", "shared"}, ConformanceFlags...), extra...),
	})
	nums := map[LUNKind]int{}
	for k, lu := range lus {
		nums[k] = lu.LUN
	}
	return OursPeer(tg, nums)
}
