package main

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// testDaemon runs a daemon from YAML text whose "DIR" is replaced by a
// temporary directory; setConfig changes what the next reload reads.
type testDaemon struct {
	t    *testing.T
	dir  string
	d    *daemon
	addr string
	yaml string
}

func parseYAML(t *testing.T, text string) (*config.File, config.Diags) {
	t.Helper()
	f, ds := config.Parse([]byte(text))
	return f, ds
}

func startDaemon(t *testing.T, yaml string) *testDaemon {
	t.Helper()
	return startDaemonIn(t, t.TempDir(), yaml)
}

func startDaemonIn(t *testing.T, dir, yaml string) *testDaemon {
	t.Helper()
	td := &testDaemon{t: t, dir: dir}
	td.setConfig(yaml)
	f, ds := parseYAML(t, td.yaml)
	if err := ds.Err("test"); err != nil {
		t.Fatal(err)
	}
	lg := logrus.New()
	lg.Out = os.Stderr
	lg.SetLevel(logrus.WarnLevel)
	d := &daemon{stateDir: dir, log: logrus.NewEntry(lg)}
	d.load = func() (*config.File, config.Diags, error) {
		f, ds := parseYAML(t, td.yaml)
		return f, ds, nil
	}
	nodes, err := d.start(f)
	if err != nil {
		t.Fatal(err)
	}
	// No failure delay: refused logins answer at once in tests.
	srv, err := target.NewServer(target.Config{Nodes: nodes, Log: d.log, Auth: target.AuthConfig{FailureDelay: -1},
		AccessMode: target.AccessMode(f.Access)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.attach(srv); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		if err := d.closeAll(); err != nil {
			t.Error(err)
		}
	})
	td.d, td.addr = d, l.Addr().String()
	return td
}

func (td *testDaemon) setConfig(yaml string) {
	td.yaml = strings.ReplaceAll(yaml, "DIR", td.dir)
}

func (td *testDaemon) login(initiator, iqn string) (*targettest.Client, error) {
	return td.loginWith(initiator, targettest.LoginOptions{Target: iqn})
}

func (td *testDaemon) loginWith(initiator string, o targettest.LoginOptions) (*targettest.Client, error) {
	c, err := targettest.Dial(td.addr)
	if err != nil {
		td.t.Fatal(err)
	}
	td.t.Cleanup(func() { c.Close() })
	c.InitiatorName = initiator
	return c, c.Login(o)
}

// attach logs ini in to iqn and takes the power-on unit attention (29/00)
// on each of luns.
func (td *testDaemon) attach(iqn string, luns ...uint16) *targettest.Client {
	td.t.Helper()
	c, err := td.login(ini, iqn)
	if err != nil {
		td.t.Fatal(err)
	}
	for _, lun := range luns {
		expectUA(td.t, c, lun, 0x29, 0x00)
	}
	return c
}

// cmd runs cdb on lun and returns status, ASC and ASCQ.
func cmd(t *testing.T, c *targettest.Client, lun uint16, cdb []byte, readLen uint32) (*targettest.Result, byte, byte) {
	t.Helper()
	r, err := c.Command(cdb, nil, readLen, targettest.CommandOptions{LUN: scsi.EncodeLUN(lun)})
	if err != nil {
		t.Fatalf("command %x on LUN %d: %v", cdb[0], lun, err)
	}
	_, asc, ascq := r.SenseKey()
	return r, asc, ascq
}

var turCDB = []byte{0, 0, 0, 0, 0, 0}

func expectUA(t *testing.T, c *targettest.Client, lun uint16, asc, ascq byte) {
	t.Helper()
	r, a, q := cmd(t, c, lun, turCDB, 0)
	if r.Status != 2 || a != asc || q != ascq {
		t.Fatalf("LUN %d: status %d sense %02x/%02x, want CHECK CONDITION %02x/%02x", lun, r.Status, a, q, asc, ascq)
	}
	if r, _, _ = cmd(t, c, lun, turCDB, 0); r.Status != 0 {
		t.Fatalf("LUN %d: second TEST UNIT READY status %d", lun, r.Status)
	}
}

func reportLUNs(t *testing.T, c *targettest.Client) []uint16 {
	t.Helper()
	r, _, _ := cmd(t, c, 0, []byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 256)
	if r.Status != 0 {
		t.Fatalf("REPORT LUNS status %d", r.Status)
	}
	var ids []uint16
	for i := 8; i+8 <= len(r.Data); i += 8 {
		id, _ := scsi.DecodeLUN(binary.BigEndian.Uint64(r.Data[i:]))
		ids = append(ids, id)
	}
	return ids
}

const (
	iqnA = "iqn.2026-11.test:a"
	iqnB = "iqn.2026-11.test:b"
	iqnC = "iqn.2026-11.test:c"
	ini  = "iqn.2026-11.test:initiator"
)

