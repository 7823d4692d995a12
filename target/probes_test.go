package target_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// The robustness probes of the gotgt assessment (each crashed, hung or
// misbehaved in gotgt), re-created as raw-PDU tests: the target must answer
// per RFC 7143 and keep serving every other session.

func dial(t *testing.T, tg *targettest.Target) *targettest.Client {
	t.Helper()
	c, err := targettest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func login(t *testing.T, tg *targettest.Target, isid byte) *targettest.Client {
	t.Helper()
	c := dial(t, tg)
	c.ISID[5] = isid
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

var (
	cdbTUR     = []byte{0x00, 0, 0, 0, 0, 0}
	cdbRead10  = func(lba uint32, n uint16) []byte { return rw10(0x28, lba, n) }
	cdbWrite10 = func(lba uint32, n uint16) []byte { return rw10(0x2a, lba, n) }
)

func rw10(op byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

// tur sends TEST UNIT READY until it returns GOOD (the first command of a
// new I_T nexus reports the power-on unit attention).
func tur(t *testing.T, c *targettest.Client) {
	t.Helper()
	for i := 0; i < 3; i++ {
		r, err := c.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
		if err != nil {
			t.Fatalf("TEST UNIT READY: %v", err)
		}
		if r.Status == 0 {
			return
		}
		if k, asc, _ := r.SenseKey(); k != 6 {
			t.Fatalf("TEST UNIT READY: status %#x sense %x/%x", r.Status, k, asc)
		}
	}
	t.Fatal("TEST UNIT READY never returned GOOD")
}

func TestProbeTSIHAndISIDEchoed(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	resp, _, err := c.LoginPDU(pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID,
		InitiatorTaskTag: 0x1000, CmdSN: 1}, pdu.Keys{
		{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"},
		{Key: "TargetName", Value: tg.IQN},
		{Key: "SessionType", Value: "Normal"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ISID != c.ISID || resp.TSIH == 0 || !resp.Transit || resp.NSG != 3 || resp.InitiatorTaskTag != 0x1000 {
		t.Fatalf("login response %+v", resp)
	}
	if resp.SN.ExpCmdSN != 1 || resp.SN.MaxCmdSN-resp.SN.ExpCmdSN+1 != 128 {
		t.Fatalf("window %d..%d, want 1..128", resp.SN.ExpCmdSN, resp.SN.MaxCmdSN)
	}
}

func TestProbeLoginRejects(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	cases := []struct {
		name   string
		req    pdu.LoginRequest
		keys   pdu.Keys
		status uint16
	}{
		{"unknown target", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: "iqn.2026-11.test:does-not-exist"}},
			pdu.LoginNotFound},
		{"no such session (TSIH 0x4242)", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, TSIH: 0x4242},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: tg.IQN}},
			pdu.LoginSessionNotExist},
		{"CHAP only, CHAP not configured", pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: tg.IQN}, {Key: "AuthMethod", Value: "CHAP"}},
			pdu.LoginAuthFailure},
		{"missing InitiatorName", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3},
			pdu.Keys{{Key: "TargetName", Value: tg.IQN}}, pdu.LoginMissingParameter},
		{"missing TargetName", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}}, pdu.LoginMissingParameter},
		{"unsupported version", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, VersionMin: 2, VersionMax: 2},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: tg.IQN}},
			pdu.LoginUnsupportedVersion},
		{"unknown session type", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "SessionType", Value: "Bogus"}},
			pdu.LoginSessionTypeNotSupp},
		{"invalid next stage", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 0},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: tg.IQN}},
			pdu.LoginInitiatorError},
		{"key negotiated twice", pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3},
			pdu.Keys{{Key: "InitiatorName", Value: "iqn.2026-11.test:probe"}, {Key: "TargetName", Value: tg.IQN},
				{Key: "MaxBurstLength", Value: "1024"}, {Key: "MaxBurstLength", Value: "2048"}},
			pdu.LoginInitiatorError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, tg)
			tc.req.ISID = c.ISID
			tc.req.InitiatorTaskTag = 7
			resp, _, err := c.LoginPDU(tc.req, tc.keys)
			var lf *targettest.ErrLoginFailed
			if !errors.As(err, &lf) {
				t.Fatalf("got %v, want a login failure 0x%04x", err, tc.status)
			}
			if resp.Status != tc.status {
				t.Fatalf("status 0x%04x, want 0x%04x", resp.Status, tc.status)
			}
			if resp.ISID != c.ISID || resp.InitiatorTaskTag != 7 {
				t.Fatalf("reject does not echo ISID/ITT: %+v", resp)
			}
			// The target closes the connection after a reject.
			if _, _, err := c.ReadPDU(); err == nil {
				t.Fatal("connection still open after a login reject")
			}
		})
	}
	// The target still works.
	c := login(t, tg, 9)
	tur(t, c)
}

