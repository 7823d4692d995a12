package target_test

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

const (
	initUser     = "user1"
	initSecret   = "user1-secret-1"
	targetUser   = "target1"
	targetSecret = "target1-secret-2"
	discUser     = "disc1"
	discSecret   = "disc1-secret-33"
)

func chapTarget(t testing.TB, mutate func(*target.Config)) *targettest.Target {
	t.Helper()
	return targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.Auth = target.AuthConfig{
			Session: &chap.TargetConfig{
				Initiator: chap.Credential{User: initUser, Secret: []byte(initSecret)},
				Target:    &chap.Credential{User: targetUser, Secret: []byte(targetSecret)},
			},
			Discovery: &chap.TargetConfig{
				Initiator: chap.Credential{User: discUser, Secret: []byte(discSecret)},
			},
			FailureDelay: 10 * time.Millisecond,
		}
		if mutate != nil {
			mutate(c)
		}
	}})
}

// noLeak fails when the target's log contains any of the values.
func noLeak(t testing.TB, tg *targettest.Target, values ...string) {
	t.Helper()
	log := tg.Log.String()
	for _, v := range append([]string{initSecret, targetSecret, discSecret}, values...) {
		if v != "" && strings.Contains(log, v) {
			t.Errorf("target log contains %q", v)
		}
	}
}

func chapDial(t *testing.T, tg *targettest.Target) *targettest.Client {
	t.Helper()
	c, err := targettest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantStatus(t *testing.T, err error, status uint16) {
	t.Helper()
	var lf *targettest.ErrLoginFailed
	if !errors.As(err, &lf) || lf.Status != status {
		t.Fatalf("got %v, want login failure 0x%04x", err, status)
	}
}

func TestCHAPLoginEachAlgorithm(t *testing.T) {
	tg := chapTarget(t, nil)
	for _, tc := range []struct {
		offer string
		want  chap.Algorithm
	}{{"5", chap.MD5}, {"6", chap.SHA1}, {"7", chap.SHA256}, {"8", chap.SHA3256}, {"5,6,7,8", chap.SHA3256}, {"5,7", chap.SHA256}} {
		t.Run(tc.offer, func(t *testing.T) {
			c := chapDial(t, tg)
			a := &targettest.CHAP{User: initUser, Secret: initSecret, Algorithms: tc.offer}
			if err := c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: a}); err != nil {
				t.Fatal(err)
			}
			if a.Selected != tc.want {
				t.Errorf("selected %v, want %v", a.Selected, tc.want)
			}
			if len(a.TargetChallenge) < tc.want.Size() {
				t.Errorf("challenge of %d bytes for %v", len(a.TargetChallenge), tc.want)
			}
			res, err := c.Command([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36, targettest.CommandOptions{})
			if err != nil || res.Status != 0 || len(res.Data) != 36 {
				t.Fatalf("INQUIRY after CHAP: %v %+v", err, res)
			}
			noLeak(t, tg, hex.EncodeToString(a.TargetChallenge), strings.TrimPrefix(a.InitiatorResponse, "0x"))
		})
	}
	if s := tg.Server.AuthStats(); s.Successes != 6 || s.Failures != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestCHAPMutual(t *testing.T) {
	tg := chapTarget(t, nil)
	c := chapDial(t, tg)
	a := &targettest.CHAP{User: initUser, Secret: initSecret, Algorithms: "7", TargetUser: targetUser, TargetSecret: targetSecret}
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: a}); err != nil {
		t.Fatal(err)
	}
	// The initiator detects a target that does not know the secret.
	c2 := chapDial(t, tg)
	a2 := &targettest.CHAP{User: initUser, Secret: initSecret, TargetUser: targetUser, TargetSecret: "not-the-target-secret"}
	if err := c2.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: a2}); !errors.Is(err, targettest.ErrTargetAuth) {
		t.Fatalf("got %v, want ErrTargetAuth", err)
	}
	noLeak(t, tg, "not-the-target-secret")
}

