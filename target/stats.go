package target

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Statistics of the iSCSI layer. Counters are atomics bumped where the
// event happens (one-line hooks in conn.go, login.go and the CHAP, lease
// and fencing code); Server.Stats copies them, with the gauges it can
// compute (connections, sessions), into a Stats value that an exporter
// reads at scrape time. The target package knows nothing about Prometheus.
//
// Counter contract for code that records events (see the field comments):
//
//	s.stats.login(status)                         final Login Response sent
//	c.loginEnded(err)                             login phase over (counts "aborted")
//	s.stats.chapFailure()                         a CHAP response did not verify
//	s.stats.leaseChanged(target, held, epoch)     lease acquired, released or taken over
//	s.stats.leaseTakeover(target)                 the lease moved to another initiator
//	s.stats.fencedLogin(target)                   a login refused because its nexus is fenced
//
// target is always a configured node name (Node.Name), never a name an
// initiator sent that matched nothing: labels must stay bounded.

// LoginResult classifies how a login ended, from its final status (RFC
// 7143 §11.13.5).
type LoginResult uint8

// Login results.
const (
	LoginResultSuccess        LoginResult = iota // 0x0000, full feature phase reached
	LoginResultRedirect                          // 0x01xx
	LoginResultAuthFailed                        // 0x0201 authentication failure (CHAP, AuthMethod)
	LoginResultAuthzFailed                       // 0x0202 authorization failure (ACL)
	LoginResultNotFound                          // 0x0203, 0x0204 target not found or removed
	LoginResultInitiatorError                    // other 0x02xx: protocol, version, parameters
	LoginResultUnavailable                       // 0x0301 service unavailable (busy: lease held, reinstatement pending)
	LoginResultTargetError                       // other 0x03xx
	LoginResultAborted                           // a login began but got no final response: connection lost, timeout, malformed PDU
	// NumLoginResults is the number of results.
	NumLoginResults = int(iota)
)

var loginResultNames = [NumLoginResults]string{
	"success", "redirect", "authentication_failed", "authorization_failed", "not_found",
	"initiator_error", "unavailable", "target_error", "aborted",
}

// String returns the result's name, used as a metric label.
func (r LoginResult) String() string {
	if int(r) < NumLoginResults {
		return loginResultNames[r]
	}
	return "target_error"
}

// loginResultOf maps a Login Response status to its result.
func loginResultOf(status uint16) LoginResult {
	switch {
	case status == pdu.LoginSuccess:
		return LoginResultSuccess
	case status>>8 == 0x01:
		return LoginResultRedirect
	case status == pdu.LoginAuthFailure:
		return LoginResultAuthFailed
	case status == pdu.LoginAuthorizationFailure:
		return LoginResultAuthzFailed
	case status == pdu.LoginNotFound, status == pdu.LoginTargetRemoved:
		return LoginResultNotFound
	case status>>8 == 0x02:
		return LoginResultInitiatorError
	case status == pdu.LoginServiceUnavailable:
		return LoginResultUnavailable
	}
	return LoginResultTargetError
}

// serverStats are the Server's counters.
type serverStats struct {
	accepted     atomic.Uint64
	logins       [NumLoginResults]atomic.Uint64
	chapFailures atomic.Uint64
	panics       atomic.Uint64

	mu    sync.Mutex
	nodes map[string]*nodeCounters // by Node.Name; bounded by the configuration
}

// nodeCounters are the per-target counters and gauges.
type nodeCounters struct {
	leaseHeld      atomic.Bool
	leaseEpoch     atomic.Uint64
	leaseTakeovers atomic.Uint64
	fencedLogins   atomic.Uint64
}

// node returns the counters of the target called name, creating them.
func (st *serverStats) node(name string) *nodeCounters {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.nodes == nil {
		st.nodes = make(map[string]*nodeCounters)
	}
	n := st.nodes[name]
	if n == nil {
		n = new(nodeCounters)
		st.nodes[name] = n
	}
	return n
}

// login counts a login that ended with a final Login Response of status.
func (st *serverStats) login(status uint16) { st.logins[loginResultOf(status)].Add(1) }

// loginEnded counts a login phase that ended with err without a final
// Login Response (rejections are counted by login when the response went
// out, successes likewise). A connection closed before it sent any
// header bytes (a port probe, a TCP health check) is no login.
func (c *conn) loginEnded(err error) {
	if err != nil && !errors.Is(err, errLoginRejected) && c.hdr.BHS != (pdu.BHS{}) {
		c.srv.stats.logins[LoginResultAborted].Add(1)
	}
}