func TestProbeNonImmediateNOPOutTakesCmdSN(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	// NOP-Out without the immediate bit, ping data attached.
	n := pdu.NOPOut{InitiatorTaskTag: 0x11, TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	c.CmdSN++
	var h pdu.BHS
	n.Marshal(&h)
	ping := []byte("ping-data-12345")
	if err := c.WritePDU(&h, nil, ping); err != nil {
		t.Fatal(err)
	}
	rh, data, err := c.Expect(pdu.OpNOPIn)
	if err != nil {
		t.Fatal(err)
	}
	var in pdu.NOPIn
	_ = in.Unmarshal(&rh.BHS)
	if in.InitiatorTaskTag != 0x11 || in.TargetTransferTag != pdu.ReservedTag || !bytes.Equal(data, ping) {
		t.Fatalf("NOP-In %+v data %q", in, data)
	}
	if in.SN.ExpCmdSN != c.CmdSN {
		t.Fatalf("ExpCmdSN %d after the NOP-Out, want %d", in.SN.ExpCmdSN, c.CmdSN)
	}
	// The next command (CmdSN n+2) is answered at once.
	r, err := c.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("TUR after NOP-Out: %+v %v", r, err)
	}
}

func TestProbeTextInFullFeaturePhase(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tx := pdu.TextRequest{Final: true, InitiatorTaskTag: 0x70, TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	c.CmdSN++
	var h pdu.BHS
	tx.Marshal(&h)
	if err := c.WritePDU(&h, nil, []byte("SendTargets=All\x00")); err != nil {
		t.Fatal(err)
	}
	_, data, err := c.Expect(pdu.OpTextResponse)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pdu.ParseText(data, pdu.TextLimits{})
	if err != nil {
		t.Fatal(err)
	}
	name, _ := keys.Get("TargetName")
	addr, _ := keys.Get("TargetAddress")
	if name != tg.IQN || addr != tg.Addr+",1" {
		t.Fatalf("SendTargets: %v (want %s at %s,1)", keys, tg.IQN, tg.Addr)
	}
	tur(t, c)
}

func TestProbeDataOutBeyondEDTL(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	other := login(t, tg, 2)
	tur(t, other)
	c := login(t, tg, 1)
	tur(t, c)
	// WRITE(10) of 2 blocks with EDTL 1024, no immediate data: the target
	// solicits 1024 bytes; the probe answers with 2048.
	itt, _, r2t := startWrite(t, c, cdbWrite10(0, 2), 1024)
	if r2t.BufferOffset != 0 || r2t.DesiredDataTransferLength != 1024 {
		t.Fatalf("R2T %+v", r2t)
	}
	for i, seg := range []struct{ off, n uint32 }{{0, 1024}, {1024, 512}, {1536, 512}} {
		d := pdu.DataOut{Final: i == 2, InitiatorTaskTag: itt, TargetTransferTag: r2t.TargetTransferTag,
			DataSN: uint32(i), BufferOffset: seg.off}
		var dh pdu.BHS
		d.Marshal(&dh)
		if err := c.WritePDU(&dh, nil, make([]byte, seg.n)); err != nil {
			break // the target may close the connection
		}
	}
	// Either a Reject plus close, or a CHECK CONDITION: never GOOD, and
	// never a crash. Read until the connection ends or a status arrives.
	var status = -1
	for {
		rh, data, err := c.ReadPDU()
		if err != nil {
			break
		}
		if rh.BHS.Opcode() == pdu.OpSCSIResponse {
			status = int(rh.BHS[3])
			if status == 0 {
				t.Fatalf("surplus Data-Out accepted with GOOD")
			}
			_ = data
			break
		}
	}
	// The other session is unaffected.
	r, err := other.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{})
	if err != nil || r.Status != 0 || len(r.Data) != 4096 {
		t.Fatalf("other session after the probe: %+v %v", r, err)
	}
}

