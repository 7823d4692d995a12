package target_test

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/backstore/faulty"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// At queue depth 1 the receiver runs ordinary reads and writes itself
// (target/inline.go); these tests check that it does, that data the page
// cache does not hold goes to a worker, and that a command that blocks
// does not hold up the connection.

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// writeReadBack writes 4 KiB of pattern i at block i*8 with o and reads
// it back, one command at a time.
func writeReadBack(t *testing.T, c *targettest.Client, i int, o targettest.CommandOptions) {
	t.Helper()
	data := pattern(4096, byte(i))
	r, err := c.Command(cdbWrite10(uint32(i*8), 8), data, 0, o)
	if err != nil || r.Status != 0 {
		t.Fatalf("WRITE(10) %d: %v status %#x", i, err, statusOf(r))
	}
	r, err = c.Command(cdbRead10(uint32(i*8), 8), nil, 4096, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("READ(10) %d: %v status %#x", i, err, statusOf(r))
	}
	if !bytes.Equal(r.Data, data) {
		t.Fatalf("READ(10) %d returned other data than written", i)
	}
}

func TestInlineReadWriteAtQD1(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	before := tg.Server.Stats().Inline
	const rounds = 50
	for i := 0; i < rounds; i++ {
		writeReadBack(t, c, i, targettest.CommandOptions{})
	}
	st := tg.Server.Stats().Inline
	if got := st.Commands - before.Commands; got < 2*rounds {
		t.Errorf("%d commands ran inline, want at least the %d reads and writes", got, 2*rounds)
	}
	if st.Handovers != 0 {
		t.Errorf("%d handovers on a memory LUN, want 0", st.Handovers)
	}
	// With no more inline commands the watchdog goroutine goes away
	// while the server keeps serving.
	deadline := time.Now().Add(10 * time.Second)
	for watchdogRunning() {
		if time.Now().After(deadline) {
			t.Fatal("the inline watchdog goroutine still runs 10 s after the last inline command")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tur(t, c)
}

func watchdogRunning() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*inlineWatch).run")
}

// fileLUN serves LUN 0 from a real file, so reads meet the page cache.
func fileLUN(t *testing.T) (*targettest.Target, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lun.img")
	f, err := backstore.OpenFile(path, backstore.FileOptions{CreateSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	tg := targettest.Start(t, targettest.Options{Wrap: func(int, backstore.Device) backstore.Device { return f }})
	return tg, path
}

// dropCache writes the file's dirty pages back and drops its pages from
// the page cache.
func dropCache(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func TestInlineUncachedReadGoesToWorker(t *testing.T) {
	tg, path := fileLUN(t)
	c := login(t, tg, 1)
	tur(t, c)
	data := pattern(64<<10, 3)
	r, err := c.Command(cdbWrite10(0, 128), data, 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("WRITE(10): %v status %#x", err, statusOf(r))
	}
	dropCache(t, path)
	before := tg.Server.Stats().Inline
	r, err = c.Command(cdbRead10(0, 128), nil, 64<<10, targettest.CommandOptions{})
	if err != nil || r.Status != 0 || !bytes.Equal(r.Data, data) {
		t.Fatalf("READ(10) of uncached data: %v status %#x, same data %v", err, statusOf(r), r != nil && bytes.Equal(r.Data, data))
	}
	mid := tg.Server.Stats().Inline
	if mid.Requeued-before.Requeued != 1 {
		t.Errorf("uncached read: %d requeued to a worker, want 1", mid.Requeued-before.Requeued)
	}
	// The worker's read brought the data into the page cache: the same
	// read now completes on the receiver.
	r, err = c.Command(cdbRead10(0, 128), nil, 64<<10, targettest.CommandOptions{})
	if err != nil || r.Status != 0 || !bytes.Equal(r.Data, data) {
		t.Fatalf("READ(10) of cached data: %v status %#x", err, statusOf(r))
	}
	after := tg.Server.Stats().Inline
	if after.Requeued != mid.Requeued || after.Commands != mid.Commands+1 {
		t.Errorf("cached read: inline commands +%d, requeued +%d; want +1, +0",
			after.Commands-mid.Commands, after.Requeued-mid.Requeued)
	}
}

// A write that blocks in the backing store hands the receiver to a new
// goroutine: a TEST UNIT READY sent after it is answered first, and the
// write still completes with GOOD.
func TestInlineBlockedWriteHandsOverReceiver(t *testing.T) {
	tg, fd := startFaulty(t)
	c := login(t, tg, 1)
	tur(t, c)
	fd.Inject(faulty.Rule{Ops: faulty.Write, Kind: faulty.Delay, Delay: 3 * time.Second, Times: 1})
	itt, err := c.Send(cdbWrite10(16, 1), pattern(512, 9), 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, fd, 1)
	// The receiver is inside the write; this command can only be read
	// once the watchdog has handed the connection to a new receiver.
	r, err := c.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("TEST UNIT READY behind a blocked write: %v status %#x", err, statusOf(r))
	}
	if n := fd.InFlight(); n != 1 {
		t.Fatalf("the write left the device (%d in flight) before TEST UNIT READY was answered: the receiver was not handed over", n)
	}
	rh, _, err := c.Expect(pdu.OpSCSIResponse)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(rh.BHS[16:20]); got != itt || rh.BHS[3] != 0 {
		t.Fatalf("write response: ITT %#x status %#x, want ITT %#x GOOD", got, rh.BHS[3], itt)
	}
	if h := tg.Server.Stats().Inline.Handovers; h != 1 {
		t.Errorf("%d handovers, want 1", h)
	}
	// The connection goes on with its new receiver.
	r, err = c.Command(cdbRead10(16, 1), nil, 512, targettest.CommandOptions{})
	if err != nil || r.Status != 0 || !bytes.Equal(r.Data, pattern(512, 9)) {
		t.Fatalf("READ(10) after the handover: %v status %#x", err, statusOf(r))
	}
}

// A command answered on the receiver without executing (Plan completed it:
// here an unknown opcode) is the answering goroutine's until it is
// answered. If the watchdog hands the receiver role away meanwhile and the
// initiator then drops the connection, the new receiver's cleanup must
// wait for that command, not free it under the goroutine still answering
// it (a task freed twice is handed to two commands later; FuzzSession
// found this under load).
func TestInlineAnswerOutlivesHandover(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	entered, release := make(chan struct{}), make(chan struct{})
	target.SetWorkerHook(tg.Server, func(cdb []byte) {
		if cdb[0] == 0xff {
			close(entered)
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
	})
	c := login(t, tg, 1)
	tur(t, c)
	if _, err := c.Send([]byte{0xff, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}); err != nil {
		t.Fatal(err)
	}
	<-entered
	waitStats(t, tg.Server, "the receiver handed over", func(s target.Stats) bool { return s.Inline.Handovers == 1 })
	c.Close()
	// The new receiver sees the connection end and cleans the session
	// up; the cleanup has to wait for the command being answered.
	time.Sleep(200 * time.Millisecond)
	if n := len(tg.Server.Sessions()); n != 1 {
		t.Errorf("%d sessions while a command of the dropped one was still being answered, want 1 (its cleanup did not wait)", n)
	}
	close(release)
	st := waitStats(t, tg.Server, "the session ended", func(s target.Stats) bool { return s.Nodes[0].Sessions == 0 })
	if p := st.Panics; p != 0 {
		t.Errorf("%d panics (a task freed twice?)", p)
	}
	// The server goes on.
	tur(t, login(t, tg, 2))
}
