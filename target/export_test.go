package target

// SetWorkerHook installs f to run on the worker of every command before it
// executes (see Server.workerHook); call it before the server serves.
func SetWorkerHook(s *Server, f func(cdb []byte)) { s.workerHook = f }

// SetTMFHook installs f to run in the goroutine that sends a delayed task
// management response (see Server.tmfHook); call it before the server
// serves.
func SetTMFHook(s *Server, f func()) { s.tmfHook = f }
