package target

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Inline execution.
//
// At low queue depth a command's latency is mostly hand-offs between
// goroutines: receiver → worker → transmitter, each the wake-up of another
// thread (on a 2-vCPU VM about 20 µs apiece, more than the whole rest of a
// 4 KiB read). So when a command is the only one in its session's task set
// and the device server calls it Quick (an ordinary read or write), the
// receiver executes it itself and writes the response (tx.go: direct).
// Reads ask the backing store not to wait for the disk (the task's context
// carries backstore.NoWait): data that is not in the page cache sends the
// command to a worker as before.
//
// A receiver busy with a command cannot read the connection: no ABORT
// TASK, no NOP-Out answer, no next command. The watchdog bounds that. Every
// inlineTick it looks at the connections that run commands inline; one
// whose receiver has been in the same inline command at two ticks in a row
// is handed to a new receiver goroutine, and the old goroutine finishes its
// command like a worker and exits. So a blocked write (a hung disk, dirty
// page throttling) holds up the connection for at most two ticks, and the
// protocol behaves as if a worker had run the command. The watchdog's
// goroutine exits when no connection has run a command inline for
// inlineQuiet, and the next inline command starts it again.

const (
	inlineTick  = 5 * time.Millisecond
	inlineQuiet = time.Second
)

// conn.inline holds seq<<2 | state: seq numbers the connection's inline
// runs, so a watchdog or a finishing goroutine never acts on a newer one.
const (
	inlineIdle       uint64 = 0
	inlineRunning    uint64 = 1
	inlineHandedOver uint64 = 2
	inlineStateMask  uint64 = 3
)

// errHandedOver ends a receiver goroutine whose role was handed to a new
// one while it executed a command inline.
var errHandedOver = errors.New("iscsi: receiver handed over")

// inlineState is a connection's part in inline execution.
type inlineState struct {
	state  atomic.Uint64 // seq<<2 | state
	seq    uint64        // receiver only
	joined bool          // receiver only: registered with the watchdog
	seen   uint64        // watchdog only: state at its last tick

	runs, requeued atomic.Uint64 // InlineStats of this connection
}

// inlineWatch is the server's watchdog over inline execution. Its
// goroutine runs while connections run commands inline and exits after
// inlineQuiet without any, so an idle server has none.
type inlineWatch struct {
	active  atomic.Bool // the watchdog goroutine runs
	mu      sync.Mutex  // guards conns and ended
	conns   []*conn
	ended   InlineStats   // counters of connections that have left
	handoff atomic.Uint64 // receivers handed over (Stats)
}

// stats sums the counters of the registered and the ended connections.
func (w *inlineWatch) stats() InlineStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.ended
	for _, c := range w.conns {
		st.Commands += c.inl.runs.Load()
		st.Requeued += c.inl.requeued.Load()
	}
	st.Handovers = w.handoff.Load()
	return st
}

// runInline executes t on the receiver (t's data is complete and it is the
// only task of the session), or, when t was completed in Plan, sends its
// response. It returns errHandedOver when the watchdog gave the receiver
// role away meanwhile: the caller must then return without touching the
// connection's receive state.
func (c *conn) runInline(t *task) (err error) {
	in := &c.inl
	if !in.joined {
		c.srv.watch.join(c)
		in.joined = true
	}
	in.seq++
	running := in.seq<<2 | inlineRunning
	in.state.Store(running)
	c.srv.watch.arm(c.srv)
	defer func() {
		if r := recover(); r != nil {
			if in.state.CompareAndSwap(running, in.seq<<2|inlineIdle) {
				panic(r) // still the receiver: handled as a receiver panic
			}
			// Another goroutine is the receiver now: this one only
			// closes the connection.
			c.srv.recovered(c.log, c, "iscsi: panic in a command run by the receiver", r)
			err = errHandedOver
		}
	}()
	s := c.sess
	if t.complete {
		if h := c.srv.workerHook.Load(); h != nil {
			(*h)(t.cmd.CDB)
		}
		s.finish(t, true)
	} else {
		in.runs.Add(1)
		t.noWait = true
		s.sched.execute(t, true)
	}
	if in.state.CompareAndSwap(running, running&^inlineStateMask|inlineIdle) {
		return nil
	}
	return errHandedOver
}

// join registers c with the watchdog (once per connection).
func (w *inlineWatch) join(c *conn) {
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
}

// leave forgets c (the connection has ended).
func (w *inlineWatch) leave(c *conn) {
	w.mu.Lock()
	for i, o := range w.conns {
		if o == c {
			w.ended.Commands += c.inl.runs.Load()
			w.ended.Requeued += c.inl.requeued.Load()
			last := len(w.conns) - 1
			w.conns[i] = w.conns[last]
			w.conns[last] = nil
			w.conns = w.conns[:last]
			break
		}
	}
	w.mu.Unlock()
}

// arm makes sure the watchdog runs; it costs one atomic load while it
// does.
func (w *inlineWatch) arm(s *Server) {
	if !w.active.Load() && w.active.CompareAndSwap(false, true) {
		go w.run(s)
	}
}

// run is the watchdog goroutine. It ends with the server, or after
// inlineQuiet without inline commands.
func (w *inlineWatch) run(s *Server) {
	tick := time.NewTicker(inlineTick)
	defer tick.Stop()
	quiet := 0
	for {
		select {
		case <-s.ctx.Done():
			w.active.Store(false)
			return
		case <-tick.C:
		}
		if w.scan() {
			quiet = 0
			continue
		}
		if quiet++; time.Duration(quiet)*inlineTick < inlineQuiet {
			continue
		}
		w.active.Store(false)
		// A run that started before the store saw the watchdog active
		// and did not start another: look once more, and stay if there
		// is one (unless a new watchdog has started meanwhile).
		if !w.scan() || !w.active.CompareAndSwap(false, true) {
			return
		}
		quiet = 0
	}
}

// scan checks every registered connection and hands over the receivers
// stuck in one inline run since the last tick. It reports whether any
// inline run happened since the last tick or is running.
func (w *inlineWatch) scan() bool {
	busy := false
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.conns {
		in := &c.inl
		v := in.state.Load()
		prev := in.seen
		in.seen = v
		if v != prev || v&inlineStateMask == inlineRunning {
			busy = true
		}
		if v == prev && v&inlineStateMask == inlineRunning &&
			in.state.CompareAndSwap(v, v&^inlineStateMask|inlineHandedOver) {
			w.handoff.Add(1)
			c.log.WithField("after", 2*inlineTick).Debug("iscsi: command blocked the receiver; handing the connection to a new one")
			go c.run(false)
		}
	}
	return busy
}
