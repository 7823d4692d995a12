package target

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Task management (RFC 7143 §11.5, §11.6; SAM-5 §7). The device server keeps
// TST=001 (one task set per I_T nexus) and TAS=1: tasks of other I_T nexuses
// aborted by a reset end with TASK ABORTED status, tasks of the requesting
// nexus end silently. A TMF response is sent only after every affected task
// that was executing has finished, so no aborted write can reach the medium
// after the initiator was told it is gone.

// tmfWait bounds how long a TMF waits for executing tasks.
const tmfWait = 60 * time.Second

// abortWait is a set of tasks a TMF waits for: those in session s, aborted,
// executing, delivered no later than seq.
type abortWait struct {
	s   *session
	seq uint64
}

func (c *conn) handleTaskMgmt() error {
	s := c.sess
	var r pdu.TaskMgmtRequest
	if err := r.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	if err := c.discardData(); err != nil {
		return err
	}
	if s.discovery {
		c.sendReject(pdu.RejectProtocolError)
		return nil
	}
	if ok, err := c.acceptCmdSN(r.Immediate, r.CmdSN, "TMF"); !ok {
		return err
	}
	log := c.log.WithFields(logrus.Fields{"tmf": r.Function.String(), "lun": r.LUN, "itt": r.InitiatorTaskTag})
	var waits []abortWait
	response := uint8(pdu.TMFRespComplete)
	coldReset := false
	router := s.node.Router
	switch r.Function {
	case pdu.TMFAbortTask:
		response, waits = s.abortTask(&r)
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet:
		if !router.LUNExists(r.LUN) {
			response = pdu.TMFRespNoLUN
			break
		}
		// TST=001: the task set is this nexus's; both functions abort
		// this session's tasks on the LU.
		waits = append(waits, s.abortMatching(func(t *task) bool { return t.lun == r.LUN }, abortSilent))
	case pdu.TMFLogicalUnitReset:
		if !router.LUNExists(r.LUN) {
			response = pdu.TMFRespNoLUN
			break
		}
		waits = c.srv.abortNode(s, func(t *task) bool { return t.lun == r.LUN })
		if err := router.LogicalUnitReset(r.LUN); err != nil {
			log.WithError(err).Warn("iscsi: logical unit reset")
		}
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		waits = c.srv.abortNode(s, func(*task) bool { return true })
		coldReset = r.Function == pdu.TMFTargetColdReset
		router.TargetReset(coldReset)
	case pdu.TMFClearACA:
		// NACA is 0 in INQUIRY: ACA is never established.
		response = pdu.TMFRespNotSupported
	case pdu.TMFTaskReassign:
		response = pdu.TMFRespReassignNotSupp
	default:
		response = pdu.TMFRespNotSupported
	}
	log.WithField("response", response).Info("iscsi: task management")
	finish := func() {
		for _, w := range waits {
			w.s.waitAborted(w.seq, tmfWait)
		}
		resp := pdu.TaskMgmtResponse{Response: response, InitiatorTaskTag: r.InitiatorTaskTag}
		var it txItem
		it.kind = txPDU
		it.advance = true
		if coldReset {
			it.closeErr = errShutdown
		}
		resp.Marshal(&it.hdr)
		c.tx.send(it)
		if coldReset {
			// TARGET COLD RESET ends every session of the node (RFC 7143
			// §11.5.1) once the response is on its way.
			c.srv.sessions.forNode(s.node, func(o *session) {
				if o != s {
					o.terminate(errShutdown)
				}
			})
		}
	}
	if len(waits) == 0 {
		finish()
	} else {
		// The receiver goes on while the aborted tasks drain; a panic
		// in this goroutine costs the connection, as in the receiver.
		go func() {
			defer func() {
				if p := recover(); p != nil {
					c.srv.recovered(log, c, "iscsi: panic sending a task management response", p)
				}
			}()
			if h := c.srv.tmfHook.Load(); h != nil {
				(*h)()
			}
			finish()
		}()
	}
	return nil
}

// abortTask implements ABORT TASK with the RefCmdSN rules of RFC 7143
// §11.5.1.
func (s *session) abortTask(r *pdu.TaskMgmtRequest) (uint8, []abortWait) {
	s.mu.Lock()
	t := s.tasks[r.ReferencedTaskTag]
	s.mu.Unlock()
	if t == nil {
		// Not found: if RefCmdSN is in the window and older than this
		// request, the command is considered received and aborted.
		if !r.Immediate || r.RefCmdSN != r.CmdSN {
			exp := s.expCmdSN.Load()
			if serialLess(r.RefCmdSN, r.CmdSN) && !serialLess(r.RefCmdSN, exp) {
				return pdu.TMFRespComplete, nil
			}
		}
		return pdu.TMFRespNoTask, nil
	}
	w := s.abortMatching(func(x *task) bool { return x == t }, abortSilent)
	return pdu.TMFRespComplete, []abortWait{w}
}

// abortMatching aborts the session's tasks accepted by match. Tasks not yet
// executing are retired at once (the caller is this session's receiver,
// which owns them); executing ones are marked and waited for.
func (s *session) abortMatching(match func(*task) bool, how uint32) abortWait {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := abortWait{s: s, seq: s.sched.seq}
	for t := s.sched.head; t != nil; {
		next := t.next
		if match(t) {
			t.abort(how)
			if t.state == stateCollecting || t.state == stateWaiting {
				delete(s.tasks, t.itt)
				s.sched.retire(t)
				if t.immediate {
					s.immCount--
				} else {
					s.releaseCmdSN()
				}
				s.srv.putTask(t)
			}
		}
		t = next
	}
	return w
}

// markMatching marks another session's tasks aborted (TASK ABORTED status
// when they end). Only atomic state is touched: that session's receiver
// and workers retire them.
func (s *session) markMatching(match func(*task) bool, how uint32) abortWait {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := s.sched.head; t != nil; t = t.next {
		if match(t) {
			t.abort(how)
		}
	}
	return abortWait{s: s, seq: s.sched.seq}
}

// abortNode aborts matching tasks in every session of the requester's node:
// silently for the requester, with TASK ABORTED for the others.
func (srv *Server) abortNode(req *session, match func(*task) bool) []abortWait {
	var waits []abortWait
	waits = append(waits, req.abortMatching(match, abortSilent))
	srv.sessions.forNode(req.node, func(o *session) {
		if o != req {
			waits = append(waits, o.markMatching(match, abortReported))
		}
	})
	return waits
}

// waitAborted waits until no aborted task delivered up to seq is still
// executing in s.
func (s *session) waitAborted(seq uint64, timeout time.Duration) {
	executing := func() bool {
		for t := s.sched.head; t != nil && t.seq <= seq; t = t.next {
			if t.aborted.Load() != notAborted && t.state == stateRunning {
				return true
			}
		}
		return false
	}
	if !s.waitWhile(executing, timeout) {
		s.log.Warn("iscsi: aborted tasks still executing after the TMF wait")
	}
}
