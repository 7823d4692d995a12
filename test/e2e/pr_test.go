//go:build e2e

package e2e

// Persistent reservations end to end:
//
//   - TestPRLibiscsiSuites: the libiscsi reservation suites (PERSISTENT
//     RESERVE IN/OUT, RESERVE(6), MultipathIO) in iscsi-test-cu, two
//     initiator names, --access shared; every test must pass genuinely.
//   - TestPRAPTPLSurvivesKill9: PERSISTENT RESERVE OUT with APTPL while the
//     daemon is killed with SIGKILL at random points, 60 times; after each
//     restart READ KEYS and READ RESERVATION show the last acknowledged
//     state (or the one of the command in flight, which may have been
//     saved before its status was sent), and the state file is whole.
//
//	go test -tags e2e -run 'TestPR' -v ./test/e2e/

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/conformance"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// prSuites are the reservation suites of libiscsi 1.19 (iscsi-test-cu
// --list); all of them run on the plain LUN.
var prSuites = []string{
	"PrinReadKeys", "PrinServiceactionRange", "PrinReportCapabilities",
	"ProutRegister", "ProutReserve", "ProutClear", "ProutPreempt",
	"Reserve6", "MultipathIO",
}

func TestPRLibiscsiSuites(t *testing.T) {
	harness.RequireTools(t, "iscsi-test-cu", "iscsi-inq")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cat, err := conformance.LoadCatalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	p := harness.StartOurs(t, b, dir, nil)
	outDir := t.TempDir()
	opts := conformance.Options{Catalog: cat, Suites: prSuites, OutDir: outDir, Progress: t.Logf}
	res, err := conformance.RunPeer(ctx, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	genuine, total := 0, 0
	for _, s := range res.Suites {
		t.Run(s.Suite, func(t *testing.T) {
			if s.Status != conformance.StatusOK {
				t.Errorf("suite %s: %s", s.Status, s.Message)
			}
			if len(s.Tests) == 0 {
				t.Errorf("suite ran no test")
			}
			for _, tr := range s.Tests {
				total++
				if tr.Outcome != conformance.OutcomePass {
					t.Errorf("%s.%s: %s %s %s", s.Suite, tr.Name, tr.Outcome,
						strings.Join(tr.Notes, " | "), strings.Join(tr.Failures, " | "))
					continue
				}
				genuine++
			}
			if s.ParseWarning != "" {
				t.Errorf("parse: %s", s.ParseWarning)
			}
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(outDir, s.Suite+".out")); err == nil {
					t.Logf("iscsi-test-cu %s output:\n%s", s.Suite, libiscsiTail(string(b), 120))
				}
			}
		})
	}
	t.Logf("reservation suites: %d of %d tests genuinely passed", genuine, total)
}

// prModel is what READ KEYS and READ RESERVATION must show for the one
// initiator of the kill test.
type prModel struct {
	gen     uint32
	key     uint64 // 0: not registered
	resType byte   // 0: no reservation
}

func (m prModel) String() string {
	return fmt.Sprintf("gen=%d key=%#x type=%d", m.gen, m.key, m.resType)
}

// prCDB builds a PERSISTENT RESERVE OUT CDB with a 24-byte parameter list.
func prOutCDB(sa, typ byte) []byte {
	return []byte{0x5F, sa, typ, 0, 0, 0, 0, 0, 24, 0}
}

func prParams(key, sakey uint64, aptpl bool) []byte {
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], sakey)
	if aptpl {
		p[20] = 0x01
	}
	return p
}

// prStep chooses the next command for the model and returns it with the
// state it leads to.
func prStep(rng *rand.Rand, m prModel) (cdb, params []byte, next prModel) {
	types := []byte{1, 3, 5, 6, 7, 8}
	next = m
	switch {
	case m.key == 0:
		k := rng.Uint64() | 1
		next.key, next.gen = k, m.gen+1
		return prOutCDB(0x06, 0), prParams(0, k, true), next // REGISTER AND IGNORE EXISTING KEY
	}
	switch rng.IntN(4) {
	case 0: // new key; the reservation stays with the nexus
		k := rng.Uint64() | 1
		next.key, next.gen = k, m.gen+1
		return prOutCDB(0x06, 0), prParams(0, k, true), next
	case 1:
		if m.resType == 0 {
			t := types[rng.IntN(len(types))]
			next.resType = t
			return prOutCDB(0x01, t), prParams(m.key, 0, false), next // RESERVE
		}
		next.resType = 0
		return prOutCDB(0x02, m.resType), prParams(m.key, 0, false), next // RELEASE
	case 2: // unregister: the reservation goes with the registration
		next.key, next.resType, next.gen = 0, 0, m.gen+1
		return prOutCDB(0x00, 0), prParams(m.key, 0, true), next
	default: // re-register the same key through REGISTER
		k := rng.Uint64() | 1
		next.key, next.gen = k, m.gen+1
		return prOutCDB(0x00, 0), prParams(m.key, k, true), next
	}
}

