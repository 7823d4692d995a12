package conformance

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// fakeTarget stands in for a daemon: iscsi-test-cu is replaced by a shell
// script per suite, iscsi-inq prints a fixed RMB.
type fakeTarget struct {
	mu       sync.Mutex
	scripts  map[string]string // suite -> sh script
	alive    bool
	dieAfter time.Duration // the "target" dies this long after a suite starts
	restarts int
}

func (f *fakeTarget) URL(k harness.LUNKind) string {
	return "iscsi://127.0.0.1:1/iqn.fake/" + string(k)
}
func (f *fakeTarget) Has(k harness.LUNKind) bool {
	return k == harness.KindPlain || k == harness.KindRMB
}

func (f *fakeTarget) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if name == "iscsi-inq" {
		return exec.CommandContext(ctx, "sh", "-c", "echo Removable:0")
	}
	suite := ""
	for _, a := range args {
		if s, ok := strings.CutPrefix(a, "--test=ALL."); ok {
			suite = s
		}
	}
	if f.dieAfter > 0 {
		d := f.dieAfter
		go func() {
			time.Sleep(d)
			f.mu.Lock()
			f.alive = false
			f.mu.Unlock()
		}()
	}
	return exec.CommandContext(ctx, "sh", "-c", f.scripts[suite])
}

func (f *fakeTarget) Alive() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alive
}

func (f *fakeTarget) Probe(time.Duration) error {
	if !f.Alive() {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeTarget) Restart(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.alive = true
	f.restarts++
	return nil
}

func fixturePath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "cu", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunStatuses(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	old := deathGrace
	deathGrace = 200 * time.Millisecond
	t.Cleanup(func() { deathGrace = old })
	cat := testCatalog(t)

	cases := []struct {
		name     string
		suite    string
		script   string
		dieAfter time.Duration
		status   Status
		counts   Counts
		maxTime  time.Duration
	}{
		{"ok", "Reserve6", "cat " + fixturePath(t, "tgt-Reserve6.out"), 0, StatusOK,
			Counts{Tests: 7, Pass: 6, Fail: 1, Skip: 2, Genuine: 4}, 10 * time.Second},
		{"silent-skips", "StartStopUnit", "cat " + fixturePath(t, "tgt-StartStopUnit-plain.out"), 0, StatusOK,
			Counts{Tests: 3, Pass: 3, Skip: 3}, 10 * time.Second},
		{"hung", "Read10", "echo 'Suite: Read10'; echo '  Test: Simple ...passed'; exec sleep 30", 0, StatusTimeout,
			Counts{Tests: 6, Pass: 1, Fail: 5, Genuine: 1}, 10 * time.Second},
		{"crash", "OrWrite", "cat " + fixturePath(t, "gotgt-OrWrite-crash.out") + "; exec sleep 30", 300 * time.Millisecond, StatusCrash,
			Counts{Tests: 6, Fail: 6}, 10 * time.Second},
		{"aborted", "Read6", "echo 'Failed to connect to SCSI device 0'; exit 255", 0, StatusAborted,
			Counts{Tests: 2, Fail: 2}, 10 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ft := &fakeTarget{alive: true, scripts: map[string]string{c.suite: c.script}, dieAfter: c.dieAfter}
			start := time.Now()
			res, err := Run(context.Background(), "fake", ft, Options{
				Catalog: cat, Suites: []string{c.suite},
				Timeout: time.Second, KillGrace: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el > c.maxTime {
				t.Errorf("took %v, want < %v", el, c.maxTime)
			}
			s := res.Suites[0]
			if s.Status != c.status {
				t.Errorf("status %s (%s), want %s", s.Status, s.Message, c.status)
			}
			if s.Counts != c.counts {
				t.Errorf("counts %+v, want %+v", s.Counts, c.counts)
			}
			if c.suite == "StartStopUnit" && s.UsedKind != harness.KindRMB {
				t.Errorf("StartStopUnit ran on %s, want rmb", s.UsedKind)
			}
		})
	}
}

func TestRunRestartsAndFallback(t *testing.T) {
	cat := testCatalog(t)
	script := "cat " + fixturePath(t, "tgt-ExtendedCopy.out")
	ft := &fakeTarget{alive: true, scripts: map[string]string{
		"ExtendedCopy": script, "ReadOnly": "exit 1", "Reserve6": "cat " + fixturePath(t, "tgt-Reserve6.out")}}
	res, err := Run(context.Background(), "fake", ft, Options{
		Catalog: cat, Suites: []string{"ExtendedCopy", "ReadOnly", "Reserve6"}, Fresh: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Restarts != 2 || ft.restarts != 2 {
		t.Errorf("restarts %d/%d, want 2 (fresh target before every suite but the first)", res.Restarts, ft.restarts)
	}
	ro := res.Suites[1]
	if ro.Kind != harness.KindRO || ro.UsedKind != harness.KindPlain || !strings.Contains(ro.Note(), "lun=plain") {
		t.Errorf("ReadOnly: kind %s used %s note %q; want ro falling back to plain", ro.Kind, ro.UsedKind, ro.Note())
	}
	if ro.Status != StatusAborted {
		t.Errorf("ReadOnly: status %s, want aborted", ro.Status)
	}
	if got := res.Totals(); got != (Counts{Tests: 14, Pass: 12, Fail: 2, Skip: 8, Genuine: 4}) {
		t.Errorf("totals %+v", got)
	}
}