const confV1 = `
nop_interval: 5s
targets:
  - name: iqn.2026-11.test:a
    luns:
      - {path: DIR/a0.img, size: 1MiB}
      - {path: DIR/a1.img, size: 1MiB}
  - name: iqn.2026-11.test:b
    luns:
      - {path: DIR/b0.img, size: 1MiB}
`

const confV2 = `
nop_interval: 5s
targets:
  - name: iqn.2026-11.test:a
    max_sessions: 4
    luns:
      - {path: DIR/a0.img, size: 1MiB}
      - {id: 2, path: DIR/a2.img, size: 2MiB}
  - name: iqn.2026-11.test:c
    luns:
      - {path: DIR/c0.img, size: 1MiB}
`

func TestReloadKeepsUnaffectedSessions(t *testing.T) {
	td := startDaemon(t, confV1)
	a := td.attach(iqnA, 0, 1)
	b := td.attach(iqnB, 0)

	td.setConfig(confV2)
	res, err := td.d.reload()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.AddedTargets, ",") != iqnC || strings.Join(res.RemovedTargets, ",") != iqnB ||
		strings.Join(res.AddedLUNs, ",") != iqnA+"/2" || strings.Join(res.RemovedLUNs, ",") != iqnA+"/1" {
		t.Fatalf("reload result %+v", res)
	}
	// The session to A survives; LUN 0 reports the inventory change.
	expectUA(t, a, 0, 0x3F, 0x0E)
	if got := reportLUNs(t, a); len(got) != 2 || got[0] != 0 || got[1] != 2 {
		t.Fatalf("REPORT LUNS after reload = %v, want [0 2]", got)
	}
	if r, asc, _ := cmd(t, a, 1, turCDB, 0); r.Status != 2 || asc != 0x25 {
		t.Fatalf("removed LUN 1: status %d asc %02x, want LOGICAL UNIT NOT SUPPORTED", r.Status, asc)
	}
	expectUA(t, a, 2, 0x29, 0x00)
	// B's session was closed; B is gone, C is served.
	if _, err := b.Command(turCDB, nil, 0, targettest.CommandOptions{}); err == nil {
		t.Fatal("session of the removed target still answers")
	}
	if _, err := td.login(ini, iqnB); err == nil {
		t.Fatal("login to the removed target succeeded")
	}
	if _, err := td.login(ini, iqnC); err != nil {
		t.Fatalf("login to the added target: %v", err)
	}
	if n := td.d.srv.Node(iqnA); n == nil || n.MaxSessions != 4 {
		t.Fatalf("target settings not updated: %+v", n)
	}
}

func TestReloadRefusesBadFile(t *testing.T) {
	td := startDaemon(t, confV1)
	a := td.attach(iqnA, 0)
	for name, bad := range map[string]string{
		"syntax":         "targets: [",
		"unknown key":    strings.Replace(confV2, "max_sessions", "max_session", 1),
		"missing file":   strings.Replace(confV2, "{id: 2, path: DIR/a2.img, size: 2MiB}", "{id: 2, path: DIR/nope/a2.img}", 1),
		"missing secret": confV2 + "    chap: {users: [{user: u, secret_env: ISCSI_TARGET_TEST_UNSET_VAR}]}\n",
	} {
		td.setConfig(bad)
		if _, err := td.d.reload(); err == nil {
			t.Fatalf("%s: reload accepted a bad file", name)
		}
	}
	// Nothing changed: no unit attention, both LUNs, B still served.
	if r, _, _ := cmd(t, a, 0, turCDB, 0); r.Status != 0 {
		t.Fatalf("refused reload raised a unit attention (status %d)", r.Status)
	}
	if got := reportLUNs(t, a); len(got) != 2 || got[1] != 1 {
		t.Fatalf("REPORT LUNS after refused reloads = %v", got)
	}
	if _, err := td.login(ini, iqnB); err != nil {
		t.Fatalf("target B after refused reloads: %v", err)
	}
	if _, err := os.Stat(filepath.Join(td.dir, "c0.img")); err == nil {
		t.Log("note: a refused reload may leave newly created backing files")
	}
}

func TestResizeRaisesCapacityChanged(t *testing.T) {
	td := startDaemon(t, confV1)
	a := td.attach(iqnA, 0, 1)
	if _, _, err := td.d.resize(iqnA, 0, 1<<19); err == nil {
		t.Fatal("shrinking was accepted")
	}
	if _, _, err := td.d.resize(iqnA, 7, 0); err == nil {
		t.Fatal("resize of a missing LUN was accepted")
	}
	blocks, bs, err := td.d.resize(iqnA, 0, 4<<20)
	if err != nil || blocks != 8192 || bs != 512 {
		t.Fatalf("resize = %d, %d, %v", blocks, bs, err)
	}
	expectUA(t, a, 0, 0x2A, 0x09)
	r, _, _ := cmd(t, a, 0, []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8)
	if last := binary.BigEndian.Uint32(r.Data); r.Status != 0 || last != 8191 {
		t.Fatalf("READ CAPACITY: status %d last LBA %d, want 8191", r.Status, last)
	}
	// A file grown behind the daemon's back is seen at the next reload.
	if err := os.Truncate(filepath.Join(td.dir, "a1.img"), 3<<20); err != nil {
		t.Fatal(err)
	}
	res, err := td.d.reload()
	if err != nil || strings.Join(res.Resized, ",") != iqnA+"/1" {
		t.Fatalf("reload after growing a1.img: %+v %v", res, err)
	}
	expectUA(t, a, 1, 0x2A, 0x09)
}