// prRead reads the state through READ KEYS and READ RESERVATION.
func prRead(c *targettest.Client) (prModel, error) {
	var m prModel
	r, err := c.Command([]byte{0x5E, 0x00, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil, 4096, targettest.CommandOptions{})
	if err != nil {
		return m, err
	}
	if r.Status != 0 || len(r.Data) < 8 {
		return m, fmt.Errorf("READ KEYS: status %#x, %d bytes", r.Status, len(r.Data))
	}
	m.gen = binary.BigEndian.Uint32(r.Data[0:4])
	n := binary.BigEndian.Uint32(r.Data[4:8])
	switch {
	case n == 8 && len(r.Data) >= 16:
		m.key = binary.BigEndian.Uint64(r.Data[8:16])
	case n != 0:
		return m, fmt.Errorf("READ KEYS: %d bytes of keys, want 0 or 8", n)
	}
	r, err = c.Command([]byte{0x5E, 0x01, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil, 4096, targettest.CommandOptions{})
	if err != nil {
		return m, err
	}
	if r.Status != 0 || len(r.Data) < 8 {
		return m, fmt.Errorf("READ RESERVATION: status %#x, %d bytes", r.Status, len(r.Data))
	}
	if gen := binary.BigEndian.Uint32(r.Data[0:4]); gen != m.gen {
		return m, fmt.Errorf("READ RESERVATION generation %d, READ KEYS %d", gen, m.gen)
	}
	if binary.BigEndian.Uint32(r.Data[4:8]) == 16 && len(r.Data) >= 24 {
		m.resType = r.Data[21] & 0x0F
		holder := binary.BigEndian.Uint64(r.Data[8:16])
		allRegs := m.resType == 7 || m.resType == 8
		if allRegs && holder != 0 || !allRegs && holder != m.key {
			return m, fmt.Errorf("READ RESERVATION key %#x for type %d, registered key %#x", holder, m.resType, m.key)
		}
	}
	return m, nil
}

// prLogin opens a session to LUN 0 and clears the power-on unit attention.
func prLogin(t *testing.T, tg *harness.Target) *targettest.Client {
	t.Helper()
	c, err := targettest.Dial(tg.Portal)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.InitiatorName = "iqn.2026-11.test:pr-kill"
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		c.Close()
		t.Fatalf("login: %v", err)
	}
	for i := 0; i < 3; i++ {
		r, err := c.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{})
		if err != nil {
			c.Close()
			t.Fatalf("TEST UNIT READY: %v", err)
		}
		if r.Status == 0 {
			return c
		}
	}
	c.Close()
	t.Fatalf("TEST UNIT READY keeps failing")
	return nil
}

func TestPRAPTPLSurvivesKill9(t *testing.T) {
	const iterations = 60
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	tg := harness.StartTarget(t, b, dir, harness.TargetOptions{Extra: []string{"--access", "shared", "--log-level", "info"}})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x5052))       // commands (the sender goroutine)
	killRng := rand.New(rand.NewPCG(seed, 0x4B494C)) // kill points (this goroutine)
	var acked prModel
	unacked := 0
	for it := 0; it < iterations; it++ {
		c := prLogin(t, tg)
		got, err := prRead(c)
		if err != nil {
			c.Close()
			t.Fatalf("iteration %d: %v", it, err)
		}
		if got != acked {
			c.Close()
			t.Fatalf("iteration %d: after restart %v, want the last acknowledged %v", it, got, acked)
		}

		// Send commands until the daemon dies under them.
		var mu sync.Mutex
		cur, pending := acked, acked
		done := make(chan struct{})
		go func() {
			defer close(done)
			for n := 0; n < 1000; n++ {
				mu.Lock()
				cdb, params, next := prStep(rng, cur)
				pending = next
				mu.Unlock()
				r, err := c.Command(cdb, params, 0, targettest.CommandOptions{})
				if err != nil {
					return // killed
				}
				if r.Status != 0 {
					k, asc, ascq := r.SenseKey()
					t.Errorf("PROUT % x from %v: status %#x sense %x/%02x%02x", cdb, cur, r.Status, k, asc, ascq)
					return
				}
				mu.Lock()
				cur = next
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(killRng.IntN(40_000)) * time.Microsecond)
		tg.Kill()
		<-done
		c.Close()
		if t.Failed() {
			return
		}
		mu.Lock()
		last, inFlight := cur, pending
		mu.Unlock()

		// The state file is whole JSON whatever the moment of the kill.
		if files, _ := filepath.Glob(filepath.Join(tg.StateDir, "*.pr.json")); len(files) > 0 {
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil || !json.Valid(raw) {
					t.Fatalf("iteration %d: state file %s is not whole JSON (%v):\n%s", it, f, err, raw)
				}
			}
		}
		tg.Restart()
		c = prLogin(t, tg)
		got, err = prRead(c)
		c.Close()
		if err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
		switch got {
		case last:
			acked = last
		case inFlight:
			// Saved, then killed before the status went out.
			acked = inFlight
			unacked++
		default:
			t.Fatalf("iteration %d: after kill -9 %v, want the last acknowledged %v (or in flight %v)",
				it, got, last, inFlight)
		}
	}
	t.Logf("%d kills, %d of them after a change was saved but before its status was sent; final state %v",
		iterations, unacked, acked)
}
