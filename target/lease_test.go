package target_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/backstore/faulty"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

const (
	nameA = "iqn.2026-11.test:node-a"
	nameB = "iqn.2026-11.test:node-b"
)

// leaseLogin logs in as initiator name with ISID low byte isid; it returns
// the client, or nil and the login status when the target refused.
func leaseLogin(t *testing.T, tg *targettest.Target, name string, isid byte) (*targettest.Client, uint16) {
	t.Helper()
	c := dial(t, tg)
	c.InitiatorName = name
	c.ISID[5] = isid
	err := c.Login(targettest.LoginOptions{Target: tg.IQN})
	var lf *targettest.ErrLoginFailed
	switch {
	case err == nil:
		return c, 0
	case errors.As(err, &lf):
		c.Close()
		return nil, lf.Status
	default:
		t.Fatalf("login %s/%d: %v", name, isid, err)
		return nil, 0
	}
}

// leaseWrite writes one 512-byte block of b at lba, retrying once past a
// unit attention.
func leaseWrite(t *testing.T, c *targettest.Client, lba uint32, b []byte) {
	t.Helper()
	for i := 0; ; i++ {
		r, err := c.Command(cdbWrite10(lba, 1), b, 0, targettest.CommandOptions{})
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		if r.Status == 0 {
			return
		}
		if k, _, _ := r.SenseKey(); k != 6 || i > 0 {
			t.Fatalf("write status %#x sense % x", r.Status, r.Sense)
		}
	}
}

// leaseTimers are short liveness timers for takeover tests, still long
// enough that an idle but healthy client of a loaded CI machine (race
// detector, parallel packages) is not taken for dead.
func leaseTimers(c *target.Config) {
	c.NOPInterval = 200 * time.Millisecond
	c.NOPTimeout = time.Second
}

func wantLeaseStatus(t *testing.T, what string, got, want uint16) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: login status 0x%04x, want 0x%04x", what, got, want)
	}
}

