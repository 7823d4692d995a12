package target_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDigestsBothDirections(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN, HeaderDigest: "CRC32C,None", DataDigest: "CRC32C,None"}); err != nil {
		t.Fatal(err)
	}
	if !c.Digests.Header || !c.Digests.Data {
		t.Fatalf("digests not negotiated: %v", c.Params)
	}
	tur(t, c)
	data := randBytes(t, 300*1024) // immediate data, unsolicited Data-Out and R2T
	r, err := c.Command(cdbWrite10(100, 600), data, 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("write: %+v %v", r, err)
	}
	r, err = c.Command(cdbRead10(100, 600), nil, uint32(len(data)), targettest.CommandOptions{})
	if err != nil || r.Status != 0 || !bytes.Equal(r.Data, data) {
		t.Fatalf("read back: status %d err %v equal %v", r.Status, err, bytes.Equal(r.Data, data))
	}
	if !bytes.Equal(tg.Devices[0].Bytes()[100*512:100*512+len(data)], data) {
		t.Fatal("data on the device differs")
	}
}

func TestDataDigestErrorTerminatesCommand(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN, DataDigest: "CRC32C"}); err != nil {
		t.Fatal(err)
	}
	tur(t, c)
	// A WRITE(10) of one block with immediate data whose digest is wrong.
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, InitiatorTaskTag: c.NextITT(),
		ExpectedDataTransferLn: 512, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	copy(cmd.CDB[:], cdbWrite10(7, 1))
	c.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	h.SetLengths(0, 512)
	wire := append(append([]byte(nil), h[:]...), bytes.Repeat([]byte{0xab}, 512)...)
	wire = append(wire, 0xde, 0xad, 0xbe, 0xef) // wrong data digest
	if err := c.WriteRaw(wire); err != nil {
		t.Fatal(err)
	}
	rh, _, err := c.Expect(pdu.OpReject)
	if err != nil {
		t.Fatal(err)
	}
	if pdu.RejectReason(rh.BHS[2]) != pdu.RejectDataDigestError {
		t.Fatalf("reject reason %#x", rh.BHS[2])
	}
	rh, data, err := c.Expect(pdu.OpSCSIResponse)
	if err != nil {
		t.Fatal(err)
	}
	if rh.BHS[3] != 0x02 || len(data) < 16 || data[2+2]&0x0f != 0x0b || data[2+12] != 0x47 || data[2+13] != 0x05 {
		t.Fatalf("status %#x sense % x, want CHECK CONDITION ABORTED COMMAND 47/05", rh.BHS[3], data)
	}
	if bytes.Contains(tg.Devices[0].Bytes()[7*512:8*512], []byte{0xab}) {
		t.Fatal("corrupted data reached the device")
	}
	tur(t, c) // the connection survives
}

func TestMaxRecvDataSegmentLengthHonoured(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	c.MaxRecv = 512
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN, Keys: pdu.Keys{{Key: "MaxBurstLength", Value: "2048"}}}); err != nil {
		t.Fatal(err)
	}
	tur(t, c)
	if err := sendCmd(c, cdbRead10(0, 16), 8192, false); err != nil {
		t.Fatal(err)
	}
	var total, finals int
	for {
		rh, data, err := c.Expect(pdu.OpDataIn)
		if err != nil {
			t.Fatal(err)
		}
		var d pdu.DataIn
		_ = d.Unmarshal(&rh.BHS)
		if len(data) > 512 {
			t.Fatalf("Data-In of %d bytes exceeds the initiator's MaxRecvDataSegmentLength 512", len(data))
		}
		if d.DataSN != uint32(total/512) || d.BufferOffset != uint32(total) {
			t.Fatalf("DataSN %d offset %d at byte %d", d.DataSN, d.BufferOffset, total)
		}
		total += len(data)
		if d.Final {
			finals++
			if total%2048 != 0 {
				t.Fatalf("F bit at %d, not at a MaxBurstLength boundary", total)
			}
		}
		if d.HasStatus {
			break
		}
	}
	if total != 8192 || finals != 4 {
		t.Fatalf("%d bytes in %d sequences, want 8192 in 4", total, finals)
	}
}

