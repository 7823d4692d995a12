package target_test

import (
	"errors"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// waitStats polls Stats until cond holds; the loop is bounded and the
// failure names what was awaited (not a timing assertion: the events
// happen on the target's goroutines after the client has its answer).
func waitStats(t *testing.T, srv *target.Server, what string, cond func(target.Stats) bool) target.Stats {
	t.Helper()
	var st target.Stats
	for range 500 {
		if st = srv.Stats(); cond(st) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("stats never showed %s: %+v", what, st)
	return st
}

func TestServerStats(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	// Serve registers its listener on its own goroutine.
	st := waitStats(t, tg.Server, "the listener", func(s target.Stats) bool { return s.Listening == 1 })
	if st.Closing || len(st.Nodes) != 1 || st.Nodes[0].Name != tg.IQN {
		t.Fatalf("fresh server: %+v", st)
	}

	// One good login with I/O, one to an unknown target, one dropped
	// mid-login, one discovery session.
	c := login(t, tg, 1)
	tur(t, c)
	data := randBytes(t, 64<<10)
	if r, err := c.Command(cdbWrite10(0, 128), data, 0, targettest.CommandOptions{}); err != nil || r.Status != 0 {
		t.Fatalf("write: %+v %v", r, err)
	}
	if r, err := c.Command(cdbRead10(0, 32), nil, 16<<10, targettest.CommandOptions{}); err != nil || r.Status != 0 {
		t.Fatalf("read: %+v %v", r, err)
	}
	if r, err := c.Command(cdbRead10(1<<30, 1), nil, 512, targettest.CommandOptions{}); err != nil || r.Status != 2 {
		t.Fatalf("read beyond the end: %+v %v", r, err)
	}

	bad := dial(t, tg)
	var lf *targettest.ErrLoginFailed
	if err := bad.Login(targettest.LoginOptions{Target: "iqn.2026-11.test:nobody"}); !errors.As(err, &lf) || lf.Status != 0x0203 {
		t.Fatalf("login to an unknown target: %v", err)
	}
	// A login that breaks off after part of a header counts as aborted;
	// a bare TCP probe is no login at all.
	dropped := dial(t, tg)
	if err := dropped.WriteRaw([]byte{0x43, 0x87, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	dropped.Close()
	probe := dial(t, tg)
	probe.Close()
	disc := dial(t, tg)
	disc.ISID[5] = 9
	if err := disc.Login(targettest.LoginOptions{}); err != nil {
		t.Fatalf("discovery login: %v", err)
	}

	// The probe closed without a byte: it counts as no login, and its
	// receiver forgets the connection after it saw EOF, so the open
	// connections are waited for too (a clean-clone CI run saw 3 here).
	st = waitStats(t, tg.Server, "three finished logins, one aborted and two open connections", func(s target.Stats) bool {
		return s.Logins[target.LoginResultSuccess] == 2 && s.Logins[target.LoginResultNotFound] == 1 &&
			s.Logins[target.LoginResultAborted] == 1 && s.Connections == 2
	})
	var total uint64
	for _, n := range st.Logins {
		total += n
	}
	if total != 4 {
		t.Errorf("logins: got %v, want 4 in all", st.Logins)
	}
	if st.ConnectionsAccepted != 5 {
		t.Errorf("connections accepted: got %d, want 5", st.ConnectionsAccepted)
	}
	if st.Nodes[0].Sessions != 1 || st.DiscoverySessions != 1 {
		t.Errorf("sessions: got %d normal, %d discovery; want 1, 1", st.Nodes[0].Sessions, st.DiscoverySessions)
	}
	lus := st.Nodes[0].SCSI.LUs
	if len(lus) != 1 {
		t.Fatalf("LUs: %+v", lus)
	}
	w, r := lus[0].Classes[scsi.ClassWrite], lus[0].Classes[scsi.ClassRead]
	if w.Commands != 1 || w.Bytes != 64<<10 || r.Commands != 2 || r.Bytes != 16<<10 {
		t.Errorf("LU 0: write %d cmds %d bytes, read %d cmds %d bytes; want 1/65536, 2/16384", w.Commands, w.Bytes, r.Commands, r.Bytes)
	}
	if got := lus[0].Errors[scsi.KeyIllegalRequest]; got != 1 {
		t.Errorf("ILLEGAL REQUEST: got %d, want 1", got)
	}
	if st.Connections != 2 {
		t.Errorf("open connections: got %d, want 2", st.Connections)
	}

	c.Logout()
	disc.Logout()
	waitStats(t, tg.Server, "no sessions left", func(s target.Stats) bool {
		return s.Nodes[0].Sessions == 0 && s.DiscoverySessions == 0 && s.Connections <= 1
	})
}

func TestServerStatsCHAP(t *testing.T) {
	tg := chapTarget(t, nil)
	for _, tc := range []struct {
		name      string
		chap      *targettest.CHAP
		ok        bool
		chapFails uint64 // added to CHAPFailures
	}{
		{"good", &targettest.CHAP{User: initUser, Secret: initSecret}, true, 0},
		{"wrong secret", &targettest.CHAP{User: initUser, Secret: "wrong-secret-777"}, false, 1},
		{"no CHAP offered", nil, false, 0}, // refused at AuthMethod: no CHAP exchange failed
	} {
		before := tg.Server.Stats()
		c := chapDial(t, tg)
		err := c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: tc.chap})
		if (err == nil) != tc.ok {
			t.Fatalf("%s: login error %v", tc.name, err)
		}
		result := target.LoginResultAuthFailed
		if tc.ok {
			result = target.LoginResultSuccess
		}
		// The target counts a refusal once its response is out.
		after := waitStats(t, tg.Server, tc.name+" counted", func(s target.Stats) bool {
			return s.Logins[result] > before.Logins[result]
		})
		if d := after.Logins[result] - before.Logins[result]; d != 1 {
			t.Errorf("%s: logins %v grew by %d, want 1", tc.name, result, d)
		}
		if d := after.CHAPFailures - before.CHAPFailures; d != tc.chapFails {
			t.Errorf("%s: CHAP failures grew by %d, want %d", tc.name, d, tc.chapFails)
		}
		if d := after.Auth.Successes - before.Auth.Successes; (d == 1) != tc.ok {
			t.Errorf("%s: CHAP successes grew by %d", tc.name, d)
		}
	}
}
