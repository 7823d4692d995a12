//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
	"github.com/iscsi-target/iscsi-target/test/guest"
)

// kernelPeerEnv selects the target the kernel initiator tests attach:
// "ours" (default) or "tgt", which validates the guest harness against a
// known-good target.
const kernelPeerEnv = "E2E_KERNEL_PEER"

// kernelLUNSize is the test disk's size.
const kernelLUNSize = 256 << 20

// kernelPeer is a running target with one kernelLUNSize test disk.
type kernelPeer struct {
	*harness.Peer
	LU harness.LU
	// Advertises reports whether SendTargets returns the guest's portal,
	// so the guest logs in through the discovered node record exactly as
	// the Kubernetes iSCSI plugins do. tgt advertises its bind address.
	Advertises bool
}

// startKernelPeer starts a fresh target and stops it when the test ends.
func startKernelPeer(t *testing.T) *kernelPeer {
	t.Helper()
	switch p := os.Getenv(kernelPeerEnv); p {
	case "", "ours":
		b, dir, err := harness.SharedBuilder()
		if err != nil {
			t.Fatalf("build dir: %v", err)
		}
		img := filepath.Join(t.TempDir(), "lun0.img")
		tg := harness.StartTarget(t, b, dir, harness.TargetOptions{
			IQN:   "iqn.2026-11.test:kernel",
			LUNs:  []string{fmt.Sprintf("%s,size=%dMiB", img, kernelLUNSize>>20)},
			Extra: []string{"--advertise", guest.DefaultPortal},
		})
		peer := harness.OursPeer(tg, map[harness.LUNKind]int{harness.KindPlain: 0})
		return &kernelPeer{Peer: peer, LU: peer.LUs[harness.KindPlain], Advertises: true}
	case "tgt":
		peer := harness.StartTGT(t, harness.TGTOptions{NoSpecial: true, PlainSize: kernelLUNSize})
		return &kernelPeer{Peer: peer, LU: peer.LUs[harness.KindPlain]}
	default:
		t.Fatalf("%s=%q: want ours or tgt", kernelPeerEnv, p)
		return nil
	}
}

// Kill sends SIGKILL to the target daemon and waits for it to exit.
func (k *kernelPeer) Kill(t *testing.T) {
	t.Helper()
	pid := k.PID()
	if pid == 0 {
		t.Fatalf("%s is not running", k.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s (pid %d): %v", k.Name, pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for k.Alive() {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still alive 10 s after SIGKILL", k.Name, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts the killed target again with the same configuration
// (tgt's in-memory configuration is re-created by the harness).
func (k *kernelPeer) Restart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := k.Peer.Restart(ctx); err != nil {
		t.Fatalf("restart %s: %v", k.Name, err)
	}
}

// EnableDigests lets the target negotiate CRC32C header and data digests.
// Our daemon offers them anyway; tgt negotiates None unless told to.
func (k *kernelPeer) EnableDigests(t *testing.T) {
	t.Helper()
	if k.Name != "tgt" {
		return
	}
	// harness.TGTOptions has no target parameters; tgtadm needs tgtd's
	// management port, which is on its command line.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k.PID()))
	if err != nil {
		t.Fatalf("tgtd command line: %v", err)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	ctl := ""
	for i, a := range args {
		if a == "-C" && i+1 < len(args) {
			ctl = args[i+1]
		}
	}
	if ctl == "" {
		t.Fatalf("no -C in tgtd command line %q", args)
	}
	for _, name := range []string{"HeaderDigest", "DataDigest"} {
		if _, stderr, err := k.Run(t.Context(), 15*time.Second, "tgtadm", "-C", ctl, "--lld", "iscsi",
			"--mode", "target", "--op", "update", "--tid", "1", "--name", name, "--value", "CRC32C,None"); err != nil {
			t.Fatalf("tgtadm %s: %v: %s", name, err, stderr)
		}
	}
}
