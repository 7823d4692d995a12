//go:build e2e

package e2e

// Side-by-side tests with the reference targets (tgt, gotgt v0.2.2). They
// need root, tgt, iproute2 and network access to the Go module proxy (for
// the first gotgt build), and run only with E2E_PEERS=1 so that the default
// e2e run stays fast and independent of the peers. The full 51-suite
// comparison is `make conformance` (test/conformance/cmd/conformance).
//
//	E2E_PEERS=1 go test -tags e2e -run 'TestPeers' -v ./test/e2e/
//	E2E_PEERS=1 E2E_PEERS_SUITES=all E2E_PEERS_TARGETS=tgt,gotgt go test -tags e2e -run TestPeersConformanceTable -v ./test/e2e/

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/conformance"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

func peersEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("E2E_PEERS") != "1" {
		t.Skip("peer comparison runs only with E2E_PEERS=1 (make conformance runs it in full)")
	}
}

// peersTargets returns E2E_PEERS_TARGETS (comma list) or all peers.
func peersTargets() []string {
	if v := os.Getenv("E2E_PEERS_TARGETS"); v != "" {
		return strings.Split(v, ",")
	}
	return harness.AllPeers
}

// TestPeersHarness checks the launchers themselves on tgt and gotgt: every
// LU of every kind answers INQUIRY through the peer's namespace, the RMB
// bit matches the kind, Restart brings the peer back, and Close leaves no
// process or namespace behind.
func TestPeersHarness(t *testing.T) {
	peersEnabled(t)
	harness.RequireTools(t, "iscsi-inq", "iscsi-ls")
	for _, name := range []string{harness.PeerTGT, harness.PeerGotgt} {
		t.Run(name, func(t *testing.T) {
			set := harness.StartPeers(t, name)
			p := set.Get(name)
			ctx := context.Background()
			ls, stderr, err := p.Run(ctx, 30*time.Second, "iscsi-ls", "-s", "iscsi://"+p.Portal)
			if err != nil {
				t.Fatalf("iscsi-ls: %v\n%s", err, stderr)
			}
			t.Logf("%s (%s), netns %q:\n%s", p.Name, p.Version, p.Netns, ls)
			for _, k := range harness.Kinds {
				if !p.Has(k) {
					continue
				}
				out, stderr, err := p.Run(ctx, 30*time.Second, "iscsi-inq", p.URL(k))
				if err != nil {
					t.Errorf("%s: iscsi-inq %s: %v\n%s", k, p.URL(k), err, stderr)
					continue
				}
				rmb := conformance.ParseRMB(out)
				if rmb == nil || *rmb != (k == harness.KindRMB) {
					t.Errorf("%s: RMB %v for kind %s", p.URL(k), rmb, k)
				}
			}
			pid := p.PID()
			if err := p.Restart(ctx); err != nil {
				t.Fatalf("restart: %v", err)
			}
			if p.PID() == pid || p.Probe(5*time.Second) != nil {
				t.Errorf("restart: pid %d -> %d, probe %v", pid, p.PID(), p.Probe(5*time.Second))
			}
			pid = p.PID()
			ns := p.Netns
			if err := p.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if p.Alive() {
				t.Errorf("pid %d still alive after Close", pid)
			}
			if ns != "" {
				if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
					t.Errorf("namespace %s still exists after Close", ns)
				}
			}
			if _, err := os.Stat(p.Dir); err == nil {
				t.Errorf("%s still exists after Close", p.Dir)
			}
		})
	}
}

// TestPeersConformanceTable prints the required suites (or all with
// E2E_PEERS_SUITES=all) for ours, tgt and gotgt side by side. It reports;
// it fails only when a peer cannot be run (status error), not on a peer's
// conformance failures, which TestLibiscsiConformance judges for ours.
func TestPeersConformanceTable(t *testing.T) {
	peersEnabled(t)
	harness.RequireTools(t, "iscsi-test-cu", "iscsi-inq")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	cat, err := conformance.LoadCatalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	suites := conformance.RequiredSuites
	if v := os.Getenv("E2E_PEERS_SUITES"); v != "" {
		suites = strings.Split(v, ",")
	}
	opts := conformance.Options{Catalog: cat, Suites: suites}
	rep := &conformance.Report{Generated: time.Now().UTC(), Method: conformance.MethodOf(opts)}
	for _, name := range peersTargets() {
		set := harness.StartPeers(t, name)
		res, err := conformance.RunPeer(ctx, set.Get(name), opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range res.Suites {
			if s.Status == conformance.StatusError {
				t.Errorf("%s %s: %s", name, s.Suite, s.Message)
			}
		}
		rep.Targets = append(rep.Targets, res)
		if err := set.Close(); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("libiscsi suites side by side:\n%s", b.String())
}