// chapFailure counts a CHAP exchange that failed (auth.go chapStep).
func (st *serverStats) chapFailure() { st.chapFailures.Add(1) }

// leaseChanged records the single-writer lease state of target: whether an
// initiator holds it and the lease epoch.
func (st *serverStats) leaseChanged(target string, held bool, epoch uint64) {
	n := st.node(target)
	n.leaseHeld.Store(held)
	n.leaseEpoch.Store(epoch)
}

// leaseTakeover counts a takeover of target's lease by another initiator.
func (st *serverStats) leaseTakeover(target string) { st.node(target).leaseTakeovers.Add(1) }

// fencedLogin counts a login to target refused because its I_T nexus was
// fenced.
func (st *serverStats) fencedLogin(target string) { st.node(target).fencedLogins.Add(1) }

// Stats is a snapshot of a Server's counters and gauges (Server.Stats).
type Stats struct {
	// Connections is the number of open TCP connections (login phase
	// included).
	Connections int
	// ConnectionsAccepted counts accepted TCP connections.
	ConnectionsAccepted uint64
	// DiscoverySessions is the number of discovery sessions.
	DiscoverySessions int
	// Logins counts finished logins, indexed by LoginResult.
	Logins [NumLoginResults]uint64
	// CHAPFailures counts CHAP exchanges that failed: a response that did
	// not verify, or CHAP keys that broke the exchange.
	CHAPFailures uint64
	// Auth is the security stage's counters (CHAP successes, 0x0201 and
	// 0x0202 answers, logins refused by the per-address failure limit).
	Auth AuthStats
	// Panics counts panics recovered in connection receivers and command
	// workers (each cost one connection or one command).
	Panics uint64
	// Listening is the number of listeners Serve is accepting on.
	Listening int
	// Closing is set once Shutdown or Close has begun.
	Closing bool
	// Limits counts what the resource limits refused or delayed.
	Limits LimitStats
	// Nodes has one entry per configured target, in configuration order.
	Nodes []NodeStats
}

// NodeStats is the snapshot of one target node.
type NodeStats struct {
	// Name is the target name.
	Name string
	// Sessions is the number of normal sessions logged in to the target.
	Sessions int
	// LeaseHeld reports whether an initiator holds the single-writer lease.
	LeaseHeld bool
	// LeaseEpoch is the lease epoch (it grows with every new holder).
	LeaseEpoch uint64
	// LeaseTakeovers counts takeovers of the lease by another initiator.
	LeaseTakeovers uint64
	// FencedLogins counts logins refused because their nexus is fenced.
	FencedLogins uint64
	// SCSI is the device server's statistics (per LU).
	SCSI scsi.RouterStats
}

// Stats returns a snapshot of the server's statistics. It takes the
// server's locks briefly, so it also proves they are not stuck (the
// systemd watchdog relies on that).
func (s *Server) Stats() Stats {
	st := Stats{ConnectionsAccepted: s.stats.accepted.Load(), CHAPFailures: s.stats.chapFailures.Load(),
		Panics: s.stats.panics.Load(), Limits: s.LimitStats(), Auth: s.AuthStats()}
	for i := range st.Logins {
		st.Logins[i] = s.stats.logins[i].Load()
	}
	s.mu.Lock()
	st.Connections = len(s.conns)
	st.Listening = len(s.listeners)
	st.Closing = s.closing
	nodes := s.cfg.Nodes
	s.mu.Unlock()

	perNode := make(map[string]int, len(nodes))
	s.sessions.mu.Lock()
	for _, sess := range s.sessions.byT {
		if sess.discovery || sess.node == nil {
			st.DiscoverySessions++
		} else {
			perNode[sess.node.Name]++
		}
	}
	s.sessions.mu.Unlock()

	st.Nodes = make([]NodeStats, 0, len(nodes))
	for _, n := range nodes {
		nc := s.stats.node(n.Name)
		st.Nodes = append(st.Nodes, NodeStats{
			Name:           n.Name,
			Sessions:       perNode[n.Name],
			LeaseHeld:      nc.leaseHeld.Load(),
			LeaseEpoch:     nc.leaseEpoch.Load(),
			LeaseTakeovers: nc.leaseTakeovers.Load(),
			FencedLogins:   nc.fencedLogins.Load(),
			SCSI:           n.Router.Stats(),
		})
	}
	return st
}