// sendCmd sends a SCSI command PDU without waiting for the answer.
func sendCmd(c *targettest.Client, cdb []byte, edtl uint32, write bool) error {
	cmd := pdu.SCSICommand{Final: true, Read: !write && edtl > 0, Write: write, Attr: pdu.AttrSimple,
		InitiatorTaskTag: c.NextITT(), ExpectedDataTransferLn: edtl, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	copy(cmd.CDB[:], cdb)
	c.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	return c.WritePDU(&h, nil, nil)
}

// startWrite sends a WRITE without immediate data and returns its task tag,
// its CmdSN and the first R2T the target answers with.
func startWrite(t *testing.T, c *targettest.Client, cdb []byte, edtl uint32) (itt, cmdSN uint32, r2t pdu.R2T) {
	t.Helper()
	itt, cmdSN = c.NextITT(), c.CmdSN
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, InitiatorTaskTag: itt,
		ExpectedDataTransferLn: edtl, CmdSN: cmdSN, ExpStatSN: c.ExpStatSN}
	copy(cmd.CDB[:], cdb)
	c.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	rh, _, err := c.Expect(pdu.OpR2T)
	if err != nil {
		t.Fatal(err)
	}
	_ = r2t.Unmarshal(&rh.BHS)
	return itt, cmdSN, r2t
}

