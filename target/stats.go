package target

import (
	"errors"
	"sync/atomic"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Statistics of the iSCSI layer. Counters are atomics bumped where the
// event happens (one-line hooks in conn.go, login.go, tx.go, scsicmd.go
// and auth.go); Server.Stats copies them, with what the other parts keep
// for themselves (AuthStats, LimitStats, the lease manager's counters and
// the device server's Router.Stats) and the gauges it can compute
// (connections, sessions), into a Stats value that an exporter reads at
// scrape time. The target package knows nothing about Prometheus.
//
// The recording hooks:
//
//	s.stats.login(status)   final Login Response sent (login.go)
//	c.loginEnded(err)       login phase over without one (conn.go: "aborted")
//	s.stats.chapFailure()   a CHAP exchange failed (auth.go)
//	s.stats.panics.Add(1)   a recovered panic (conn.go, tx.go, scsicmd.go)
//
// Per-target values are reported for configured nodes only, never for a
// name an initiator sent that matched nothing: labels must stay bounded.

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
	// Inline counts commands run by their connection's receiver
	// (inline.go).
	Inline InlineStats
	// BusyPoll counts the polls of receivers that found their socket
	// empty (busypoll.go).
	BusyPoll BusyPollStats
	// Nodes has one entry per configured target, in configuration order.
	Nodes []NodeStats
}

// InlineStats counts inline execution (inline.go).
type InlineStats struct {
	// Commands run by the receiver that read them.
	Commands uint64
	// Requeued: inline reads whose data was not in the page cache (or
	// that found no free buffer memory), handed to a worker.
	Requeued uint64
	// Handovers: receivers held up by an inline command for two watchdog
	// ticks, replaced by a new receiver goroutine.
	Handovers uint64
}

// BusyPollStats counts busy polling (busypoll.go).
type BusyPollStats struct {
	// Data: polls that ended because data (or the end of the stream)
	// arrived.
	Data uint64
	// Empty: polls that ran their whole window without data.
	Empty uint64
}

// NodeStats is the snapshot of one target node.
type NodeStats struct {
	// Name is the target name.
	Name string
	// Sessions is the number of normal sessions logged in to the target.
	Sessions int
	// SingleWriter reports the single-writer access mode (the lease
	// fields below are meaningful only then).
	SingleWriter bool
	// LeaseHeld reports whether an initiator holds the single-writer lease,
	// LeaseHolderAlive whether it has a live session.
	LeaseHeld, LeaseHolderAlive bool
	// LeaseEpoch is the lease epoch (it grows with every new holder).
	LeaseEpoch uint64
	// LeaseTakeovers counts takeovers of the lease by another initiator.
	LeaseTakeovers uint64
	// LeaseRefusedBusy counts logins refused (0x0301) while another
	// initiator held the lease.
	LeaseRefusedBusy uint64
	// LeasePersistErrors counts lease changes refused because the state
	// could not be written.
	LeasePersistErrors uint64
	// FencedLogins counts logins refused because their nexus is fenced;
	// FencedNexuses is the number of nexuses fenced for good.
	FencedLogins  uint64
	FencedNexuses int
	// SCSI is the device server's statistics (per LU).
	SCSI scsi.RouterStats
}

// Stats returns a snapshot of the server's statistics. It takes the
// server's locks briefly, so it also proves they are not stuck (the
// systemd watchdog relies on that).
func (s *Server) Stats() Stats {
	st := Stats{ConnectionsAccepted: s.stats.accepted.Load(), CHAPFailures: s.stats.chapFailures.Load(),
		Panics: s.stats.panics.Load(), Limits: s.LimitStats(), Auth: s.AuthStats(), Inline: s.watch.stats(), BusyPoll: s.poll.stats()}
	for i := range st.Logins {
		st.Logins[i] = s.stats.logins[i].Load()
	}
	nodes := s.Nodes()
	s.mu.Lock()
	st.Connections = len(s.conns)
	st.Listening = len(s.listeners)
	st.Closing = s.closing
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
		ns := NodeStats{Name: n.Name, Sessions: perNode[n.Name], SCSI: n.Router.Stats()}
		if s.leases != nil {
			li := s.leases.info(n)
			ns.SingleWriter = li.Access == AccessSingleWriter
			ns.LeaseHeld, ns.LeaseHolderAlive, ns.LeaseEpoch = li.Holder != "", li.HolderAlive, li.Epoch
			ns.LeaseTakeovers, ns.LeaseRefusedBusy = li.Counters.Takeovers, li.Counters.RefusedBusy
			ns.LeasePersistErrors = li.Counters.PersistErrors
			ns.FencedLogins, ns.FencedNexuses = li.Counters.RefusedFenced, len(li.Fenced)
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}