func TestCHAPFailures(t *testing.T) {
	tg := chapTarget(t, nil)
	for _, tc := range []struct {
		name string
		chap *targettest.CHAP
		skip bool
	}{
		{"wrong secret", &targettest.CHAP{User: initUser, Secret: "wrong-secret-777"}, false},
		{"empty secret", &targettest.CHAP{User: initUser, Secret: ""}, false},
		{"wrong user", &targettest.CHAP{User: "user2", Secret: initSecret}, false},
		{"missing secret (AuthMethod=None)", nil, false},
		{"security stage skipped", nil, true},
		{"unsupported CHAP_A", &targettest.CHAP{User: initUser, Secret: initSecret, Algorithms: "4,9"}, false},
		{"reflected challenge", &targettest.CHAP{User: initUser, Secret: initSecret, TargetUser: targetUser, TargetSecret: targetSecret, ReflectChallenge: true}, false},
		{"bad CHAP_I", &targettest.CHAP{User: initUser, Secret: initSecret, TargetUser: targetUser, TargetSecret: targetSecret, Identifier: "256"}, false},
		{"malformed CHAP_R", &targettest.CHAP{User: initUser, Secret: initSecret, Response: func(chap.Algorithm, byte, []byte) string { return "0xZZ" }}, false},
		{"response reflects challenge", &targettest.CHAP{User: initUser, Secret: initSecret, Response: func(_ chap.Algorithm, _ byte, c []byte) string { return chap.EncodeHex(c[:16]) }}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tg.Server.AuthStats().Failures
			c := chapDial(t, tg)
			err := c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: tc.chap, SkipSecurity: tc.skip})
			wantStatus(t, err, pdu.LoginAuthFailure)
			if got := tg.Server.AuthStats().Failures; got != before+1 {
				t.Errorf("failures %d, want %d", got, before+1)
			}
		})
	}
	log := tg.Log.String()
	for _, want := range []string{"wrong CHAP_R", "not the configured user", "CHAP required", "no acceptable algorithm",
		"reflects a challenge", "bad CHAP_I", "bad CHAP_R", "skipped the security stage", "initiator=\"iqn.2026-11.test:initiator\"", `remote="127.0.0.1:`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	noLeak(t, tg, "wrong-secret-777")
}

func TestCHAPTrailingNewlineHint(t *testing.T) {
	tg := chapTarget(t, nil)
	c := chapDial(t, tg)
	err := c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{User: initUser, Secret: initSecret + "\n"}})
	wantStatus(t, err, pdu.LoginAuthFailure)
	if !tg.Log.Contains("only by trailing whitespace") {
		t.Errorf("no whitespace hint in the log:\n%s", tg.Log.String())
	}
	noLeak(t, tg)
}

func TestCHAPDiscovery(t *testing.T) {
	tg := chapTarget(t, nil)
	// Discovery without credentials is refused.
	c := chapDial(t, tg)
	wantStatus(t, c.Login(targettest.LoginOptions{}), pdu.LoginAuthFailure)
	// Session credentials do not open discovery: it is configured apart.
	c = chapDial(t, tg)
	wantStatus(t, c.Login(targettest.LoginOptions{CHAP: &targettest.CHAP{User: initUser, Secret: initSecret}}), pdu.LoginAuthFailure)
	c = chapDial(t, tg)
	if err := c.Login(targettest.LoginOptions{CHAP: &targettest.CHAP{User: discUser, Secret: discSecret, Algorithms: "8"}}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.SendTargets("All")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := keys.Get("TargetName"); v != tg.IQN {
		t.Fatalf("SendTargets %v", keys)
	}
	noLeak(t, tg)
}

func TestCHAPFailureLimit(t *testing.T) {
	tg := chapTarget(t, func(c *target.Config) { c.Auth.FailureBurst = 2; c.Auth.FailureRefill = time.Hour })
	for range 2 {
		c := chapDial(t, tg)
		wantStatus(t, c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{User: initUser, Secret: "wrong-secret-777"}}), pdu.LoginAuthFailure)
	}
	// The right secret is now refused from this address.
	c := chapDial(t, tg)
	wantStatus(t, c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{User: initUser, Secret: initSecret}}), pdu.LoginAuthFailure)
	if s := tg.Server.AuthStats(); s.RateLimited != 1 || s.Failures != 3 {
		t.Errorf("stats %+v", s)
	}
	if !tg.Log.Contains("too many failed logins") {
		t.Error("no rate-limit message in the log")
	}
}

