package target

// SetWorkerHook installs f to run where every command executes, before it
// executes (see Server.workerHook).
func SetWorkerHook(s *Server, f func(cdb []byte)) { s.workerHook.Store(&f) }

// SetTMFHook installs f to run in the goroutine that sends a delayed task
// management response (see Server.tmfHook).
func SetTMFHook(s *Server, f func()) { s.tmfHook.Store(&f) }

// SetReadyHook installs f to run in the receiver after it made a task
// ready (see Server.readyHook).
func SetReadyHook(s *Server, f func()) { s.readyHook.Store(&f) }