func TestProbeReinstatementClosesOldSession(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	old := login(t, tg, 5)
	tur(t, old)
	fresh := login(t, tg, 5) // same initiator name and ISID
	tur(t, fresh)
	if _, _, err := old.ReadPDU(); err == nil {
		t.Fatal("the reinstated session's connection is still open")
	}
	if n := len(tg.Server.Sessions()); n != 1 {
		t.Fatalf("%d sessions after reinstatement, want 1", n)
	}
}

func TestProbeLoginsDuringIO(t *testing.T) {
	// 300 quick connections from one address: the closed ones may not be
	// reaped yet when the next arrives, so lift the per-source limit (the
	// limit has its own test).
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) { c.MaxConnectionsPerSource = 1024 }})
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 2; w++ {
		c := login(t, tg, byte(0x10+w))
		tur(t, c)
		wg.Add(1)
		go func(c *targettest.Client, w int) {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(w)}, 4096)
			for i := 0; !stop.Load() && i < 100000; i++ {
				lba := uint32(w*1024 + i%256*8)
				var r *targettest.Result
				var err error
				if i%2 == 0 {
					r, err = c.Command(cdbWrite10(lba, 8), buf, 0, targettest.CommandOptions{})
				} else {
					r, err = c.Command(cdbRead10(lba, 8), nil, 4096, targettest.CommandOptions{})
				}
				if err != nil || r.Status != 0 {
					errs <- fmt.Errorf("I/O %d on session %d: %+v %v", i, w, r, err)
					return
				}
			}
		}(c, w)
	}
	for i := 0; i < 300; i++ {
		c, err := targettest.Dial(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.ISID = pdu.ISID{0x80, 0, byte(i >> 16), byte(i >> 8), byte(i), 0}
		if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		c.Close()
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	// Every closed session is gone (TSIH released).
	deadline := time.Now().Add(5 * time.Second)
	for len(tg.Server.Sessions()) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tg.Server.Sessions()); n != 2 {
		t.Fatalf("%d sessions left, want the 2 I/O sessions", n)
	}
}

// TestProbeLoginSegmentTooLong: a Login Request announcing more than the
// 8192 bytes allowed during login is refused with 0x0200 from its header
// alone (the segment is never read), and the connection is closed.
func TestProbeLoginSegmentTooLong(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	req := pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID, InitiatorTaskTag: 0x77, CmdSN: 5}
	var h pdu.BHS
	req.Marshal(&h)
	h.SetLengths(0, 16<<20-1)
	if err := c.WriteRaw(append(h[:], "InitiatorName=iqn.2026-11.test:probe\x00"...)); err != nil {
		t.Fatal(err)
	}
	rh, _, err := c.Expect(pdu.OpLoginResponse)
	if err != nil {
		t.Fatal(err)
	}
	var resp pdu.LoginResponse
	_ = resp.Unmarshal(&rh.BHS)
	if resp.Status != pdu.LoginInitiatorError || resp.ISID != c.ISID || resp.InitiatorTaskTag != 0x77 || resp.SN.ExpCmdSN != 5 {
		t.Fatalf("login response %+v, want status 0x0200 echoing ISID, ITT and CmdSN", resp)
	}
	if _, _, err := c.ReadPDU(); err == nil {
		t.Fatal("connection still open after the reject")
	}
	if !tg.Log.Contains("more than 8192") {
		t.Errorf("log does not name the reason:\n%s", tg.Log.String())
	}
	other := login(t, tg, 2)
	tur(t, other)
}
