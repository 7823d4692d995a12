package target

import "time"

// SetWorkerHook installs f to run where every command executes, before it
// executes (see Server.workerHook).
func SetWorkerHook(s *Server, f func(cdb []byte)) { s.workerHook.Store(&f) }

// SetTMFHook installs f to run in the goroutine that sends a delayed task
// management response (see Server.tmfHook).
func SetTMFHook(s *Server, f func()) { s.tmfHook.Store(&f) }

// SetReadyHook installs f to run in the receiver after it made a task
// ready (see Server.readyHook).
func SetReadyHook(s *Server, f func()) { s.readyHook.Store(&f) }

// StartedTasks returns, per session, the count of tasks whose data is
// complete and that have not retired (scheduler.started).
func StartedTasks(s *Server) []int32 {
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	var out []int32
	for _, sess := range s.sessions.byT {
		out = append(out, sess.sched.started.Load())
	}
	return out
}

// SetBusyPollWindow sets the busy-poll window of s beyond Config's bound.
// Call it before the connections it should apply to are accepted: s.mu
// orders it before their receivers (newConn takes s.mu).
func SetBusyPollWindow(s *Server, d time.Duration) {
	s.mu.Lock()
	s.poll.window = d
	s.mu.Unlock()
}
