package target_test

import (
	"errors"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// shared: several initiator names per target (no single-writer lease).
var shared = targettest.Options{Configure: func(c *target.Config) { c.AccessMode = target.AccessShared }}

func newNode(t *testing.T, name string, maxSessions int) *target.Node {
	t.Helper()
	lu, err := scsi.NewLU(scsi.LUConfig{Device: backstore.NewMemory(1 << 20), Serial: "node-" + name[len(name)-1:]})
	if err != nil {
		t.Fatal(err)
	}
	r, err := scsi.NewRouter([]*scsi.LU{lu})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &target.Node{Name: name, Router: r, MaxSessions: maxSessions}
}

func loginAs(t *testing.T, addr, initiator, tgt string) (*targettest.Client, error) {
	t.Helper()
	c, err := targettest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.InitiatorName = initiator
	return c, c.Login(targettest.LoginOptions{Target: tgt})
}

func loginStatus(err error) uint16 {
	var lf *targettest.ErrLoginFailed
	if errors.As(err, &lf) {
		return lf.Status
	}
	return 0xFFFF
}

func TestAddAndRemoveNodeWhileServing(t *testing.T) {
	tg := targettest.Start(t, shared)
	const second = "iqn.2026-11.test:second"
	if _, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", second); loginStatus(err) != pdu.LoginNotFound {
		t.Fatalf("login to a target not yet added: %v", err)
	}
	if err := tg.Server.AddNode(newNode(t, second, 0)); err != nil {
		t.Fatal(err)
	}
	if err := tg.Server.AddNode(newNode(t, second, 0)); err == nil {
		t.Fatal("duplicate node accepted")
	}
	keep, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", tg.IQN)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", second)
	if err != nil {
		t.Fatalf("login to the added target: %v", err)
	}
	d, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", "")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := d.SendTargets("All")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, kv := range keys {
		if kv.Key == "TargetName" {
			names[kv.Value] = true
		}
	}
	if !names[second] || !names[tg.IQN] {
		t.Fatalf("SendTargets after AddNode: %v", keys)
	}

	if _, err := tg.Server.RemoveNode(second); err != nil {
		t.Fatal(err)
	}
	if !tg.Server.WaitSessions(second, nil) {
		t.Fatal("sessions of the removed node remain")
	}
	// The removed node's session is closed: its next command fails.
	if _, err := gone.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}); err == nil {
		t.Fatal("a command on a removed target's session succeeded")
	}
	// The other target's session is untouched.
	res, err := keep.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{})
	if err != nil || res.Status == 0xFF {
		t.Fatalf("session of the remaining target: %v", err)
	}
	if _, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-b", second); loginStatus(err) != pdu.LoginNotFound {
		t.Fatalf("login to a removed target: %v", err)
	}
	if _, err := tg.Server.RemoveNode(second); err == nil {
		t.Fatal("second RemoveNode succeeded")
	}
}

func TestMaxSessions(t *testing.T) {
	tg := targettest.Start(t, shared)
	const name = "iqn.2026-11.test:limited"
	if err := tg.Server.AddNode(newNode(t, name, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", name); err != nil {
		t.Fatal(err)
	}
	if _, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-b", name); loginStatus(err) != pdu.LoginOutOfResources {
		t.Fatalf("second session beyond MaxSessions 1: %v", err)
	}
	// Raising the limit with ReplaceNode lets the next login in.
	if err := tg.Server.ReplaceNode(&target.Node{Name: name, Router: tg.Server.Node(name).Router, MaxSessions: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-b", name); err != nil {
		t.Fatalf("login after raising MaxSessions: %v", err)
	}
	if err := tg.Server.ReplaceNode(&target.Node{Name: "iqn.2026-11.test:nope", Router: tg.Router}); err == nil {
		t.Fatal("ReplaceNode of an unknown node succeeded")
	}
}

func TestCloseSessionsByInitiator(t *testing.T) {
	tg := targettest.Start(t, shared)
	a, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-a", tg.IQN)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loginAs(t, tg.Addr, "iqn.2026-11.test:init-b", tg.IQN)
	if err != nil {
		t.Fatal(err)
	}
	n := tg.Server.CloseSessions(func(si target.SessionInfo) bool { return si.InitiatorName == "iqn.2026-11.test:init-b" }, "no longer allowed")
	if n != 1 {
		t.Fatalf("closed %d sessions, want 1", n)
	}
	if _, err := b.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}); err == nil {
		t.Fatal("closed session still answers")
	}
	if _, err := a.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}); err != nil {
		t.Fatalf("other session: %v", err)
	}
	if err := tg.Server.SetTimers(target.Timers{NOPInterval: 0, NOPTimeout: 0}); err == nil {
		t.Fatal("SetTimers accepted a zero NOPTimeout")
	}
}
