package target_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/backstore/faulty"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// A failing disk turns into the right SCSI errors, costs nothing else, and
// every buffer and goroutine of the failed or aborted commands comes back.

func startFaulty(t *testing.T) (*targettest.Target, *faulty.Device) {
	t.Helper()
	var fd *faulty.Device
	tg := targettest.Start(t, targettest.Options{Wrap: func(i int, dev backstore.Device) backstore.Device {
		fd = faulty.Wrap(dev)
		return fd
	}})
	t.Cleanup(fd.Clear)
	return tg, fd
}

// senseInfo returns the INFORMATION field of fixed-format sense data and
// whether its VALID bit is set.
func senseInfo(s []byte) (uint32, bool) {
	if len(s) < 7 || s[0]&0x7f != 0x70 {
		return 0, false
	}
	return binary.BigEndian.Uint32(s[3:7]), s[0]&0x80 != 0
}

func wantSense(t *testing.T, what string, r *targettest.Result, key, asc, ascq byte) {
	t.Helper()
	if k, a, q := r.SenseKey(); r.Status != 2 || k != key || a != asc || q != ascq {
		t.Fatalf("%s: status %#x sense %x/%02x/%02x, want CHECK CONDITION %x/%02x/%02x", what, r.Status, k, a, q, key, asc, ascq)
	}
}

