package target

import (
	"sync"
	"testing"
	"time"
)

func TestBudgetBoundsAndOrder(t *testing.T) {
	b := newBudget(100)
	if !b.try(60) || b.try(60) {
		t.Fatal("try: 60 then 60 of 100 should give yes, no")
	}
	// A waiter is admitted, in order, once enough comes back.
	got := make(chan int, 3)
	var wg sync.WaitGroup
	for i, n := range []int64{50, 30, 10} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.acquire(n, nil) {
				got <- i
			}
		}()
		for b.nwaiters.Load() != int32(i+1) {
			time.Sleep(time.Millisecond)
		}
	}
	// Newcomers do not overtake the queue even when they would fit.
	if b.try(10) {
		t.Fatal("try overtook waiting requests")
	}
	b.release(60)
	wg.Wait()
	close(got)
	var order []int
	for i := range got {
		order = append(order, i)
	}
	if len(order) != 3 || b.used.Load() != 90 {
		t.Fatalf("admitted %v, used %d; want all three, 90", order, b.used.Load())
	}
	if b.peak.Load() > 100 {
		t.Fatalf("peak %d over the limit", b.peak.Load())
	}
	// A cancelled waiter gives up and leaves no trace.
	done := make(chan struct{})
	res := make(chan bool)
	go func() { res <- b.acquire(50, done) }()
	for b.nwaiters.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	close(done)
	if <-res {
		t.Fatal("a cancelled acquire reported success")
	}
	if b.nwaiters.Load() != 0 || b.used.Load() != 90 {
		t.Fatalf("after cancel: %d waiters, %d used", b.nwaiters.Load(), b.used.Load())
	}
	b.release(90)
	// A request larger than the whole budget gets in when nothing is lent.
	if !b.try(500) {
		t.Fatal("an oversize request was refused on an idle budget")
	}
	if b.try(1) {
		t.Fatal("admitted more while an oversize request holds the budget")
	}
	b.release(500)
	if b.waits.Load() != 4 {
		t.Errorf("waits = %d, want 4", b.waits.Load())
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := newBudget(1 << 20)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				n := int64(4096 << ((g + i) % 8))
				if b.acquire(n, nil) {
					b.release(n)
				}
			}
		}()
	}
	wg.Wait()
	if b.used.Load() != 0 || b.nwaiters.Load() != 0 {
		t.Fatalf("used %d, waiters %d after all released", b.used.Load(), b.nwaiters.Load())
	}
	if b.peak.Load() > 1<<20 {
		t.Fatalf("peak %d over the limit", b.peak.Load())
	}
}

// Done and abort race: Done may make the channel after abort's CAS and
// before abort closes it; the channel must be closed exactly once.
func TestTaskDoneAbortRace(t *testing.T) {
	for range 2000 {
		tk := &task{}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); tk.abort(abortReported) }()
		go func() { defer wg.Done(); <-tk.Done() }()
		wg.Wait()
		if tk.Err() == nil {
			t.Fatal("aborted task reports no error")
		}
	}
}
