package target_test

import (
	"sync"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// TestTaskReuseAcrossSessions runs several sessions whose commands go to
// workers (SYNCHRONIZE CACHE is not a Quick command) while the others'
// receivers take tasks from the server's shared pool: a receiver must not
// look at a task after it handed it to a worker, since the worker may
// have finished it and another session may already reuse it. The ready
// hook holds the receiver 20 µs after the hand-off, so that a read there
// lands after the reuse and -race reports it (it did in every run when
// the receiver checked the task's inline mark after unlocking, and one run
// hung; without the hook the race showed once in a CI run of the lease
// failover drill and once in four runs of this package's tests).
func TestTaskReuseAcrossSessions(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	target.SetReadyHook(tg.Server, func() { time.Sleep(20 * time.Microsecond) })
	const sessions, rounds = 4, 400
	clients := make([]*targettest.Client, sessions)
	for i := range clients {
		clients[i] = login(t, tg, byte(i+1))
		// A task run by the wrong session can leave a command
		// unanswered (the old code hung here): bound the wait.
		_ = clients[i].Conn.SetDeadline(time.Now().Add(time.Minute))
	}
	var wg sync.WaitGroup
	errs := make(chan string, sessions)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < rounds; n++ {
				cdb := []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0} // SYNCHRONIZE CACHE(10): not Quick
				var readLen uint32
				if n%2 == 1 {
					cdb, readLen = cdbRead10(uint32(i*64+n%64), 1), 512
				}
				r, err := c.Command(cdb, nil, readLen, targettest.CommandOptions{})
				if err != nil {
					errs <- err.Error()
					return
				}
				if r.Status != 0 {
					if k, _, _ := r.SenseKey(); k != 6 { // a first UNIT ATTENTION is fine
						errs <- "status not GOOD"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if st := tg.Server.Stats(); st.Inline.Commands == 0 {
		t.Errorf("no command ran inline (%+v): the test no longer mixes inline and worker execution", st.Inline)
	}
}