func TestMultipleOutstandingR2Ts(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	// Log in with exactly the keys wanted, in one PDU.
	resp, keys, err := c.LoginPDU(pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID, InitiatorTaskTag: 1}, pdu.Keys{
		{Key: "InitiatorName", Value: c.InitiatorName}, {Key: "TargetName", Value: tg.IQN},
		{Key: "InitialR2T", Value: "Yes"}, {Key: "ImmediateData", Value: "No"},
		{Key: "MaxBurstLength", Value: "65536"}, {Key: "MaxOutstandingR2T", Value: "4"},
		{Key: "MaxRecvDataSegmentLength", Value: "65536"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := keys.Get("MaxOutstandingR2T"); v != "4" {
		t.Fatalf("MaxOutstandingR2T answered %q", v)
	}
	if v, _ := keys.Get("InitialR2T"); v != "Yes" {
		t.Fatalf("InitialR2T answered %q", v)
	}
	c.TSIH = resp.TSIH
	c.TargetMaxRecv = 262144
	c.CmdSN = 0
	tur(t, c)
	data := randBytes(t, 512*1024)
	itt := c.NextITT()
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, InitiatorTaskTag: itt,
		ExpectedDataTransferLn: uint32(len(data)), CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	copy(cmd.CDB[:], cdbWrite10(0, 1024))
	c.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Four R2Ts arrive before any data is sent.
	var r2ts []pdu.R2T
	for len(r2ts) < 4 {
		rh, _, err := c.Expect(pdu.OpR2T)
		if err != nil {
			t.Fatal(err)
		}
		var r pdu.R2T
		_ = r.Unmarshal(&rh.BHS)
		if r.R2TSN != uint32(len(r2ts)) || r.BufferOffset != uint32(len(r2ts))*65536 || r.DesiredDataTransferLength != 65536 {
			t.Fatalf("R2T %d: %+v", len(r2ts), r)
		}
		r2ts = append(r2ts, r)
	}
	ttts := map[uint32]bool{}
	for _, r := range r2ts {
		if ttts[r.TargetTransferTag] || r.TargetTransferTag == pdu.ReservedTag {
			t.Fatalf("TTT %#x reused or reserved", r.TargetTransferTag)
		}
		ttts[r.TargetTransferTag] = true
	}
	answer := func(r pdu.R2T) {
		d := pdu.DataOut{Final: true, InitiatorTaskTag: itt, TargetTransferTag: r.TargetTransferTag, BufferOffset: r.BufferOffset}
		var dh pdu.BHS
		d.Marshal(&dh)
		if err := c.WritePDU(&dh, nil, data[r.BufferOffset:r.BufferOffset+r.DesiredDataTransferLength]); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range r2ts {
		answer(r)
	}
	for done := 4; ; {
		rh, _, err := c.ReadPDU()
		if err != nil {
			t.Fatal(err)
		}
		if rh.BHS.Opcode() == pdu.OpR2T {
			var r pdu.R2T
			_ = r.Unmarshal(&rh.BHS)
			if r.R2TSN != uint32(done) {
				t.Fatalf("R2TSN %d, want %d", r.R2TSN, done)
			}
			done++
			answer(r)
			continue
		}
		if rh.BHS.Opcode() != pdu.OpSCSIResponse || rh.BHS[3] != 0 {
			t.Fatalf("got %v status %#x", rh.BHS.Opcode(), rh.BHS[3])
		}
		var resp pdu.SCSIResponse
		_ = resp.Unmarshal(&rh.BHS)
		if done != 8 || resp.ExpDataSN != 8 {
			t.Fatalf("%d R2Ts, ExpDataSN %d; want 8", done, resp.ExpDataSN)
		}
		break
	}
	if !bytes.Equal(tg.Devices[0].Bytes()[:len(data)], data) {
		t.Fatal("device content differs")
	}
}

func TestResidualOverflowAndUnderflow(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	edtl := uint32(512)
	r, err := c.Command(cdbRead10(0, 2), nil, 512, targettest.CommandOptions{EDTL: &edtl})
	if err != nil || r.Status != 0 || !r.Overflow || r.Residual != 512 || len(r.Data) != 512 {
		t.Fatalf("read overflow: %+v %v", r, err)
	}
	edtl = 4096
	r, err = c.Command(cdbRead10(0, 2), nil, 4096, targettest.CommandOptions{EDTL: &edtl})
	if err != nil || r.Status != 0 || !r.Underflow || r.Residual != 3072 || len(r.Data) != 1024 {
		t.Fatalf("read underflow: %+v %v", r, err)
	}
}

func TestCmdSNOutsideWindowIgnored(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	for _, sn := range []uint32{c.MaxCmdSN + 1, c.CmdSN - 1} {
		saved := c.CmdSN
		c.CmdSN = sn
		if err := sendCmd(c, cdbTUR, 0, false); err != nil {
			t.Fatal(err)
		}
		c.CmdSN = saved
		c.Timeout = 300 * time.Millisecond
		if rh, _, err := c.ReadPDU(); err == nil {
			t.Fatalf("CmdSN %d outside the window was answered: %v", sn, rh.BHS.Opcode())
		}
		c.Timeout = 5 * time.Second
	}
	// A timed-out read poisons the deadline state of the conn; dial anew.
	c2 := login(t, tg, 2)
	tur(t, c2)
}

func TestRejects(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	t.Run("vendor opcode", func(t *testing.T) {
		var h pdu.BHS
		h[0] = 0x1c
		h[1] = 0x80
		if err := c.WritePDU(&h, nil, []byte("junk")); err != nil {
			t.Fatal(err)
		}
		rh, data, err := c.Expect(pdu.OpReject)
		if err != nil {
			t.Fatal(err)
		}
		if pdu.RejectReason(rh.BHS[2]) != pdu.RejectCommandNotSupported || len(data) != 48 || data[0] != 0x1c {
			t.Fatalf("reject %#x with %d bytes", rh.BHS[2], len(data))
		}
	})
	t.Run("SNACK", func(t *testing.T) {
		s := pdu.SNACKRequest{Type: 0, InitiatorTaskTag: 1}
		var h pdu.BHS
		s.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Expect(pdu.OpReject); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("duplicate task tag", func(t *testing.T) {
		// No data: the target waits (R2T) with the ITT in use.
		itt, _, r2t := startWrite(t, c, cdbWrite10(0, 1), 512)
		cmd := pdu.SCSICommand{Final: true, Read: true, Attr: pdu.AttrSimple, InitiatorTaskTag: itt,
			ExpectedDataTransferLn: 512, ExpStatSN: c.ExpStatSN}
		var h pdu.BHS
		cmd.CmdSN = c.CmdSN
		c.CmdSN++
		copy(cmd.CDB[:], cdbRead10(0, 1))
		cmd.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			t.Fatal(err)
		}
		rh, _, err := c.Expect(pdu.OpReject)
		if err != nil {
			t.Fatal(err)
		}
		if pdu.RejectReason(rh.BHS[2]) != pdu.RejectTaskInProgress {
			t.Fatalf("reason %#x", rh.BHS[2])
		}
		d := pdu.DataOut{Final: true, InitiatorTaskTag: itt, TargetTransferTag: r2t.TargetTransferTag}
		d.Marshal(&h)
		if err := c.WritePDU(&h, nil, make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
		rh, _, err = c.Expect(pdu.OpSCSIResponse)
		if err != nil || rh.BHS[3] != 0 {
			t.Fatalf("first command: %v", err)
		}
	})
	tur(t, c)
	t.Run("segment longer than MaxRecvDataSegmentLength", func(t *testing.T) {
		n := pdu.NOPOut{Immediate: true, InitiatorTaskTag: 5, TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN}
		var h pdu.BHS
		n.Marshal(&h)
		h.SetLengths(0, 1<<20)
		if err := c.WriteRaw(h[:]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Expect(pdu.OpReject); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ReadPDU(); err == nil {
			t.Fatal("connection not closed after an oversize segment")
		}
	})
}

func TestAbortTaskWaitingForData(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	itt, refCmdSN, r2t := startWrite(t, c, cdbWrite10(0, 8), 4096)
	var h pdu.BHS
	tmf := func(fn pdu.TMFunction, ref uint32, refSN uint32) uint8 {
		req := pdu.TaskMgmtRequest{Immediate: true, Function: fn, InitiatorTaskTag: c.NextITT(),
			ReferencedTaskTag: ref, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: refSN}
		var th pdu.BHS
		req.Marshal(&th)
		if err := c.WritePDU(&th, nil, nil); err != nil {
			t.Fatal(err)
		}
		rh, _, err := c.Expect(pdu.OpTaskMgmtResponse)
		if err != nil {
			t.Fatal(err)
		}
		return rh.BHS[2]
	}
	if got := tmf(pdu.TMFAbortTask, itt, refCmdSN); got != pdu.TMFRespComplete {
		t.Fatalf("ABORT TASK response %d", got)
	}
	// Data for the aborted task is dropped; nothing reaches the device.
	d := pdu.DataOut{Final: true, InitiatorTaskTag: itt, TargetTransferTag: r2t.TargetTransferTag}
	d.Marshal(&h)
	if err := c.WritePDU(&h, nil, bytes.Repeat([]byte{0xee}, 4096)); err != nil {
		t.Fatal(err)
	}
	tur(t, c)
	if bytes.Contains(tg.Devices[0].Bytes()[:4096], []byte{0xee}) {
		t.Fatal("data of an aborted write reached the device")
	}
	if got := tmf(pdu.TMFAbortTask, 0xdead, refCmdSN-5); got != pdu.TMFRespNoTask {
		t.Fatalf("ABORT TASK of an unknown task: response %d", got)
	}
	if got := tmf(pdu.TMFTaskReassign, itt, 0); got != pdu.TMFRespReassignNotSupp {
		t.Fatalf("TASK REASSIGN: response %d", got)
	}
}

func TestLUNResetSetsUnitAttentionForOtherNexus(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	a := login(t, tg, 1)
	b := login(t, tg, 2)
	tur(t, a)
	tur(t, b)
	req := pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFLogicalUnitReset, InitiatorTaskTag: a.NextITT(),
		ReferencedTaskTag: pdu.ReservedTag, CmdSN: a.CmdSN, ExpStatSN: a.ExpStatSN}
	var h pdu.BHS
	req.Marshal(&h)
	if err := a.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	rh, _, err := a.Expect(pdu.OpTaskMgmtResponse)
	if err != nil || rh.BHS[2] != pdu.TMFRespComplete {
		t.Fatalf("LUN RESET: %v", err)
	}
	r, err := b.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k, asc, ascq := r.SenseKey(); r.Status != 2 || k != 6 || asc != 0x29 || ascq != 0x03 {
		t.Fatalf("after LUN RESET: status %#x sense %x/%x/%x, want UNIT ATTENTION 29/03", r.Status, k, asc, ascq)
	}
	// A LUN that does not exist.
	req.LUN = 5 << 48
	req.InitiatorTaskTag = a.NextITT()
	req.Marshal(&h)
	if err := a.WritePDU(&h, nil, nil); err != nil {
		t.Fatal(err)
	}
	rh, _, err = a.Expect(pdu.OpTaskMgmtResponse)
	if err != nil || rh.BHS[2] != pdu.TMFRespNoLUN {
		t.Fatalf("LUN RESET of a missing LUN: %v response %d", err, rh.BHS[2])
	}
}

func TestShutdownAsksForLogout(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- tg.Server.Shutdown(ctx)
	}()
	rh, _, err := c.Expect(pdu.OpAsyncMessage)
	if err != nil {
		t.Fatal(err)
	}
	var a pdu.AsyncMessage
	_ = a.Unmarshal(&rh.BHS)
	if a.AsyncEvent != pdu.AsyncRequestLogout {
		t.Fatalf("async event %d", a.AsyncEvent)
	}
	// Commands still work until the initiator logs out.
	tur(t, c)
	if r, err := c.Logout(); err != nil || r.Response != pdu.LogoutRespClosed {
		t.Fatalf("logout: %+v %v", r, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := targettest.Dial(tg.Addr); err == nil {
		t.Fatal("listener still accepting after Shutdown")
	}
}

func TestDiscoverySession(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := dial(t, tg)
	if err := c.Login(targettest.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.SendTargets("All")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := keys.Get("TargetName"); v != tg.IQN {
		t.Fatalf("SendTargets: %v", keys)
	}
	// SCSI commands are not allowed in a discovery session.
	if err := sendCmd(c, cdbTUR, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Expect(pdu.OpReject); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Logout(); err != nil || r.Response != pdu.LogoutRespClosed {
		t.Fatalf("logout: %+v %v", r, err)
	}
}

func TestTargetPingsAndDropsSilentInitiator(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.NOPInterval = 100 * time.Millisecond
		c.NOPTimeout = 300 * time.Millisecond
	}})
	c := login(t, tg, 1)
	// Answer pings for a while: the connection stays.
	deadline := time.Now().Add(700 * time.Millisecond)
	pings := 0
	for time.Now().Before(deadline) {
		rh, _, err := c.ReadPDU()
		if err != nil {
			t.Fatalf("connection dropped although pings were answered: %v", err)
		}
		var in pdu.NOPIn
		if err := in.Unmarshal(&rh.BHS); err != nil || in.InitiatorTaskTag != pdu.ReservedTag || in.TargetTransferTag == pdu.ReservedTag {
			t.Fatalf("expected a ping, got %v %+v", rh.BHS.Opcode(), in)
		}
		pings++
		out := pdu.NOPOut{Immediate: true, InitiatorTaskTag: pdu.ReservedTag, TargetTransferTag: in.TargetTransferTag, CmdSN: c.CmdSN}
		var h pdu.BHS
		out.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if pings < 2 {
		t.Fatalf("%d pings in 700 ms", pings)
	}
	// Stop answering: the target closes the connection within
	// NOPInterval + NOPTimeout (+ scheduling slack).
	start := time.Now()
	c.Timeout = 3 * time.Second
	for {
		if _, _, err := c.ReadPDU(); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("silent initiator dropped after %v", d)
	}
	if !tg.Log.Contains("NOP-In ping not answered") {
		t.Fatal("the drop is not logged")
	}
}

func TestLongCDBThroughAHS(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	c := login(t, tg, 1)
	tur(t, c)
	// A 32-byte variable-length CDB (opcode 7Fh) travels in the BHS plus an
	// Extended CDB AHS; the target must parse it and answer with the SCSI
	// verdict (unsupported opcode), not a protocol error.
	cdb := make([]byte, 32)
	cdb[0] = 0x7f
	cdb[7] = 24 // additional CDB length
	r, err := c.Command(cdb, nil, 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k, asc, _ := r.SenseKey(); r.Status != 2 || k != 5 || asc != 0x20 {
		t.Fatalf("status %#x sense %x/%x, want ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE", r.Status, k, asc)
	}
	tur(t, c)
}

func TestSendTargetsNamedAndMultiPDU(t *testing.T) {
	var extra []string
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		r := c.Nodes[0].Router
		for i := 0; i < 40; i++ {
			name := fmt.Sprintf("iqn.2026-11.test:a-rather-long-target-name-to-fill-pdus-%02d", i)
			extra = append(extra, name)
			c.Nodes = append(c.Nodes, &target.Node{Name: name, Router: r})
		}
	}})
	c := dial(t, tg)
	c.MaxRecv = 512
	if err := c.Login(targettest.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	ask := func(value string) pdu.Keys {
		t.Helper()
		keys, err := c.SendTargets(value)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	all := ask("All")
	names := 0
	for _, kv := range all {
		if kv.Key == "TargetName" {
			names++
		}
	}
	if names != 41 {
		t.Fatalf("SendTargets=All listed %d targets, want 41", names)
	}
	one := ask(extra[7])
	if len(one) != 2 || one[0].Value != extra[7] || one[1].Key != "TargetAddress" {
		t.Fatalf("SendTargets=<name>: %v", one)
	}
	if none := ask("iqn.2026-11.test:nope"); len(none) != 0 {
		t.Fatalf("SendTargets=<unknown>: %v", none)
	}
}
