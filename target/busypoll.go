package target

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/internal/sysio"
)

// Busy polling.
//
// At queue depth 1 the initiator sends its next command a few tens of
// microseconds after it receives the answer to the last one. A receiver
// that finds its socket empty then parks in the runtime's network poller,
// its thread sleeps in epoll_wait, its vCPU halts, and the next command
// has to wake all three: on a 2-vCPU VM that costs about as much as the
// rest of the command. So a receiver whose session has nothing to do but
// wait for the initiator (every command it received has been answered, or
// is still collecting its Data-Out) keeps reading its non-blocking socket
// for up to Config.BusyPoll before it parks.
//
// A receiver in the middle of a PDU's data segment polls too: the rest of
// the segment is on its way (an initiator may send a command's header and
// its immediate data with two system calls).
//
// Polling costs CPU, so it is bounded three ways:
//   - at most GOMAXPROCS-1 receivers poll at once, server-wide (none with
//     GOMAXPROCS 1), so polling never holds every P;
//   - apart from the rest of a PDU, only a receiver whose session has no
//     command executing polls: at higher queue depths the socket rarely
//     runs dry, and when it does the workers need the CPU more;
//   - a connection whose polls ran out without data twice in a row skips
//     its next waits' polls: 1, then 3, 7, ... up to pollMaxSkip after
//     each further empty poll, and polls every time again once a poll
//     finds data. One late command (the initiator was preempted) costs
//     nothing; an idle or slow initiator costs one poll in pollMaxSkip+1
//     waits.

// DefaultBusyPoll is Config.BusyPoll when it is 0.
const DefaultBusyPoll = 50 * time.Microsecond

// MaxBusyPoll bounds Config.BusyPoll: an initiator that has not sent its
// next command within a millisecond is not waiting on us.
const MaxBusyPoll = time.Millisecond

// pollMaxSkip bounds the waits a connection skips polling after polls
// that found nothing.
const pollMaxSkip = 255

// busyPoll is the server-wide part: the window, the slots and counters.
type busyPoll struct {
	window time.Duration // 0: never poll
	slots  int32
	busy   atomic.Int32
	data   atomic.Uint64 // polls that found data
	empty  atomic.Uint64 // polls that ran out
}

func newBusyPoll(window time.Duration) *busyPoll {
	p := &busyPoll{}
	if window > 0 {
		p.window = window
		p.slots = int32(runtime.GOMAXPROCS(0) - 1)
	}
	return p
}

// enter takes a slot; false when all are taken.
func (p *busyPoll) enter() bool {
	for {
		n := p.busy.Load()
		if n >= p.slots {
			return false
		}
		if p.busy.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (p *busyPoll) leave() { p.busy.Add(-1) }

// stats returns the counters.
func (p *busyPoll) stats() BusyPollStats {
	return BusyPollStats{Data: p.data.Load(), Empty: p.empty.Load()}
}

// connPoll is a connection's part, used by its receiver only.
type connPoll struct {
	srv *busyPoll
	// started is the session's count of executing tasks
	// (scheduler.started): at 0 the next PDU is all that can happen.
	started *atomic.Int32
	skip    uint16 // waits left to skip
	last    uint16 // the skip set by the last empty poll
	miss    bool   // the last poll was empty
	mid     bool   // the receiver is reading a PDU's data segment
	cmds    uint8  // SCSI commands read since the socket was last empty
}

// command counts a SCSI Command PDU read (the receiver calls it).
func (cp *connPoll) command() {
	if cp.cmds < 2 {
		cp.cmds++
	}
}

// poll reads fd into p until data arrives, the window ends or the socket
// fails. It reports false, without reading, when this wait should not
// poll; otherwise it returns read's result (EAGAIN: the window ended).
func (cp *connPoll) poll(fd int, p []byte) (n int, polled bool, err error) {
	if cp.srv == nil || cp.srv.window == 0 {
		return 0, false, nil
	}
	burst := cp.cmds > 1
	cp.cmds = 0
	if burst {
		// The initiator had queued commands: it keeps several in
		// flight, and sleeping lets the next ones arrive together.
		return 0, false, nil
	}
	if cp.skip > 0 {
		cp.skip--
		return 0, false, nil
	}
	if !cp.mid && cp.started.Load() != 0 || !cp.srv.enter() {
		return 0, false, nil
	}
	defer cp.srv.leave()
	start := time.Now()
	for {
		n, err = sysio.ReadNonblock(fd, p)
		if err != unix.EAGAIN {
			cp.last, cp.miss = 0, false
			cp.srv.data.Add(1)
			return n, true, err
		}
		if time.Since(start) >= cp.srv.window {
			if cp.miss {
				cp.last = min(cp.last*2+1, pollMaxSkip)
				cp.skip = cp.last
			}
			cp.miss = true
			cp.srv.empty.Add(1)
			return n, true, err
		}
	}
}
