package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TGTOptions configures LaunchTGT. Zero values are the defaults of
// conformance-baseline.md §1.
type TGTOptions struct {
	// Dir for images and the log; default a new temporary directory that
	// Close removes.
	Dir string
	// Port of the iSCSI portal on 127.0.0.1; default a free port. The
	// management channel (-C, at most 32767) gets a number derived from it
	// that no other tgtd on the host uses.
	Port int
	// IQN of the plain target; the special LUNs live on IQN+"-x".
	// Default iqn.2026-11.test:tgt.
	IQN string
	// PlainSize of LUN 1 (default 512 MiB), SpecialSize of the read-only,
	// removable and thin LUNs (default 64 MiB).
	PlainSize, SpecialSize int64
	// NoSpecial leaves out the second target with the special LUNs.
	NoSpecial bool
}

// TGTTools are the programs LaunchTGT needs.
var TGTTools = []string{"tgtd", "tgtadm"}

// LaunchTGT starts Linux tgt (tgtd) on 127.0.0.1 in the host namespace and
// configures, with tgtadm, target IQN with LUN 1 on a sparse plain image and
// (unless NoSpecial) target IQN-x with LUN 1 readonly=1, LUN 2 removable=1
// and LUN 3 thin_provisioning=1. tgt adds a controller LUN 0 to every
// target, so its disk LUNs start at 1. The caller must Close the peer.
func LaunchTGT(ctx context.Context, o TGTOptions) (*Peer, error) {
	if m := MissingTools(TGTTools...); len(m) > 0 {
		return nil, fmt.Errorf("tgt: missing %s (Debian package tgt)", strings.Join(m, ", "))
	}
	p := &Peer{Name: "tgt"}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "tgt-peer-")
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
		o.IQN = "iqn.2026-11.test:tgt"
	}
	if o.PlainSize == 0 {
		o.PlainSize = 512 << 20
	}
	if o.SpecialSize == 0 {
		o.SpecialSize = 64 << 20
	}
	p.Dir = o.Dir
	p.Portal = fmt.Sprintf("127.0.0.1:%d", o.Port)
	p.LogPath = filepath.Join(o.Dir, "tgtd.log")
	p.LUs = map[LUNKind]LU{KindPlain: {o.IQN, 1}}
	if out, err := runTool(ctx, 5*time.Second, "tgtd", "-V"); err == nil {
		p.Version = "tgt " + strings.TrimSpace(out)
	}

	ctl := strconv.Itoa(pickControlPort(o.Port))
	images := []string{filepath.Join(o.Dir, "plain.img")}
	sizes := []int64{o.PlainSize}
	if !o.NoSpecial {
		xiqn := o.IQN + "-x"
		p.LUs[KindRO] = LU{xiqn, 1}
		p.LUs[KindRMB] = LU{xiqn, 2}
		p.LUs[KindThin] = LU{xiqn, 3}
		for _, n := range []string{"ro", "rmb", "thin"} {
			images = append(images, filepath.Join(o.Dir, n+".img"))
			sizes = append(sizes, o.SpecialSize)
		}
	}
	for i, img := range images {
		if err := makeSparse(img, sizes[i]); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	p.proc = &proc{
		argv:    []string{"tgtd", "-f", "-C", ctl, "--iscsi", "portal=" + p.Portal},
		dir:     o.Dir,
		logPath: p.LogPath,
	}
	adm := func(ctx context.Context, args ...string) error {
		_, err := runTool(ctx, 15*time.Second, "tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
		return err
	}
	tids := []int{1}
	if !o.NoSpecial {
		tids = append(tids, 2)
	}
	p.startFn = func(ctx context.Context) error {
		if err := p.proc.start(); err != nil {
			return err
		}
		// Wait for the management socket.
		deadline := time.Now().Add(15 * time.Second)
		for {
			if p.proc.exited() {
				return fmt.Errorf("tgtd exited: %v", p.proc.exitErr())
			}
			if err := adm(ctx, "--mode", "system", "--op", "show"); err == nil {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("tgtd management channel: %w", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		steps := [][]string{
			{"--mode", "target", "--op", "new", "--tid", "1", "--targetname", o.IQN},
			{"--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", images[0]},
			{"--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL"},
		}
		if !o.NoSpecial {
			steps = append(steps, []string{"--mode", "target", "--op", "new", "--tid", "2", "--targetname", o.IQN + "-x"})
			for i, params := range []string{"readonly=1", "removable=1", "thin_provisioning=1"} {
				lun := strconv.Itoa(i + 1)
				steps = append(steps,
					[]string{"--mode", "logicalunit", "--op", "new", "--tid", "2", "--lun", lun, "--backing-store", images[i+1]},
					[]string{"--mode", "logicalunit", "--op", "update", "--tid", "2", "--lun", lun, "--params", params})
			}
			steps = append(steps, []string{"--mode", "target", "--op", "bind", "--tid", "2", "--initiator-address", "ALL"})
		}
		for _, s := range steps {
			if err := adm(ctx, s...); err != nil {
				return err
			}
		}
		return WaitListeningIn("", p.Portal, 15*time.Second, func() bool { return !p.proc.exited() })
	}
	p.stopFn = func() error {
		if p.proc.exited() {
			removeTGTSockets(ctl)
			return nil
		}
		// tgtd ignores SIGTERM while targets exist: delete them, then the
		// system, and give it a few seconds to exit.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, tid := range tids {
			_ = adm(ctx, "--mode", "target", "--op", "delete", "--force", "--tid", strconv.Itoa(tid))
		}
		_ = adm(ctx, "--mode", "system", "--op", "delete")
		var err error
		if werr := p.proc.wait(10 * time.Second); errors.Is(werr, context.DeadlineExceeded) {
			err = p.proc.kill()
		}
		removeTGTSockets(ctl)
		return err
	}
	if err := p.launch(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// pickControlPort chooses tgtd's -C number (1..32767): derived from the
// iSCSI port, skipping numbers whose socket file exists (another tgtd, or
// a stale one).
func pickControlPort(port int) int {
	n := 20000 + port%12000
	for i := 0; i < 12000; i++ {
		c := 20000 + (n-20000+i)%12000
		if _, err := os.Stat(filepath.Join("/var/run/tgtd", "socket."+strconv.Itoa(c))); err != nil {
			return c
		}
	}
	return n
}

// removeTGTSockets deletes the management socket files tgtd leaves behind
// for control port ctl.
func removeTGTSockets(ctl string) {
	for _, suffix := range []string{"", ".lock"} {
		_ = os.Remove(filepath.Join("/var/run/tgtd", "socket."+ctl+suffix))
	}
}

// StartTGT is LaunchTGT for tests: it checks the prerequisites (fail under
// CI=true, skip otherwise), fails the test on a launch error and closes the
// peer when the test ends.
func StartTGT(t testing.TB, o TGTOptions) *Peer {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, TGTTools...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := LaunchTGT(ctx, o)
	if err != nil {
		t.Fatalf("start tgt: %v", err)
	}
	p.attach(t)
	return p
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("harness: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
