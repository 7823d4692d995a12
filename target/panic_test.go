package target_test

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore/faulty"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// A panic in a goroutine that handles one peer's input costs that
// connection only: the panic is logged with the PDU header and the other
// sessions keep working. The panics are injected below the target, in the
// socket, so no test hook is needed in the daemon.

const (
	panicNone int32 = iota
	panicOnRead
	panicOnWrite
)

type panicListener struct {
	net.Listener
	mode *atomic.Int32
}

func (l panicListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return panicConn{Conn: c, mode: l.mode}, nil
}

type panicConn struct {
	net.Conn
	mode *atomic.Int32
}

func (c panicConn) Read(p []byte) (int, error) {
	// Checked after the read: the receiver is usually already blocked in
	// Read when the test switches the mode.
	n, err := c.Conn.Read(p)
	if c.mode.Load() == panicOnRead {
		panic("injected panic in Read")
	}
	return n, err
}

func (c panicConn) Write(p []byte) (int, error) {
	if c.mode.Load() == panicOnWrite {
		panic("injected panic in Write")
	}
	return c.Conn.Write(p)
}

func TestPanicCostsOneConnection(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mode atomic.Int32
	go func() { _ = tg.Server.Serve(panicListener{Listener: ln, mode: &mode}) }()
	t.Cleanup(func() { ln.Close() })

	healthy := login(t, tg, 1)
	tur(t, healthy)
	// A TEST UNIT READY's status is written by the goroutine that
	// finished it (a direct write); the R2T of a write larger than
	// FirstBurstLength goes through the transmitter's loop.
	loopWrite := cdbWrite10(0, 256) // 128 KiB
	for i, m := range []int32{panicOnRead, panicOnWrite, panicOnWrite} {
		victim, err := targettest.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		victim.ISID[5] = byte(10 + i)
		if err := victim.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			t.Fatal(err)
		}
		tur(t, victim)
		mode.Store(m)
		// The victim's next command makes its connection panic; the
		// victim sees the connection end, not an answer.
		_ = victim.Conn.SetDeadline(time.Now().Add(10 * time.Second))
		if i < 2 {
			_, err = victim.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
		} else {
			_, err = victim.Command(loopWrite, make([]byte, 128<<10), 0, targettest.CommandOptions{})
		}
		if err == nil {
			t.Errorf("round %d: the panicking connection answered", i)
		}
		victim.Close()
		mode.Store(panicNone)
		// Everyone else carries on, and new logins work.
		r, err := healthy.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{})
		if err != nil || r.Status != 0 {
			t.Fatalf("healthy session after a panic: %v %+v", err, r)
		}
		fresh := login(t, tg, byte(20+i))
		tur(t, fresh)
	}
	for _, want := range []string{"panic in connection receiver", "panic in connection transmitter", "injected panic in Read", "injected panic in Write",
		"(*transmitter).writeDirect", "(*transmitter).loop"} {
		if !waitLog(tg, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if p := tg.Server.Stats().Panics; p != 3 {
		t.Errorf("Stats().Panics = %d, want 3 (one receiver, two transmitter: direct and loop)", p)
	}
	if !strings.Contains(tg.Log.String(), "pdu=") {
		t.Error("the receiver's panic log does not carry the PDU header")
	}
	// The victims' sessions end as their connections are torn down.
	deadline := time.Now().Add(5 * time.Second)
	for len(tg.Server.Sessions()) != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tg.Server.Sessions()); n != 4 {
		t.Errorf("%d sessions left, want 4 (the healthy one and three fresh ones)", n)
	}
}

func waitLog(tg *targettest.Target, s string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !tg.Log.Contains(s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// A panic on a command's worker outside the device server (which turns its
// own panics into CHECK CONDITION) closes that session's connection only;
// the worker goes on and every other session keeps working.
func TestWorkerPanicCostsOneConnection(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	// READ(10) of LBA 77 panics.
	target.SetWorkerHook(tg.Server, func(cdb []byte) {
		if len(cdb) >= 10 && cdb[0] == 0x28 && cdb[5] == 77 {
			panic("injected panic on a worker")
		}
	})
	healthy := login(t, tg, 1)
	tur(t, healthy)
	victim := login(t, tg, 2)
	tur(t, victim)
	_ = victim.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	if r, err := victim.Command(cdbRead10(77, 8), nil, 4096, targettest.CommandOptions{}); err == nil {
		t.Errorf("the panicking command was answered: %+v", r)
	}
	victim.Close()
	for i := range 3 {
		r, err := healthy.Command(cdbRead10(uint32(i), 8), nil, 4096, targettest.CommandOptions{})
		if err != nil || r.Status != 0 {
			t.Fatalf("healthy session after a worker panic: %v %+v", err, r)
		}
	}
	tur(t, login(t, tg, 3))
	if !waitLog(tg, "panic in a session worker") || !tg.Log.Contains("injected panic on a worker") {
		t.Errorf("log lacks the worker panic:\n%s", tg.Log.String())
	}
	if p := tg.Server.Stats().Panics; p != 1 {
		t.Errorf("Stats().Panics = %d, want 1", p)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(tg.Server.Sessions()) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tg.Server.Sessions()); n != 2 {
		t.Errorf("%d sessions left, want 2 (the healthy one and the fresh one)", n)
	}
}

// A panic in the goroutine that answers ABORT TASK once the aborted read
// has drained costs that connection only.
func TestTMFPanicCostsOneConnection(t *testing.T) {
	tg, fd := startFaulty(t)
	target.SetTMFHook(tg.Server, func() { panic("injected panic in a TMF response") })
	c := login(t, tg, 1)
	other := login(t, tg, 2)
	tur(t, c)
	tur(t, other)
	fd.Inject(faulty.Rule{Ops: faulty.Read, Kind: faulty.Delay, Delay: time.Minute, Off: 1 << 20, Len: 1 << 20})
	itt, sn := c.NextITT(), c.CmdSN
	cmd := pdu.SCSICommand{Final: true, Read: true, Attr: pdu.AttrSimple, InitiatorTaskTag: itt,
		ExpectedDataTransferLn: 4096, CmdSN: sn, ExpStatSN: c.ExpStatSN}
	copy(cmd.CDB[:], cdbRead10(2048, 8))
	c.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, fd, 1)
	req := pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTask, InitiatorTaskTag: c.NextITT(),
		ReferencedTaskTag: itt, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: sn}
	req.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	_ = c.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.Expect(pdu.OpTaskMgmtResponse); err == nil {
		t.Error("the TMF response was sent despite the panic")
	}
	r, err := other.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("other session after a TMF panic: %v %+v", err, r)
	}
	if !waitLog(tg, "panic sending a task management response") {
		t.Errorf("log lacks the TMF panic:\n%s", tg.Log.String())
	}
	if p := tg.Server.Stats().Panics; p != 1 {
		t.Errorf("Stats().Panics = %d, want 1", p)
	}
	waitInFlight(t, fd, 0)
}
