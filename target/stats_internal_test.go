package target

import (
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

func TestLoginResultOf(t *testing.T) {
	for _, tc := range []struct {
		status uint16
		want   LoginResult
	}{
		{pdu.LoginSuccess, LoginResultSuccess},
		{pdu.LoginTargetMovedTemp, LoginResultRedirect},
		{pdu.LoginAuthFailure, LoginResultAuthFailed},
		{pdu.LoginAuthorizationFailure, LoginResultAuthzFailed},
		{pdu.LoginNotFound, LoginResultNotFound},
		{pdu.LoginTargetRemoved, LoginResultNotFound},
		{pdu.LoginMissingParameter, LoginResultInitiatorError},
		{pdu.LoginUnsupportedVersion, LoginResultInitiatorError},
		{pdu.LoginServiceUnavailable, LoginResultUnavailable},
		{pdu.LoginOutOfResources, LoginResultTargetError},
		{0x7f00, LoginResultTargetError},
	} {
		if got := loginResultOf(tc.status); got != tc.want {
			t.Errorf("status 0x%04x: got %v, want %v", tc.status, got, tc.want)
		}
	}
	seen := map[string]bool{}
	for i := range NumLoginResults {
		n := LoginResult(i).String()
		if n == "" || seen[n] {
			t.Errorf("result %d: name %q empty or repeated", i, n)
		}
		seen[n] = true
	}
}

// TestStatsCHAPHookAndLeaseDefaults: chapFailure reaches Stats, and a
// fresh single-writer target reports a free lease.
func TestStatsCHAPHookAndLeaseDefaults(t *testing.T) {
	s, err := NewServer(Config{Nodes: []*Node{{Name: "iqn.2026-11.test:a", Router: newTestRouter(t)},
		{Name: "iqn.2026-11.test:b", Router: newTestRouter(t), AccessMode: AccessShared}}})
	if err != nil {
		t.Fatal(err)
	}
	s.stats.chapFailure()
	s.stats.chapFailure()
	st := s.Stats()
	if st.CHAPFailures != 2 {
		t.Errorf("CHAP failures %d, want 2", st.CHAPFailures)
	}
	a, b := st.Nodes[0], st.Nodes[1]
	if !a.SingleWriter || a.LeaseHeld || a.LeaseEpoch != 0 || a.LeaseTakeovers != 0 || a.FencedNexuses != 0 {
		t.Errorf("target a: %+v", a)
	}
	if b.SingleWriter {
		t.Errorf("target b is shared: %+v", b)
	}
}

func newTestRouter(t *testing.T) *scsi.Router {
	t.Helper()
	lu, err := scsi.NewLU(scsi.LUConfig{Device: backstore.NewMemory(1 << 20), Serial: "stats0"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := scsi.NewRouter([]*scsi.LU{lu})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
