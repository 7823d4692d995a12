package target

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/scsi"
)

// maxR2TPerTask bounds MaxOutstandingR2T (and the per-task R2T table).
const maxR2TPerTask = 16

// Abort dispositions stored in task.aborted.
const (
	notAborted    uint32 = 0
	abortSilent   uint32 = 1 // no response (the requesting I_T nexus, or a dead connection)
	abortReported uint32 = 2 // TASK ABORTED status (TAS=1, tasks of other I_T nexuses)
)

type taskState uint8

const (
	stateCollecting taskState = iota // delivered, receiving Data-Out
	stateWaiting                     // data complete, waiting for an ORDERED barrier
	stateRunning                     // handed to a worker
	stateDone                        // retired from the task set
)

// r2tSeq is one outstanding R2T and the Data-Out sequence answering it.
type r2tSeq struct {
	ttt       uint32
	offset    uint32
	length    uint32
	received  uint32
	expDataSN uint32
	active    bool
}

// task is one SCSI command in a session. Tasks are pooled by the Server;
// the struct holds everything a command needs so the data path does not
// allocate. A task is also the command's context.Context: it is cancelled
// when the task is aborted.
type task struct {
	sess *session
	cmd  scsi.Command
	cdb  [scsi.MaxCDBLen]byte

	itt       uint32
	cmdSN     uint32
	lun       uint64
	edtl      uint32
	immediate bool
	writeBit  bool
	readBit   bool
	attr      scsi.TaskAttr
	seq       uint64 // delivery order within the session
	lunEpoch  uint64 // node reset epoch of the LUN at delivery

	buf    *[]byte // from the server's buffer pool
	data   []byte  // the part of buf in use
	charge int64   // bytes of the server's data budget held for buf

	// Data-Out reception, owned by the receiver.
	want        uint32 // Data-Out bytes kept (min of SCSI length and EDTL)
	unsolLimit  uint32 // immediate + unsolicited bytes allowed
	unsolRecv   uint32 // unsolicited bytes received so far
	unsolOpen   bool   // an unsolicited Data-Out sequence is still expected
	unsolDataSN uint32
	nextR2TOff  uint32
	r2tSN       uint32
	r2ts        [maxR2TPerTask]r2tSeq
	r2tActive   int
	complete    bool // Plan already set the final status (no execution)
	// inline: the receiver runs the task itself (inline.go); noWait: its
	// reads must not wait for the medium (backstore.NoWait).
	inline bool
	noWait bool

	state      taskState
	ready      bool // data complete
	prev, next *task
	aborted    atomic.Uint32

	doneMu     sync.Mutex
	doneCh     chan struct{}
	doneClosed bool // doneCh has been closed
}

// reset prepares a pooled task for a new command.
func (t *task) reset(s *session) {
	*t = task{sess: s}
}

// Deadline implements context.Context: tasks have none.
func (t *task) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context; the channel is made on first use only,
// since most backstore calls just poll Err.
func (t *task) Done() <-chan struct{} {
	t.doneMu.Lock()
	defer t.doneMu.Unlock()
	if t.doneCh == nil {
		t.doneCh = make(chan struct{})
		if t.aborted.Load() != notAborted {
			// abort may not have reached its close yet: it sees
			// doneClosed and leaves the channel alone.
			close(t.doneCh)
			t.doneClosed = true
		}
	}
	return t.doneCh
}

// Err implements context.Context.
func (t *task) Err() error {
	if t.aborted.Load() != notAborted {
		return context.Canceled
	}
	return nil
}

// Value implements context.Context: backstore.NoWait while the task runs
// on its connection's receiver.
func (t *task) Value(key any) any {
	if _, ok := key.(backstore.NoWait); ok && t.noWait {
		return true
	}
	return nil
}