// pingAnswerer keeps a client alive by answering the target's NOP-In
// pings until stop is closed.
func pingAnswerer(t *testing.T, c *targettest.Client) (stop func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		c.Timeout = 50 * time.Millisecond
		for {
			select {
			case <-quit:
				return
			default:
			}
			h, _, err := c.ReadPDU()
			if err != nil {
				var ne interface{ Timeout() bool }
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			if h.BHS.Opcode() == pdu.OpNOPIn {
				var in pdu.NOPIn
				_ = in.Unmarshal(&h.BHS)
				if in.TargetTransferTag != pdu.ReservedTag {
					out := pdu.NOPOut{Immediate: true, InitiatorTaskTag: pdu.ReservedTag,
						TargetTransferTag: in.TargetTransferTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
					var oh pdu.BHS
					out.Marshal(&oh)
					if c.WritePDU(&oh, nil, nil) != nil {
						return
					}
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		c.Timeout = 5 * time.Second
	}
}

// loginUntil retries a login of name/isid until it succeeds or bound
// attempts were refused with 0x0301; it returns the client and the number
// of refusals.
func loginUntil(t *testing.T, tg *targettest.Target, name string, isid byte, bound int) (*targettest.Client, int) {
	t.Helper()
	for i := 0; i < bound; i++ {
		c, st := leaseLogin(t, tg, name, isid)
		if c != nil {
			return c, i
		}
		wantLeaseStatus(t, "retry", st, pdu.LoginServiceUnavailable)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never got the lease in %d attempts", name, bound)
	return nil, 0
}

func leaseOf(t *testing.T, tg *targettest.Target) target.LeaseInfo {
	t.Helper()
	li, err := tg.Server.Lease(tg.IQN)
	if err != nil {
		t.Fatal(err)
	}
	return li
}

func TestLeaseRefusesSecondInitiator(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	a, _ := leaseLogin(t, tg, nameA, 1)
	defer a.Close()
	leaseWrite(t, a, 0, bytes.Repeat([]byte{0xa1}, 512))

	_, st := leaseLogin(t, tg, nameB, 1)
	wantLeaseStatus(t, "second initiator", st, pdu.LoginServiceUnavailable)
	// Discovery is not affected by the lease.
	d := dial(t, tg)
	d.InitiatorName = nameB
	if err := d.Login(targettest.LoginOptions{}); err != nil {
		t.Fatalf("discovery login of a non-holder: %v", err)
	}
	d.Close()

	li := leaseOf(t, tg)
	if li.Holder != nameA || li.Epoch != 1 || !li.HolderAlive || li.Access != target.AccessSingleWriter {
		t.Fatalf("lease %+v", li)
	}
	if li.Counters.RefusedBusy != 1 || li.Counters.Acquired != 1 || tg.Server.LeaseCounters().RefusedBusy != 1 {
		t.Fatalf("counters %+v", li.Counters)
	}
	if !tg.Log.Contains("lease: login refused") || !tg.Log.Contains("status=0x0301") {
		t.Fatal("the refusal is not logged")
	}
	// The holder is unaffected.
	leaseWrite(t, a, 1, bytes.Repeat([]byte{0xa2}, 512))
}

func TestLeaseSameNameMultipath(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	a1, _ := leaseLogin(t, tg, nameA, 1)
	defer a1.Close()
	a2, st := leaseLogin(t, tg, nameA, 2)
	if a2 == nil {
		t.Fatalf("second path of the holder refused: 0x%04x", st)
	}
	defer a2.Close()
	leaseWrite(t, a1, 0, bytes.Repeat([]byte{1}, 512))
	leaseWrite(t, a2, 1, bytes.Repeat([]byte{2}, 512))
	// A differently-cased name is the same iSCSI name (RFC 3722).
	a3, st := leaseLogin(t, tg, "IQN.2026-11.TEST:NODE-A", 3)
	if a3 == nil {
		t.Fatalf("holder name in other case refused: 0x%04x", st)
	}
	if li := leaseOf(t, tg); li.Epoch != 1 || len(li.HolderNexuses) != 3 || li.Counters.NexusesAdded != 2 {
		t.Fatalf("lease %+v", li)
	}
	// A session the initiator logged out of will not be recovered: its
	// nexus is forgotten, so the list stays bounded across attach cycles.
	if r, err := a3.Logout(); err != nil || r.Response != 0 {
		t.Fatalf("logout: %+v %v", r, err)
	}
	a3.Close()
	for i := 0; i < 200 && len(leaseOf(t, tg).HolderNexuses) != 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if li := leaseOf(t, tg); li.Epoch != 1 || len(li.HolderNexuses) != 2 || li.HolderNexuses[1] != a2.ISID.String() {
		t.Fatalf("after logout %+v", li)
	}
}

func TestLeaseTakeoverFencesSilentHolder(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: leaseTimers})
	a, _ := leaseLogin(t, tg, nameA, 1)
	defer a.Close()
	leaseWrite(t, a, 0, bytes.Repeat([]byte{0xaa}, 512))
	// A write of A waits for its data (R2T outstanding) when A goes silent.
	_, _, r2t := startWrite(t, a, cdbWrite10(8, 1), 512)

	// While A answers pings B is refused.
	stop := pingAnswerer(t, a)
	for i := 0; i < 5; i++ {
		_, st := leaseLogin(t, tg, nameB, 1)
		wantLeaseStatus(t, "holder alive", st, pdu.LoginServiceUnavailable)
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	// A stops answering (frozen): B gets the lease.
	b, refused := loginUntil(t, tg, nameB, 1, 500)
	defer b.Close()
	t.Logf("B refused %d times after A went silent", refused)

	// The old holder's pending write can no longer land. B answers its
	// pings meanwhile.
	stopB := pingAnswerer(t, b)
	var h pdu.BHS
	dout := pdu.DataOut{Final: true, LUN: 0, InitiatorTaskTag: r2t.InitiatorTaskTag,
		TargetTransferTag: r2t.TargetTransferTag, ExpStatSN: a.ExpStatSN}
	dout.Marshal(&h)
	_ = a.WritePDU(&h, nil, bytes.Repeat([]byte{0xee}, 512))
	for i := 0; ; i++ {
		h, _, err := a.ReadPDU()
		if err != nil {
			break
		}
		if i > 100 || h.BHS.Opcode() == pdu.OpSCSIResponse {
			t.Fatalf("the fenced connection is still open (%v)", h.BHS.Opcode())
		}
	}
	dev := tg.Devices[0].Bytes()
	if dev[8*512] == 0xee {
		t.Fatal("a write of the fenced holder landed after the takeover")
	}
	if dev[0] != 0xaa {
		t.Fatal("the holder's acknowledged write is lost")
	}
	stopB()
	leaseWrite(t, b, 8, bytes.Repeat([]byte{0xbb}, 512))

	li := leaseOf(t, tg)
	if li.Holder != nameB || li.Epoch != 2 || li.Counters.Takeovers != 1 || li.Counters.Fenced != 1 {
		t.Fatalf("lease %+v", li)
	}
	if len(li.Fenced) != 1 || li.Fenced[0].InitiatorName != nameA || li.Fenced[0].ISID != a.ISID.String() || li.Fenced[0].Epoch != 2 {
		t.Fatalf("fenced %+v", li.Fenced)
	}
	if !tg.Log.Contains("lease: taken over; previous holder fenced") {
		t.Fatal("the takeover is not logged")
	}

	// Session recovery of the fenced nexus is refused for good.
	stopB = pingAnswerer(t, b) // B stays alive meanwhile
	defer stopB()
	_, st := leaseLogin(t, tg, nameA, 1)
	wantLeaseStatus(t, "fenced reinstatement", st, pdu.LoginAuthorizationFailure)
	// A fresh session of A is an ordinary initiator: refused while B lives.
	_, st = leaseLogin(t, tg, nameA, 2)
	wantLeaseStatus(t, "fresh login of the old holder", st, pdu.LoginServiceUnavailable)
	li = leaseOf(t, tg)
	if li.Counters.RefusedFenced != 1 {
		t.Fatalf("counters %+v", li.Counters)
	}
	// The same through Stats, which the metrics exporter reads.
	if ns := tg.Server.Stats().Nodes[0]; !ns.SingleWriter || !ns.LeaseHeld || ns.LeaseEpoch != 2 ||
		ns.LeaseTakeovers != 1 || ns.FencedLogins != 1 || ns.FencedNexuses != 1 || ns.LeaseRefusedBusy < 6 {
		t.Fatalf("Stats: %+v", ns)
	}
	if dev := tg.Devices[0].Bytes(); dev[8*512] != 0xbb {
		t.Fatal("B's write is lost")
	}
}

func TestLeaseFenceIgnoresTSIH(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: leaseTimers})
	a, _ := leaseLogin(t, tg, nameA, 7)
	a.Close()
	b, _ := loginUntil(t, tg, nameB, 1, 500)
	defer b.Close()
	// A fenced nexus is refused whatever TSIH it names.
	for _, tsih := range []uint16{0, 1, 0x1234} {
		c := dial(t, tg)
		c.InitiatorName, c.TSIH = nameA, tsih
		c.ISID[5] = 7
		err := c.Login(targettest.LoginOptions{Target: tg.IQN})
		var lf *targettest.ErrLoginFailed
		if !errors.As(err, &lf) {
			t.Fatalf("TSIH %d: fenced nexus logged in (%v)", tsih, err)
		}
		if tsih == 0 && lf.Status != pdu.LoginAuthorizationFailure {
			t.Fatalf("TSIH 0: status 0x%04x", lf.Status)
		}
		c.Close()
	}
}

func TestLeaseReleaseByOperator(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	a, _ := leaseLogin(t, tg, nameA, 1)
	defer a.Close()
	a2, _ := leaseLogin(t, tg, nameA, 2)
	defer a2.Close()
	li, released, err := tg.Server.ReleaseLease(tg.IQN)
	if err != nil || !released {
		t.Fatalf("release: %v %v", released, err)
	}
	if li.Holder != "" || li.Epoch != 2 || len(li.Fenced) != 2 || len(li.Sessions) != 0 {
		t.Fatalf("after release %+v", li)
	}
	for _, c := range []*targettest.Client{a, a2} {
		for i := 0; ; i++ {
			if _, _, err := c.ReadPDU(); err != nil {
				break
			}
			if i > 100 {
				t.Fatal("a session of the released holder is still open")
			}
		}
	}
	if _, again, err := tg.Server.ReleaseLease(tg.IQN); err != nil || again {
		t.Fatalf("second release: %v %v", again, err)
	}
	if _, _, err := tg.Server.ReleaseLease("iqn.2026-11.test:nope"); !errors.Is(err, target.ErrNoSuchTarget) {
		t.Fatalf("unknown target: %v", err)
	}
	_, st := leaseLogin(t, tg, nameA, 1)
	wantLeaseStatus(t, "released nexus", st, pdu.LoginAuthorizationFailure)
	// A fresh session of the released holder may not take the free lease
	// (libiscsi reconnects with a new ISID); another initiator may.
	_, st = leaseLogin(t, tg, nameA, 3)
	wantLeaseStatus(t, "released holder, fresh session", st, pdu.LoginServiceUnavailable)
	if li := leaseOf(t, tg); li.Barred != nameA {
		t.Fatalf("no bar after release: %+v", li)
	}
	b, st := leaseLogin(t, tg, nameB, 1)
	if b == nil {
		t.Fatalf("free lease refused: 0x%04x", st)
	}
	defer b.Close()
	li = leaseOf(t, tg)
	if li.Holder != nameB || li.Epoch != 3 || li.Counters.Released != 1 || li.Counters.Acquired != 2 {
		t.Fatalf("lease %+v", li)
	}
	if !tg.Log.Contains("lease: released by the operator") {
		t.Fatal("release not logged")
	}
	if li.Barred != "" {
		t.Fatalf("bar not lifted by another holder: %+v", li)
	}
	// The operator can lift the bar of a released holder.
	b.Close()
	if _, _, err := tg.Server.ReleaseLease(tg.IQN); err != nil {
		t.Fatal(err)
	}
	_, st = leaseLogin(t, tg, nameB, 2)
	wantLeaseStatus(t, "barred", st, pdu.LoginServiceUnavailable)
	if _, lifted, err := tg.Server.AllowLease(tg.IQN); err != nil || !lifted {
		t.Fatalf("allow: %v %v", lifted, err)
	}
	b2, st := leaseLogin(t, tg, nameB, 2)
	if b2 == nil {
		t.Fatalf("allowed holder refused: 0x%04x", st)
	}
	b2.Close()
	if li := leaseOf(t, tg); li.Holder != nameB || li.Epoch != 5 {
		t.Fatalf("lease %+v", li)
	}
}

func TestLeasePersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *target.Config) {
		c.StateDir = dir
		c.NOPInterval = time.Second // restart grace 3 s
		c.NOPTimeout = 2 * time.Second
	}
	tg1 := targettest.Start(t, targettest.Options{Configure: cfg})
	a, _ := leaseLogin(t, tg1, nameA, 1)
	a.Close()
	b, _ := loginUntil(t, tg1, nameB, 1, 500) // A fenced
	before := leaseOf(t, tg1)
	b.Close()
	tg1.Server.Close()

	// A temporary file left by a crash mid-write is removed at start.
	if err := os.WriteFile(filepath.Join(dir, ".lease.json.tmp-1"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg2 := targettest.Start(t, targettest.Options{Configure: cfg})
	after := leaseOf(t, tg2)
	if after.Holder != before.Holder || after.Epoch != before.Epoch || len(after.Fenced) != 1 ||
		after.Fenced[0] != before.Fenced[0] || !after.Since.Equal(before.Since) {
		t.Fatalf("lease changed across the restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if after.GraceUntil.IsZero() || !after.HolderAlive {
		t.Fatalf("no restart grace: %+v", after)
	}
	// In the grace, another initiator is refused and the fence holds...
	_, st := leaseLogin(t, tg2, nameA, 2)
	wantLeaseStatus(t, "grace", st, pdu.LoginServiceUnavailable)
	_, st = leaseLogin(t, tg2, nameA, 1)
	wantLeaseStatus(t, "fenced after restart", st, pdu.LoginAuthorizationFailure)
	// ...and the holder reconnects with its nexus.
	b2, st := leaseLogin(t, tg2, nameB, 1)
	if b2 == nil {
		t.Fatalf("holder reconnect after restart refused: 0x%04x", st)
	}
	leaseWrite(t, b2, 0, bytes.Repeat([]byte{0xb2}, 512))
	b2.Close()
	li := leaseOf(t, tg2)
	if li.Epoch != before.Epoch || li.Holder != nameB {
		t.Fatalf("reconnect changed the lease: %+v", li)
	}
	// Without the holder, the lease is taken over once it is silent.
	c, _ := loginUntil(t, tg2, nameA, 3, 500)
	c.Close()
	tg2.Server.Close()

	raw, err := os.ReadFile(filepath.Join(dir, "lease.json"))
	if err != nil || !bytes.Contains(raw, []byte(nameA)) {
		t.Fatalf("state file: %v\n%s", err, raw)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".lease.json.tmp-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

func TestLeaseGraceExpiresWithoutHolder(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *target.Config) {
		c.StateDir = dir
		c.NOPInterval = time.Second // restart grace 2 s
		c.NOPTimeout = time.Second
	}
	tg1 := targettest.Start(t, targettest.Options{Configure: cfg})
	a, _ := leaseLogin(t, tg1, nameA, 1)
	a.Close()
	tg1.Server.Close()
	tg2 := targettest.Start(t, targettest.Options{Configure: cfg})
	_, st := leaseLogin(t, tg2, nameB, 1)
	wantLeaseStatus(t, "in grace", st, pdu.LoginServiceUnavailable)
	b, _ := loginUntil(t, tg2, nameB, 1, 500)
	b.Close()
	if li := leaseOf(t, tg2); li.Holder != nameB || li.Epoch != 2 || len(li.Fenced) != 1 {
		t.Fatalf("lease %+v", li)
	}
}

func TestLeaseStateErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lease.json"), []byte(`{"version":1,"targets":`), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := targettest.Start(t, targettest.Options{})
	_, err := target.NewServer(target.Config{Nodes: []*target.Node{{Name: tg.IQN, Router: tg.Router}}, StateDir: dir})
	if err == nil {
		t.Fatal("a truncated lease state was accepted")
	}
	// A state that cannot be written refuses the change.
	gone := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	tg2 := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) { c.StateDir = gone }})
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	_, st := leaseLogin(t, tg2, nameA, 1)
	wantLeaseStatus(t, "unsaved lease", st, pdu.LoginTargetError)
	if li := leaseOf(t, tg2); li.Holder != "" || li.Counters.PersistErrors != 1 {
		t.Fatalf("lease changed without being saved: %+v", li)
	}
}