func (td *testDaemon) loginCHAP(initiator, iqn, user, secret string) error {
	_, err := td.loginWith(initiator, targettest.LoginOptions{Target: iqn, CHAP: &targettest.CHAP{User: user, Secret: secret}})
	return err
}

const confSecurity = `
access: shared
targets:
  - name: iqn.2026-11.test:a
    luns:
      - {path: DIR/a0.img, size: 1MiB}
    chap:
      users: [{user: alice, secret_file: DIR/alice.secret}]
  - name: iqn.2026-11.test:b
    luns:
      - {path: DIR/b0.img, size: 1MiB}
    acl:
      allow: ["iqn.2026-11.test:*"]
`

// TestReloadSecurity: per-target CHAP and access lists from the file; a
// reload re-reads secret files, and sessions a new access list refuses
// are closed while allowed ones keep running.
func TestReloadSecurity(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "alice.secret")
	if err := os.WriteFile(secret, []byte("first-secret-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	td := startDaemonIn(t, dir, confSecurity)
	if _, err := td.login(ini, iqnA); loginStatus(err) != 0x0201 {
		t.Fatalf("login to a CHAP target without CHAP: %v", err)
	}
	if err := td.loginCHAP(ini, iqnA, "alice", "first-secret-123"); err != nil {
		t.Fatalf("CHAP login with the secret from the file: %v", err)
	}
	// B has no CHAP (the server-wide default) and an ACL.
	keep, err := td.login("iqn.2026-11.test:keep", iqnB)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := td.login("iqn.2026-11.test:gone", iqnB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := td.login("iqn.1999-01.other:x", iqnB); loginStatus(err) != 0x0202 {
		t.Fatalf("initiator outside the ACL: %v", err)
	}
	expectUA(t, keep, 0, 0x29, 0)

	if err := os.WriteFile(secret, []byte("second-secret-456"), 0o600); err != nil {
		t.Fatal(err)
	}
	td.setConfig(strings.Replace(confSecurity, `allow: ["iqn.2026-11.test:*"]`, `allow: ["iqn.2026-11.test:*"]
      deny: ["*:gone"]`, 1))
	res, err := td.d.reload()
	if err != nil {
		t.Fatal(err)
	}
	if res.ClosedSessions != 1 || strings.Join(res.ChangedTargets, ",") != iqnB {
		t.Fatalf("reload result %+v", res)
	}
	if _, err := gone.Command(turCDB, nil, 0, targettest.CommandOptions{}); err == nil {
		t.Fatal("a session the new ACL refuses still answers")
	}
	if r, _, _ := cmd(t, keep, 0, turCDB, 0); r.Status != 0 {
		t.Fatalf("allowed session after reload: status %d", r.Status)
	}
	if err := td.loginCHAP(ini, iqnA, "alice", "first-secret-123"); loginStatus(err) != 0x0201 {
		t.Fatalf("old secret after reload: %v", err)
	}
	if err := td.loginCHAP(ini, iqnA, "alice", "second-secret-456"); err != nil {
		t.Fatalf("new secret after reload: %v", err)
	}
}

func loginStatus(err error) uint16 {
	var lf *targettest.ErrLoginFailed
	if errors.As(err, &lf) {
		return lf.Status
	}
	return 0xFFFF
}

// TestReloadChangesLUNOptions: a LUN whose options change is reopened on
// the same file; the session sees it come back with the new options.
func TestReloadChangesLUNOptions(t *testing.T) {
	td := startDaemon(t, confV1)
	a := td.attach(iqnA, 0)
	write := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	if r, err := a.Command(write, make([]byte, 512), 0, targettest.CommandOptions{}); err != nil || r.Status != 0 {
		t.Fatalf("write before: %v %+v", err, r)
	}
	td.setConfig(strings.Replace(confV1, "{path: DIR/a0.img, size: 1MiB}", "{path: DIR/a0.img, size: 1MiB, ro: true}", 1))
	res, err := td.d.reload()
	if err != nil || strings.Join(res.RemovedLUNs, ",") != iqnA+"/0" || strings.Join(res.AddedLUNs, ",") != iqnA+"/0" {
		t.Fatalf("reload: %+v %v", res, err)
	}
	expectUA(t, a, 0, 0x29, 0x00) // a new LU for this nexus
	r, err := a.Command(write, make([]byte, 512), 0, targettest.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if key, asc, _ := r.SenseKey(); r.Status != 2 || key != 0x7 || asc != 0x27 {
		t.Fatalf("write to the LUN reloaded read-only: status %d sense %x/%02x", r.Status, key, asc)
	}
}