// abort marks the task aborted with the given disposition; the first
// disposition wins.
func (t *task) abort(how uint32) {
	if !t.aborted.CompareAndSwap(notAborted, how) {
		return
	}
	t.doneMu.Lock()
	if t.doneCh != nil && !t.doneClosed {
		close(t.doneCh)
		t.doneClosed = true
	}
	t.doneMu.Unlock()
}

// releaseBuf returns the task's data buffer to the pool.
func (t *task) releaseBuf() {
	if t.buf != nil {
		t.sess.srv.bufs.Put(t.buf)
		t.buf = nil
		t.data = nil
	}
	if t.charge != 0 {
		t.sess.srv.budget.release(t.charge)
		t.charge = 0
	}
}

func (s *Server) getTask(sess *session) *task {
	t := s.tasks.Get().(*task)
	t.reset(sess)
	return t
}

func (s *Server) putTask(t *task) {
	if t.sess == nil {
		// Freed before: pooling it again would hand one task to two
		// commands. A bug, so a panic (recovered: it costs a connection).
		panic("iscsi: task freed twice")
	}
	t.releaseBuf()
	t.sess = nil
	s.tasks.Put(t)
}

// scheduler is the session's task set: the delivered tasks in CmdSN order,
// the SAM task attribute rules (SIMPLE tasks run concurrently, an ORDERED
// task waits for every older task and holds back every newer one, HEAD OF
// QUEUE runs at once) and the workers that execute tasks. All fields are
// guarded by session.mu.
type scheduler struct {
	s           *session
	head, tail  *task
	orderedLive int
	seq         uint64
	work        chan *task
	workers     int
	idle        int
	pending     int // tasks sent to work and not yet taken by a worker
	maxWorkers  int
	stopped     bool
	inlineOK    bool // the receiver would run the task it is starting
	// started counts the tasks whose data is complete and that have not
	// retired (waiting or running): while it is 0, whatever happens next
	// in the session comes from the initiator (busypoll.go). Written
	// under s.mu, read by the receiver without it.
	started atomic.Int32
}

// workerIdle is how long an idle worker waits before it exits, so idle
// sessions hold no goroutines.
const workerIdle = 10 * time.Second

func (q *scheduler) init(s *session) {
	q.s = s
	n := int(s.window) + maxImmediate
	q.work = make(chan *task, n)
	q.maxWorkers = min(int(s.window), 64)
}

// deliver appends a task to the task set; the caller holds s.mu.
func (q *scheduler) deliver(t *task) {
	q.seq++
	t.seq = q.seq
	t.prev, t.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = t
	} else {
		q.head = t
	}
	q.tail = t
	if t.attr == scsi.AttrOrdered {
		q.orderedLive++
	}
	t.state = stateCollecting
}

// markReady records that t's data is complete and starts what may start;
// the caller holds s.mu.
func (q *scheduler) markReady(t *task) {
	if !t.ready {
		q.started.Add(1)
	}
	t.ready = true
	t.state = stateWaiting
	if q.orderedLive == 0 || t.attr == scsi.AttrHeadOfQueue {
		q.start(t)
		return
	}
	q.startEligible()
}

// startEligible walks the task set and starts waiting tasks the attribute
// rules allow; the caller holds s.mu.
func (q *scheduler) startEligible() {
	older := false // an older task is still in the set
	for t := q.head; t != nil; t = t.next {
		if t.attr == scsi.AttrOrdered {
			if !older && t.state == stateWaiting {
				q.start(t)
			}
			return // nothing newer may pass an ORDERED task
		}
		if t.state == stateWaiting {
			q.start(t)
		}
		older = true
	}
}

// start hands t to a worker, or marks it for the receiver to run (inline)
// when the receiver offered (inlineOK), t is the only task of the set and
// an ordinary read or write; the caller holds s.mu.
func (q *scheduler) start(t *task) {
	if q.stopped {
		// The session is ending: its cleanup retires every task.
		return
	}
	t.state = stateRunning
	if q.inlineOK && q.head == t && t.next == nil && t.cmd.Quick() {
		t.inline = true
		return
	}
	q.dispatch(t)
}