func TestCHAPEqualSecretsRefused(t *testing.T) {
	r, err := scsi.NewRouter(nil)
	if err != nil {
		t.Skip("router without LUNs not supported:", err)
	}
	_, err = target.NewServer(target.Config{
		Nodes: []*target.Node{{Name: "iqn.2026-11.test:t", Router: r}},
		Auth: target.AuthConfig{Session: &chap.TargetConfig{
			Initiator: chap.Credential{User: "u", Secret: []byte("same-secret-123")},
			Target:    &chap.Credential{User: "t", Secret: []byte("same-secret-123")},
		}},
	})
	if !errors.Is(err, chap.ErrEqualSecrets) {
		t.Fatalf("got %v, want ErrEqualSecrets", err)
	}
	_, err = target.NewServer(target.Config{
		Nodes: []*target.Node{{Name: "iqn.2026-11.test:t", Router: r}},
		Auth:  target.AuthConfig{Session: &chap.TargetConfig{Initiator: chap.Credential{User: "u", Secret: []byte("short")}}},
	})
	if err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Fatalf("short secret: %v", err)
	}
}

func TestACL(t *testing.T) {
	allowed := "iqn.2026-11.test:node-a"
	tg := targettest.Start(t, targettest.Options{Configure: func(c *target.Config) {
		c.Access = &target.ACL{Allow: []string{"iqn.2026-11.test:node-*"}, Deny: []string{"*:node-bad"}}
		c.Auth.FailureDelay = -1
		c.AccessMode = target.AccessShared // two allowed names log in at once
	}})
	for name, want := range map[string]uint16{
		allowed:                     0,
		"iqn.2026-11.test:node-bad": pdu.LoginAuthorizationFailure,
		"iqn.2026-11.test:other":    pdu.LoginAuthorizationFailure,
		"IQN.2026-11.TEST:NODE-B":   0,
	} {
		c := chapDial(t, tg)
		c.InitiatorName = name
		err := c.Login(targettest.LoginOptions{Target: tg.IQN})
		if want == 0 {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		var lf *targettest.ErrLoginFailed
		if !errors.As(err, &lf) || lf.Status != want {
			t.Errorf("%s: got %v, want 0x%04x", name, err, want)
		}
		// Discovery works, but the target is hidden from this name.
		d := chapDial(t, tg)
		d.InitiatorName = name
		if err := d.Login(targettest.LoginOptions{}); err != nil {
			t.Fatal(err)
		}
		keys, err := d.SendTargets("All")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := keys.Get("TargetName"); ok {
			t.Errorf("%s sees %v", name, keys)
		}
		keys, _ = d.SendTargets(tg.IQN)
		if _, ok := keys.Get("TargetName"); ok {
			t.Errorf("%s sees %v by name", name, keys)
		}
	}
	d := chapDial(t, tg)
	d.InitiatorName = allowed
	if err := d.Login(targettest.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	if keys, err := d.SendTargets("All"); err != nil || len(keys) == 0 {
		t.Errorf("allowed initiator: %v %v", keys, err)
	}
	if s := tg.Server.AuthStats(); s.Refused != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestIETRules(t *testing.T) {
	allow, err := target.ParseIETRules(strings.NewReader(`# comment
iqn.2026-11.test:target 10.0.0.0/8, iqn\.2026-11\.test:good.*
ALL [::1], 192.168.1.5, [3ffe:505:2:1::]/64
`), "initiators.allow")
	if err != nil {
		t.Fatal(err)
	}
	deny, err := target.ParseIETRules(strings.NewReader("ALL ALL\n"), "initiators.deny")
	if err != nil {
		t.Fatal(err)
	}
	acl := &target.ACL{IETAllow: allow, IETDeny: deny}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		target, init string
		addr         netip.Addr
		want         bool
	}{
		{"iqn.2026-11.test:target", "iqn.x:y", a("10.1.2.3"), true},
		{"iqn.2026-11.test:target", "iqn.2026-11.test:good-node", a("192.0.2.1"), true},
		{"iqn.2026-11.test:target", "iqn.x:y", a("192.0.2.1"), false},
		// The first line naming the target decides; ALL is not reached.
		{"iqn.2026-11.test:target", "iqn.x:y", a("192.168.1.5"), false},
		{"iqn.2026-11.test:other", "iqn.x:y", a("192.168.1.5"), true},
		{"iqn.2026-11.test:other", "iqn.x:y", a("::1"), true},
		{"iqn.2026-11.test:other", "iqn.x:y", a("3ffe:505:2:1::9"), true},
		{"iqn.2026-11.test:other", "iqn.x:y", a("3ffe:505:2:2::9"), false},
		{"iqn.2026-11.test:other", "iqn.2026-11.test:good-node", a("10.1.2.3"), false},
	} {
		if got, why := acl.Allowed(tc.target, tc.init, tc.addr); got != tc.want {
			t.Errorf("%s %s %v: got %v (%s), want %v", tc.target, tc.init, tc.addr, got, why, tc.want)
		}
	}
	// Without a deny file the allow file refuses nobody (ietd semantics).
	if ok, _ := (&target.ACL{IETAllow: allow}).Allowed("iqn.2026-11.test:target", "iqn.x:y", a("192.0.2.1")); !ok {
		t.Error("allow file alone refused an initiator")
	}
	for _, bad := range []string{"onlytarget\n", "ALL 10.0.0.0/99\n", "ALL [zz]\n", "ALL iqn(\n", "ALL 1.2.3\n"} {
		if _, err := target.ParseIETRules(strings.NewReader(bad), "f"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := (&target.ACL{Allow: []string{"iqn[.*"}}).Validate(); err == nil {
		t.Error("bad glob accepted")
	}
}

// TestRepeatedInitiatorName: libiscsi repeats InitiatorName in the second
// security-stage request when the target needs no authentication; the same
// value is accepted, a different one is not.
func TestRepeatedInitiatorName(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	for _, tc := range []struct {
		name string
		want uint16
	}{{"iqn.2026-11.test:initiator", 0}, {"iqn.2026-11.test:other", pdu.LoginInitiatorError}} {
		c := chapDial(t, tg)
		req := pdu.LoginRequest{CSG: pdu.StageSecurity, NSG: pdu.StageOperational, ISID: c.ISID, InitiatorTaskTag: 1}
		_, _, err := c.LoginPDU(req, pdu.Keys{{Key: "InitiatorName", Value: c.InitiatorName}, {Key: "SessionType", Value: "Normal"},
			{Key: "TargetName", Value: tg.IQN}, {Key: "AuthMethod", Value: "CHAP,None"}})
		if err != nil {
			t.Fatal(err)
		}
		req.Transit = true
		_, _, err = c.LoginPDU(req, pdu.Keys{{Key: "InitiatorName", Value: tc.name}})
		if tc.want == 0 && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != 0 {
			wantStatus(t, err, tc.want)
		}
	}
}

// TestCHAPFailureDelayIsPerConnection: a login waiting out its failure
// delay holds up neither other logins nor shutdown.
func TestCHAPFailureDelayIsPerConnection(t *testing.T) {
	tg := chapTarget(t, func(c *target.Config) { c.Auth.FailureDelay = time.Hour })
	bad := chapDial(t, tg)
	errc := make(chan error, 1)
	go func() {
		errc <- bad.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{User: initUser, Secret: "wrong-secret-777"}})
	}()
	// Wait until the target has refused it (the refusal is logged before
	// the delay starts).
	for i := 0; !tg.Log.Contains("wrong CHAP_R"); i++ {
		if i > 500 {
			t.Fatal("the failing login was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	good := chapDial(t, tg)
	if err := good.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{User: initUser, Secret: initSecret}}); err != nil {
		t.Fatalf("a good login while another waits out its delay: %v", err)
	}
	select {
	case err := <-errc:
		t.Fatalf("the failing login was answered before its delay: %v", err)
	default:
	}
	// Close ends the waiting login at once (no answer, connection closed).
	if err := tg.Server.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the failing login succeeded")
	}
}
