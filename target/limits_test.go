package target_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// refused reports whether the target closed nc without a word.
func refused(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := nc.Read(make([]byte, 1))
	return err == io.EOF
}

func TestConnectionLimits(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.MaxConnections = 4
		c.MaxConnectionsPerSource = 2
	}})
	a1 := dialFrom(t, "127.0.0.1", tg.Addr)
	a2 := dialFrom(t, "127.0.0.1", tg.Addr)
	a3 := dialFrom(t, "127.0.0.1", tg.Addr)
	if refused(a1) || refused(a2) {
		t.Fatal("connections within the per-source limit were closed")
	}
	if !refused(a3) {
		t.Fatal("a third connection from one address was kept (limit 2)")
	}
	b1 := dialFrom(t, "127.0.0.2", tg.Addr)
	b2 := dialFrom(t, "127.0.0.2", tg.Addr)
	if refused(b1) || refused(b2) {
		t.Fatal("another address was limited by the first one's connections")
	}
	c1 := dialFrom(t, "127.0.0.3", tg.Addr)
	if !refused(c1) {
		t.Fatal("a fifth connection was kept (limit 4)")
	}
	st := tg.Server.LimitStats()
	if st.ConnectionsRefusedPerSource != 1 || st.ConnectionsRefusedTotal != 1 {
		t.Fatalf("refusals counted %+v, want one of each", st)
	}
	// A slot freed is a slot usable: a full login works afterwards.
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := targettest.Dial(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(targettest.LoginOptions{Target: tg.IQN})
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("login after a connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDataBufferBudget(t *testing.T) {
	const budget = 64 << 10
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.DataBufferBudget = budget
	}})
	a := login(t, tg, 1)
	b := login(t, tg, 2)
	tur(t, a)
	tur(t, b)

	// A's write holds the whole budget while its data is solicited.
	itt, _, r2t := startWrite(t, a, cdbWrite10(0, 128), budget)
	// A's next write cannot wait without stalling the Data-Out the
	// connection still has to receive: TASK SET FULL.
	r, err := a.Command(cdbWrite10(200, 8), bytes.Repeat([]byte{1}, 4096), 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 0x28 {
		t.Fatalf("second write while the budget is lent: status %#x, want TASK SET FULL", r.Status)
	}
	// B's read waits for buffer memory instead of allocating it.
	done := make(chan *targettest.Result, 1)
	go func() {
		r, err := b.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	select {
	case <-done:
		t.Fatal("a read was served while the data budget was fully lent")
	case <-time.After(300 * time.Millisecond):
	}
	// A sends its data; the write completes and B's read goes through.
	payload := bytes.Repeat([]byte{0xab}, budget)
	for off := r2t.BufferOffset; off < budget; {
		n := min(uint32(a.TargetMaxRecv), budget-off, r2t.BufferOffset+r2t.DesiredDataTransferLength-off)
		d := pdu.DataOut{Final: off+n == r2t.BufferOffset+r2t.DesiredDataTransferLength, InitiatorTaskTag: itt,
			TargetTransferTag: r2t.TargetTransferTag, BufferOffset: off, DataSN: (off - r2t.BufferOffset) / uint32(a.TargetMaxRecv)}
		var h pdu.BHS
		d.Marshal(&h)
		if err := a.WritePDU(&h, nil, payload[off:off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
		if d.Final && off < budget {
			rh, _, err := a.Expect(pdu.OpR2T)
			if err != nil {
				t.Fatal(err)
			}
			_ = r2t.Unmarshal(&rh.BHS)
		}
	}
	rh, _, err := a.Expect(pdu.OpSCSIResponse)
	if err != nil || rh.BHS[3] != 0 {
		t.Fatalf("the budget-holding write: %v status %#x", err, rh.BHS[3])
	}
	select {
	case r := <-done:
		if r == nil || r.Status != 0 || !bytes.Equal(r.Data, payload[:4096]) {
			t.Fatalf("B's read after the budget came back: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("B's read never got buffer memory")
	}
	st := tg.Server.LimitStats()
	if st.DataBufferWaits == 0 || st.DataBufferRefusals != 1 {
		t.Fatalf("limit stats %+v: want a wait and one refusal", st)
	}
	waitBuffersBack(t, tg)
	if st := tg.Server.LimitStats(); st.DataBufferBytes != 0 {
		t.Fatalf("%d budget bytes still lent", st.DataBufferBytes)
	}
}

func TestMaxSessionsPerTarget(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.Nodes[0].MaxSessions = 2
	}})
	a := login(t, tg, 1)
	login(t, tg, 2)
	c := dial(t, tg)
	c.ISID[5] = 3
	err := c.Login(targettest.LoginOptions{Target: tg.IQN})
	var lf *targettest.ErrLoginFailed
	if !errors.As(err, &lf) || lf.Status != pdu.LoginOutOfResources {
		t.Fatalf("third session: %v, want Login Response 0x0302", err)
	}
	// Reinstating an existing session is not a new one.
	again := dial(t, tg)
	again.ISID[5] = 1
	if err := again.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		t.Fatalf("reinstatement at the limit: %v", err)
	}
	_ = a
	// Discovery sessions do not count.
	d := dial(t, tg)
	d.ISID[5] = 4
	if err := d.Login(targettest.LoginOptions{}); err != nil {
		t.Fatalf("discovery at the limit: %v", err)
	}
	if st := tg.Server.LimitStats(); st.SessionsRefused != 1 {
		t.Fatalf("SessionsRefused = %d, want 1", st.SessionsRefused)
	}
}