// requeue hands a task the receiver could not finish without waiting to
// a worker, where it may wait.
func (q *scheduler) requeue(t *task) {
	t.noWait = false
	q.s.conn.inl.requeued.Add(1)
	q.s.mu.Lock()
	if !q.stopped {
		q.dispatch(t)
		q.s.mu.Unlock()
		return
	}
	q.s.mu.Unlock()
	// Cannot happen while t runs (the session's cleanup waits for it
	// before it stops the scheduler); answer nothing rather than hang.
	t.abort(abortSilent)
	q.s.finish(t, false)
}

// dispatch sends a running task to the workers; the caller holds s.mu.
// The work channel has room for every task that can be in flight, so this
// never blocks.
func (q *scheduler) dispatch(t *task) {
	q.work <- t
	q.pending++
	// A worker that has taken a task from the channel but not yet
	// counted it is still in both pending and idle, so pending > idle
	// means some task has no worker waiting for it.
	if q.pending > q.idle && q.workers < q.maxWorkers && !q.stopped {
		q.workers++
		go q.worker()
	}
}

// retire removes t from the task set; the caller holds s.mu.
func (q *scheduler) retire(t *task) {
	if t.state == stateDone {
		return
	}
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		q.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		q.tail = t.prev
	}
	t.prev, t.next = nil, nil
	wasOrdered := t.attr == scsi.AttrOrdered
	if wasOrdered {
		q.orderedLive--
	}
	if t.ready {
		q.started.Add(-1)
	}
	t.state = stateDone
	if wasOrdered || q.orderedLive > 0 {
		q.startEligible()
	}
	q.s.cond.Broadcast()
}

// stop makes workers exit once the queue is empty.
func (q *scheduler) stop() {
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	if !q.stopped {
		q.stopped = true
		close(q.work)
	}
}

// execute runs one task on a worker, or (inline) on the receiver. A panic
// inside the device server is already a CHECK CONDITION for that command
// (session.run); one in the task bookkeeping around it leaves the session's
// state in doubt, so it closes the session's connection (the receiver then
// cleans up as for a dropped connection), retires the task without a
// response, and the worker goes on serving.
func (q *scheduler) execute(t *task, inline bool) {
	s := q.s
	defer func() {
		if r := recover(); r != nil {
			s.srv.recovered(s.log.WithFields(logrus.Fields{"itt": t.itt, "cdb": fmt.Sprintf("% x", t.cmd.CDB)}), s.conn, "iscsi: panic in a session worker", r)
			// Retire the task unless it already was, so that the
			// session's teardown does not wait for it forever.
			s.mu.Lock()
			live := s.tasks[t.itt] == t
			s.mu.Unlock()
			if live {
				t.abort(abortSilent)
				func() {
					defer func() {
						if r := recover(); r != nil {
							s.log.WithField("panic", r).Error("iscsi: panic retiring a task after a worker panic")
						}
					}()
					s.finish(t, false)
				}()
			}
		}
	}()
	if h := s.srv.workerHook.Load(); h != nil {
		(*h)(t.cmd.CDB)
	}
	s.execute(t, inline)
}

// worker executes tasks until the session ends or it has been idle for
// workerIdle. A ticker, not a timer reset after every task: re-arming a
// runtime timer per command can wake an idle thread each time. A worker
// exits after one to two workerIdle periods without a task.
func (q *scheduler) worker() {
	s := q.s
	tick := time.NewTicker(workerIdle)
	defer tick.Stop()
	busy := false
	for {
		s.mu.Lock()
		q.idle++
		s.mu.Unlock()
		select {
		case t, ok := <-q.work:
			s.mu.Lock()
			q.idle--
			if ok {
				q.pending--
			}
			if !ok {
				q.workers--
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			q.execute(t, false)
			busy = true
		case <-tick.C:
			s.mu.Lock()
			q.idle--
			if !busy && len(q.work) == 0 {
				q.workers--
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			busy = false
		}
	}
}
