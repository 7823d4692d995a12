package target_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// qd1 writes and reads back rounds blocks one command at a time, with
// immediate data or with unsolicited Data-Out (so the session also waits
// for the initiator while a command collects its data), and now and then
// synchronizes the cache (a worker runs that).
func qd1(t *testing.T, c *targettest.Client, rounds int) {
	t.Helper()
	for i := range rounds {
		writeReadBack(t, c, i, targettest.CommandOptions{NoImmediate: i%2 == 1})
		if i%10 == 0 { // a command a worker runs
			r, err := c.Command([]byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{})
			if err != nil || r.Status != 0 {
				t.Fatalf("SYNCHRONIZE CACHE(10) %d: %v status %#x", i, err, statusOf(r))
			}
		}
	}
}

// TestBusyPollAtQD1: a session at queue depth 1 is polled for its next
// command, and the data stays right. The window is 1 s, beyond what a
// configuration may set, so that a starved machine (CI runs packages side
// by side; the client here shares the process) still gets the next command
// into it: at 1 ms, two CPU hogs left 2 of 5 runs without a single hit.
// Polls end when data arrives, so the long window costs no time.
func TestBusyPollAtQD1(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("busy polling needs GOMAXPROCS >= 2")
	}
	tg := targettest.Start(t, targettest.Options{})
	target.SetBusyPollWindow(tg.Server, time.Second)
	c := login(t, tg, 1)
	tur(t, c)
	const rounds = 200
	qd1(t, c, rounds)
	// Every command retired: the count of started tasks that decides
	// whether to poll is back to zero (it neither leaked nor went
	// negative, either of which would end polling for good).
	if got := target.StartedTasks(tg.Server); len(got) != 1 || got[0] != 0 {
		t.Errorf("started tasks per session %v after every command was answered, want [0]", got)
	}
	st := tg.Server.Stats().BusyPoll
	t.Logf("%d polls found data, %d ran out, over %d commands", st.Data, st.Empty, 2*rounds)
	if st.Data == 0 {
		t.Errorf("no poll found data over %d commands at queue depth 1 (%+v)", 2*rounds, st)
	}
}

// TestBusyPollOff: BusyPoll < 0, or GOMAXPROCS 1, never polls.
func TestBusyPollOff(t *testing.T) {
	check := func(name string, tg *targettest.Target) {
		c := login(t, tg, 1)
		tur(t, c)
		qd1(t, c, 20)
		if st := tg.Server.Stats().BusyPoll; st != (target.BusyPollStats{}) {
			t.Errorf("%s: %+v, want no polls", name, st)
		}
	}
	check("BusyPoll -1", targettest.Start(t, targettest.Options{Configure: func(c *target.Config) { c.BusyPoll = -1 }}))
	prev := runtime.GOMAXPROCS(1)
	tg := targettest.Start(t, targettest.Options{})
	runtime.GOMAXPROCS(prev)
	check("GOMAXPROCS 1", tg)
}

// TestBusyPollTooLong: a window over 1 ms is refused.
func TestBusyPollTooLong(t *testing.T) {
	_, err := target.NewServer(target.Config{BusyPoll: 2 * time.Millisecond})
	if err == nil {
		t.Fatal("BusyPoll 2ms accepted")
	}
}
