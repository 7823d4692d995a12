package target

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestBusyPollSlots: at most GOMAXPROCS-1 receivers poll at once, none
// when the window is off.
func TestBusyPollSlots(t *testing.T) {
	if off := newBusyPoll(-1); off.window != 0 || off.enter() {
		t.Fatalf("a disabled poll gave a slot (window %v)", off.window)
	}
	p := newBusyPoll(50 * time.Microsecond)
	want := runtime.GOMAXPROCS(0) - 1
	got := 0
	for p.enter() {
		got++
		if got > want {
			break
		}
	}
	if got != want {
		t.Fatalf("%d receivers could poll at once with GOMAXPROCS %d, want %d", got, runtime.GOMAXPROCS(0), want)
	}
	if want > 0 {
		p.leave()
		if !p.enter() {
			t.Fatal("a slot given back could not be taken again")
		}
	}
}

// TestBusyPollBackoff drives one connection's poll over a real socket:
// data already there is read and counted; empty polls back off (the
// first one alone costs nothing, then 1, 3, 7 ... waits are skipped); a
// poll that finds data resets the backoff; a wait after several commands
// arrived together does not poll; a receiver reading the rest of a PDU
// polls even while commands execute.
func TestBusyPollBackoff(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("busy polling needs GOMAXPROCS >= 2")
	}
	client, server := tcpPair(t)
	sio := newSockIO(server)
	var fd int
	if err := sio.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	srv := newBusyPoll(200 * time.Microsecond)
	var started atomic.Int32 // the session's executing tasks
	cp := connPoll{srv: srv, started: &started}
	buf := make([]byte, 64)

	// pattern runs n waits on the empty socket and returns, per wait,
	// whether it polled.
	pattern := func(n int) []bool {
		var polled []bool
		for range n {
			_, p, err := cp.poll(fd, buf)
			if p && err == nil {
				t.Fatal("an empty poll returned data")
			}
			polled = append(polled, p)
		}
		return polled
	}
	// Waits 1 and 2 poll (a single empty poll does not back off), then 1
	// skipped, a poll, 3 skipped, a poll, 7 skipped, a poll.
	got := pattern(16)
	want := []bool{true, true, false, true, false, false, false, true, false, false, false, false, false, false, false, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("wait %d: polled %v, want %v (pattern %v)", i+1, got[i], want[i], got)
		}
	}
	if st := srv.stats(); st.Empty != 5 || st.Data != 0 {
		t.Fatalf("stats %+v after 5 empty polls", st)
	}

	// Data that is there when the skipping ends is read by the poll and
	// resets the backoff.
	for cp.skip > 0 {
		pattern(1)
	}
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, p, err := cp.poll(fd, buf)
		if !p {
			t.Fatal("a wait after the backoff did not poll")
		}
		if err == nil {
			if string(buf[:n]) != "ping" {
				t.Fatalf("poll read %q", buf[:n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("4 bytes written to loopback never arrived")
		}
	}
	if cp.skip != 0 || cp.last != 0 || cp.miss {
		t.Fatalf("backoff not reset by data: skip %d last %d miss %v", cp.skip, cp.last, cp.miss)
	}
	if got := pattern(2); !got[0] || !got[1] {
		t.Fatalf("after data, the next two waits polled %v, want both", got)
	}

	// Two commands read since the socket was last empty: the initiator
	// pipelines, no poll; the wait after that (one command) polls again.
	cp.skip, cp.last, cp.miss = 0, 0, false
	cp.command()
	cp.command()
	cp.command()
	if _, p, _ := cp.poll(fd, buf); p {
		t.Fatal("polled after a burst of commands")
	}
	cp.command()
	if _, p, _ := cp.poll(fd, buf); !p {
		t.Fatal("no poll after a single command")
	}

	// Commands executing: no poll, unless the receiver is inside a PDU.
	cp.skip, cp.last, cp.miss = 0, 0, false
	started.Store(1)
	if _, p, _ := cp.poll(fd, buf); p {
		t.Fatal("polled while the session had a command executing")
	}
	cp.mid = true
	if _, p, _ := cp.poll(fd, buf); !p {
		t.Fatal("no poll for the rest of a PDU")
	}
	cp.mid = false

	// No slot, no poll; the slot is given back after every poll.
	for srv.enter() {
	}
	started.Store(0)
	if _, p, _ := cp.poll(fd, buf); p {
		t.Fatal("polled without a slot")
	}
	if n := srv.busy.Load(); n != srv.slots {
		t.Fatalf("%d slots taken, want all %d", n, srv.slots)
	}
}

// TestSockIOReadPolls: sockIO.Read goes through the poll when the socket
// is empty, and still waits in the network poller when the poll runs out.
func TestSockIOReadPolls(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("busy polling needs GOMAXPROCS >= 2")
	}
	client, server := tcpPair(t)
	s := newSockIO(server)
	srv := newBusyPoll(100 * time.Microsecond)
	s.poll = connPoll{srv: srv, started: new(atomic.Int32)}
	go func() {
		time.Sleep(20 * time.Millisecond) // well after any poll window
		_, _ = client.Write([]byte("late"))
	}()
	buf := make([]byte, 16)
	_ = server.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if st := srv.stats(); st.Empty == 0 {
		t.Fatalf("stats %+v: the empty socket was not polled before the wait", st)
	}
}
