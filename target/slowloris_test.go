package target_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// Slow peers: a connection that stalls anywhere — before its first byte, in
// the middle of a login PDU, between login steps, in the middle of a PDU in
// full feature phase — is closed within the login timeout or the liveness
// budget, while everyone else is served.
func TestSlowPeersAreClosed(t *testing.T) {
	const loginTimeout = 400 * time.Millisecond
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.LoginTimeout = loginTimeout
		c.NOPInterval = 200 * time.Millisecond
		c.NOPTimeout = 400 * time.Millisecond
	}})
	healthy := login(t, tg, 1)
	tur(t, healthy)
	// The healthy session keeps reading (and so answers pings) all along.
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				if n == 0 {
					served <- errors.New("no read completed")
					return
				}
				served <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
			r, err := healthy.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{})
			if err == nil && r.Status != 0 {
				err = fmt.Errorf("status %#x", r.Status)
			}
			if err != nil {
				served <- err
				return
			}
			n++
		}
	}()

	closedWithin := func(name string, nc net.Conn, limit time.Duration) {
		t.Helper()
		start := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(limit + 10*time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := nc.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%s: connection still open after %v", name, time.Since(start))
				}
				return
			}
		}
	}
	raw := func() net.Conn {
		nc, err := net.Dial("tcp", tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}

	// Nothing at all.
	silent := raw()
	// Half a header.
	half := raw()
	var h pdu.BHS
	lr := pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1, InitiatorTaskTag: 1}
	lr.Marshal(&h)
	h.SetLengths(0, 64)
	if _, err := half.Write(h[:20]); err != nil {
		t.Fatal(err)
	}
	// A header promising data that never comes.
	body := raw()
	if _, err := body.Write(h[:]); err != nil {
		t.Fatal(err)
	}
	// A login that stops after the security stage.
	stalled := dial(t, tg)
	if _, _, err := stalled.LoginPDU(pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1, ISID: stalled.ISID, InitiatorTaskTag: 1},
		pdu.Keys{{Key: "InitiatorName", Value: stalled.InitiatorName}, {Key: "TargetName", Value: tg.IQN},
			{Key: "AuthMethod", Value: "None"}}); err != nil {
		t.Fatal(err)
	}
	// Full feature phase, then half a PDU: the receiver can never parse the
	// answer to its ping, so the liveness check ends it.
	ffp := login(t, tg, 2)
	tur(t, ffp)
	var nh pdu.BHS
	nop := pdu.NOPOut{Immediate: true, InitiatorTaskTag: 9, TargetTransferTag: pdu.ReservedTag, CmdSN: ffp.CmdSN}
	nop.Marshal(&nh)
	if err := ffp.WriteRaw(nh[:30]); err != nil {
		t.Fatal(err)
	}

	closedWithin("silent", silent, loginTimeout)
	closedWithin("half a header", half, loginTimeout)
	closedWithin("missing data segment", body, loginTimeout)
	closedWithin("stalled login", stalled.Conn, loginTimeout)
	closedWithin("half a PDU in full feature phase", ffp.Conn, 600*time.Millisecond)

	// The healthy session was served throughout.
	close(stop)
	if err := <-served; err != nil {
		t.Fatalf("healthy session: %v", err)
	}
}