func TestLeaseSharedModeUnaffected(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) { c.AccessMode = target.AccessShared }})
	a, st := leaseLogin(t, tg, nameA, 1)
	if a == nil {
		t.Fatalf("A refused: 0x%04x", st)
	}
	defer a.Close()
	b, st := leaseLogin(t, tg, nameB, 1)
	if b == nil {
		t.Fatalf("B refused in shared mode: 0x%04x", st)
	}
	defer b.Close()
	leaseWrite(t, a, 0, bytes.Repeat([]byte{1}, 512))
	leaseWrite(t, b, 1, bytes.Repeat([]byte{2}, 512))
	li := leaseOf(t, tg)
	if li.Access != target.AccessShared || li.Holder != "" || len(li.Sessions) != 2 {
		t.Fatalf("lease %+v", li)
	}
	if _, _, err := tg.Server.ReleaseLease(tg.IQN); err == nil {
		t.Fatal("release in shared mode succeeded")
	}
}

// TestLeaseTakeoverWaitsForExecutingWrite: a write of the old holder that
// is executing in the backstore (a disk that cannot be interrupted) keeps
// the takeover login from completing until it has finished; the new holder
// is told to retry (0x0301) meanwhile.
func TestLeaseTakeoverWaitsForExecutingWrite(t *testing.T) {
	var fd *faulty.Device
	tg := targettest.Start(t, targettest.Options{
		Configure: func(c *target.Config) {
			c.NOPInterval, c.NOPTimeout = 100*time.Millisecond, 300*time.Millisecond
			c.LoginTimeout = time.Second
		},
		Wrap: func(_ int, d backstore.Device) backstore.Device {
			fd = faulty.Wrap(d)
			return fd
		},
	})
	// A failing test must not leave the hung write holding the server's
	// Close (cleanups run last-registered first).
	t.Cleanup(fd.Clear)
	a, _ := leaseLogin(t, tg, nameA, 1)
	defer a.Close()
	leaseWrite(t, a, 0, bytes.Repeat([]byte{0xa0}, 512)) // past the unit attention
	fd.Inject(faulty.Rule{Ops: faulty.Write, Kind: faulty.Hang, Off: 100 * 512, Len: 512})
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, InitiatorTaskTag: a.NextITT(),
		ExpectedDataTransferLn: 512, CmdSN: a.CmdSN, ExpStatSN: a.ExpStatSN}
	copy(cmd.CDB[:], cdbWrite10(100, 1))
	a.CmdSN++
	var h pdu.BHS
	cmd.Marshal(&h)
	if err := a.WritePDU(&h, nil, bytes.Repeat([]byte{0xa1}, 512)); err != nil {
		t.Fatal(err)
	}
	for i := 0; fd.InFlight() == 0; i++ {
		if i > 500 {
			t.Fatal("the write never reached the device")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A is silent from now on; once it is dead by the liveness rule
	// (interval + timeout = 400 ms), B's login takes the lease over but
	// cannot complete while the write runs.
	time.Sleep(time.Second)
	for i := 0; i < 2; i++ {
		_, st := leaseLogin(t, tg, nameB, 1)
		wantLeaseStatus(t, "takeover during an executing write", st, pdu.LoginServiceUnavailable)
		if fd.InFlight() != 1 {
			t.Fatal("the hung write is no longer executing")
		}
	}
	if li := leaseOf(t, tg); li.Holder != nameB || li.Epoch != 2 || len(li.Fenced) != 1 {
		t.Fatalf("lease %+v", li)
	}
	fd.Clear()
	fd.Release()
	b, refused := loginUntil(t, tg, nameB, 1, 500)
	defer b.Close()
	if fd.InFlight() != 0 {
		t.Fatal("B's login completed while A's write was executing")
	}
	t.Logf("B refused %d more times after the write finished", refused)
	// A fresh write of B wins over A's: nothing of A lands later.
	leaseWrite(t, b, 100, bytes.Repeat([]byte{0xb1}, 512))
	if dev := tg.Devices[0].Bytes(); dev[100*512] != 0xb1 {
		t.Fatal("B's write was overwritten")
	}
}

// A holder whose sessions keep ending without a logout (dropped
// connections; libiscsi picks a new ISID for every reconnect) is never
// locked out by the size of its ISID list: the oldest ISID without a
// session is forgotten to make room.
func TestLeaseHolderNexusListForgetsIdle(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{Quiet: true, Configure: func(c *target.Config) {
		c.MaxConnectionsPerSource = 1 << 14
	}})
	const n = 4096 + 8
	for i := 0; i < n; i++ {
		c := dial(t, tg)
		c.InitiatorName = nameA
		binary.BigEndian.PutUint16(c.ISID[4:], uint16(i))
		if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			t.Fatalf("login %d of the holder: %v", i, err)
		}
		c.Close() // dropped, no logout
	}
	li := leaseOf(t, tg)
	if li.Holder != nameA || len(li.HolderNexuses) != 4096 {
		t.Fatalf("holder %s with %d nexuses, want %s with 4096", li.Holder, len(li.HolderNexuses), nameA)
	}
	var first pdu.ISID
	first[0], first[1], first[2], first[3] = 0x80, 0x12, 0x34, 0x56
	for _, id := range li.HolderNexuses {
		if id == first.String() {
			t.Fatal("the oldest idle ISID is still recorded")
		}
	}
}