func TestBackstoreFaultsBecomeSense(t *testing.T) {
	tg, fd := startFaulty(t)
	c := login(t, tg, 1)
	other := login(t, tg, 2)
	tur(t, c)
	tur(t, other)
	const bs = 512

	cases := []struct {
		name           string
		rule           faulty.Rule
		cdb            []byte
		write          bool
		key, asc, ascq byte
		info           uint32 // the failing LBA, checked when hasInfo
		hasInfo        bool
	}{
		{"read EIO in the middle", faulty.Rule{Ops: faulty.Read, Kind: faulty.EIO, Off: 13 * bs, Len: bs},
			cdbRead10(10, 8), false, 3, 0x11, 0x00, 13, true},
		{"write EIO in the middle", faulty.Rule{Ops: faulty.Write, Kind: faulty.EIO, Off: 105 * bs, Len: bs},
			cdbWrite10(100, 8), true, 3, 0x0c, 0x00, 105, true},
		{"short write", faulty.Rule{Ops: faulty.Write, Kind: faulty.ShortWrite},
			cdbWrite10(200, 8), true, 3, 0x0c, 0x00, 204, true},
		{"ENOSPC", faulty.Rule{Ops: faulty.Write, Kind: faulty.NoSpace},
			cdbWrite10(300, 8), true, 7, 0x27, 0x07, 0, false},
		{"flush EIO", faulty.Rule{Ops: faulty.Flush, Kind: faulty.EIO},
			[]byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false, 3, 0x0c, 0x00, 0, false},
		{"panicking device", faulty.Rule{Ops: faulty.Read, Kind: faulty.Panic},
			cdbRead10(0, 1), false, 4, 0x44, 0x00, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fd.Clear()
			fd.Inject(tc.rule)
			var r *targettest.Result
			var err error
			if tc.write {
				r, err = c.Command(tc.cdb, bytes.Repeat([]byte{0x5a}, 8*bs), 0, targettest.CommandOptions{})
			} else {
				n := uint32(0)
				if tc.cdb[0] == 0x28 {
					n = 8 * bs
				}
				r, err = c.Command(tc.cdb, nil, n, targettest.CommandOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			wantSense(t, tc.name, r, tc.key, tc.asc, tc.ascq)
			if tc.hasInfo {
				info, valid := senseInfo(r.Sense)
				if !valid || info != tc.info {
					t.Errorf("INFORMATION %d (valid %v), want the failing LBA %d", info, valid, tc.info)
				}
			}
			// The fault cost this command only: both sessions keep working.
			fd.Clear()
			if r, err := other.Command(cdbRead10(0, 1), nil, bs, targettest.CommandOptions{}); err != nil || r.Status != 0 {
				t.Fatalf("other session after the fault: %v %+v", err, r)
			}
			if r, err := c.Command(cdbRead10(0, 1), nil, bs, targettest.CommandOptions{}); err != nil || r.Status != 0 {
				t.Fatalf("same session after the fault: %v %+v", err, r)
			}
		})
	}
	if fd.Hits() < int64(len(cases)) {
		t.Errorf("only %d faults were hit", fd.Hits())
	}
	waitBuffersBack(t, tg)
}

func TestSlowDiskAbortAndReset(t *testing.T) {
	tg, fd := startFaulty(t)
	c := login(t, tg, 1)
	other := login(t, tg, 2)
	tur(t, c)
	tur(t, other)

	tmf := func(fn pdu.TMFunction, ref, refSN uint32) uint8 {
		t.Helper()
		req := pdu.TaskMgmtRequest{Immediate: true, Function: fn, InitiatorTaskTag: c.NextITT(),
			ReferencedTaskTag: ref, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: refSN}
		if fn != pdu.TMFAbortTask {
			req.ReferencedTaskTag = pdu.ReservedTag
		}
		var h pdu.BHS
		req.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			t.Fatal(err)
		}
		// Responses of the aborted commands may come first (none are
		// expected: aborted tasks are not answered), then the TMF response.
		rh, _, err := c.Expect(pdu.OpTaskMgmtResponse)
		if err != nil {
			t.Fatal(err)
		}
		return rh.BHS[2]
	}
	sendRead := func(lba uint32) (itt, cmdSN uint32) {
		t.Helper()
		itt = c.NextITT()
		cmd := pdu.SCSICommand{Final: true, Read: true, Attr: pdu.AttrSimple, InitiatorTaskTag: itt,
			ExpectedDataTransferLn: 4096, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
		copy(cmd.CDB[:], cdbRead10(lba, 8))
		cmdSN = c.CmdSN
		c.CmdSN++
		var h pdu.BHS
		cmd.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			t.Fatal(err)
		}
		return itt, cmdSN
	}

	// A disk that takes a minute per read: the initiator gives up and
	// aborts; the task's context ends the wait and nothing is answered.
	fd.Inject(faulty.Rule{Ops: faulty.Read, Kind: faulty.Delay, Delay: time.Minute, Off: 1 << 20, Len: 1 << 20})
	itt, sn := sendRead(2048)
	waitInFlight(t, fd, 1)
	if got := tmf(pdu.TMFAbortTask, itt, sn); got != pdu.TMFRespComplete {
		t.Fatalf("ABORT TASK: response %d", got)
	}
	tur(t, c)

	// Several slow reads, then LUN RESET: all of them go.
	for i := range 4 {
		sendRead(2048 + uint32(i)*8)
	}
	waitInFlight(t, fd, 4)
	if got := tmf(pdu.TMFLogicalUnitReset, 0, 0); got != pdu.TMFRespComplete {
		t.Fatalf("LUN RESET: response %d", got)
	}
	waitInFlight(t, fd, 0)

	// A disk that hangs and ignores cancellation: ABORT TASK waits for the
	// I/O to come back (the task may not be reported aborted while it
	// could still touch the medium), other sessions keep working meanwhile.
	fd.Clear()
	tur(t, c) // takes the reset's unit attention, if any
	tur(t, other)
	fd.Inject(faulty.Rule{Ops: faulty.Read, Kind: faulty.Hang, Off: 1 << 20, Len: 1 << 20})
	itt, sn = sendRead(2048)
	waitInFlight(t, fd, 1)
	done := make(chan struct{})
	var got uint8
	go func() {
		defer close(done)
		got = tmf(pdu.TMFAbortTask, itt, sn)
	}()
	if r, err := other.Command(cdbRead10(0, 8), nil, 4096, targettest.CommandOptions{}); err != nil || r.Status != 0 {
		t.Fatalf("other session while a disk I/O hangs: %v %+v", err, r)
	}
	select {
	case <-done:
		t.Fatal("ABORT TASK answered while the aborted read was still inside the device")
	case <-time.After(200 * time.Millisecond):
	}
	fd.Release()
	<-done
	if got != pdu.TMFRespComplete {
		t.Fatalf("ABORT TASK of a hung read: response %d", got)
	}
	fd.Clear()
	tur(t, c)
	waitBuffersBack(t, tg)
}

func waitInFlight(t *testing.T, fd *faulty.Device, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fd.InFlight() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations in the device, want %d", fd.InFlight(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBuffersBack fails the test if data buffers stay lent out after every
// command has ended.
func waitBuffersBack(t *testing.T, tg *targettest.Target) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for tg.Server.DataBuffersInUse() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of data buffers not returned", tg.Server.DataBuffersInUse())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
