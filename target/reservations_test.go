package target_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore/faulty"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

func prOut(t *testing.T, c *targettest.Client, sa, typ byte, key, sakey uint64) {
	t.Helper()
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], sakey)
	r, err := c.Command([]byte{0x5F, sa, typ, 0, 0, 0, 0, 0, 24, 0}, p, 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatalf("PROUT %x: %v", sa, err)
	}
	if r.Status != 0 {
		k, asc, ascq := r.SenseKey()
		t.Fatalf("PROUT %x: status %#x sense %x/%02x/%02x", sa, r.Status, k, asc, ascq)
	}
}

// TestPreemptAndAbort: PREEMPT AND ABORT aborts the preempted nexus's
// executing write (TASK ABORTED) before it reports GOOD, and the
// preempted nexus's next write conflicts.
func TestPreemptAndAbort(t *testing.T) {
	tg, fd := startFaulty(t)
	a := login(t, tg, 1)
	b := login(t, tg, 2)
	tur(t, a)
	tur(t, b)
	prOut(t, a, 0x00, 0, 0, 0xA)
	prOut(t, b, 0x00, 0, 0, 0xB)
	prOut(t, b, 0x01, 0x01, 0xB, 0) // WRITE EXCLUSIVE

	// B's write is stuck in a slow disk when A preempts it.
	fd.Inject(faulty.Rule{Ops: faulty.Write, Kind: faulty.Delay, Delay: time.Minute, Off: 1 << 20, Len: 1 << 20})
	itt, err := b.Send(cdbWrite10(2048, 1), make([]byte, 512), 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, fd, 1)

	prOut(t, a, 0x05, 0x03, 0xA, 0xB) // PREEMPT AND ABORT, EXCLUSIVE ACCESS
	// GOOD came only after the write left the device.
	if n := fd.InFlight(); n != 0 {
		t.Fatalf("%d device operations still running after PREEMPT AND ABORT", n)
	}
	rh, _, err := b.Expect(pdu.OpSCSIResponse)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(rh.BHS[16:20]); got != itt {
		t.Fatalf("response for ITT %#x, want %#x", got, itt)
	}
	if status := rh.BHS[3]; status != 0x40 {
		t.Fatalf("preempted write ended with status %#x, want TASK ABORTED", status)
	}
	fd.Clear()
	// B learns it was preempted, then conflicts.
	r, err := b.Command(cdbWrite10(0, 1), make([]byte, 512), 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k, asc, ascq := r.SenseKey(); r.Status != 2 || k != 6 || asc != 0x2A || ascq != 0x05 {
		t.Fatalf("first command after preemption: status %#x sense %x/%02x/%02x, want REGISTRATIONS PREEMPTED", r.Status, k, asc, ascq)
	}
	r, err = b.Command(cdbWrite10(0, 1), make([]byte, 512), 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0x18 {
		t.Fatalf("write of the preempted nexus: %v status %#x, want RESERVATION CONFLICT", err, r.Status)
	}
	waitBuffersBack(t, tg)
}

// TestLogoutEndsNexusBeforeResponse: an initiator that logs out one
// session and at once uses another finds the first nexus gone — its
// RESERVE(6) released — by the time the Logout Response arrives (libiscsi
// Sanitize.Reservations followed by Sanitize.Reset does exactly that).
func TestLogoutEndsNexusBeforeResponse(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	b := login(t, tg, 2)
	tur(t, b)
	for i := 0; i < 40; i++ {
		a := login(t, tg, 1)
		tur(t, a)
		r, err := a.Command([]byte{0x16, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}) // RESERVE(6)
		if err != nil || r.Status != 0 {
			t.Fatalf("round %d: RESERVE(6): %v status %#x", i, err, statusOf(r))
		}
		if _, err := a.Logout(); err != nil {
			t.Fatalf("round %d: logout: %v", i, err)
		}
		r, err = b.Command(cdbWrite10(0, 1), make([]byte, 512), 0, targettest.CommandOptions{})
		if err != nil {
			t.Fatalf("round %d: WRITE(10): %v", i, err)
		}
		if r.Status != 0 {
			k, asc, ascq := r.SenseKey()
			t.Fatalf("round %d: WRITE(10) right after the reserving session logged out: status %#x sense %x/%02x/%02x, want GOOD",
				i, r.Status, k, asc, ascq)
		}
		a.Close()
	}
}

func statusOf(r *targettest.Result) byte {
	if r == nil {
		return 0xFF
	}
	return r.Status
}
