package target

// SetWorkerHook installs f to run on the worker of every command before it
// executes (see Server.workerHook); call it before the server serves.
func SetWorkerHook(s *Server, f func(cdb []byte)) { s.workerHook = f }
