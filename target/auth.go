package target

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Authentication in the login security stage (RFC 7143 §6.3, §12.1.3):
// AuthMethod negotiation, the CHAP exchange (chap.Exchange), the penalty
// for failed logins and the per-address limit on them.

// AuthConfig configures authentication. The zero value accepts
// AuthMethod=None for every session.
type AuthConfig struct {
	// Session is CHAP for normal sessions; nil means AuthMethod=None.
	Session *chap.TargetConfig
	// Discovery is CHAP for discovery sessions, configured separately;
	// nil means AuthMethod=None.
	Discovery *chap.TargetConfig
	// FailureDelay is how long the target waits before it answers a
	// failed login with 0x0201 or 0x0202, whatever went wrong, so the
	// answer time tells nothing and guessing is slow. It delays only that
	// connection. Default 1 s; negative means no delay.
	FailureDelay time.Duration
	// FailureBurst failed logins are allowed from one source address
	// (an IPv6 /64) before further logins from it are refused without
	// checking credentials; one more is allowed every FailureRefill.
	// Defaults: 10 and 6 s (10 per minute).
	FailureBurst  int
	FailureRefill time.Duration
	// MaxTrackedAddresses bounds the memory of the limit; default 4096.
	MaxTrackedAddresses int
}

func (a *AuthConfig) setDefaults() {
	if a.FailureDelay == 0 {
		a.FailureDelay = time.Second
	}
	if a.FailureBurst <= 0 {
		a.FailureBurst = 10
	}
	if a.FailureRefill <= 0 {
		a.FailureRefill = 6 * time.Second
	}
	if a.MaxTrackedAddresses <= 0 {
		a.MaxTrackedAddresses = 4096
	}
}

func (a *AuthConfig) validate() error {
	for _, x := range []struct {
		name string
		c    *chap.TargetConfig
	}{{"session", a.Session}, {"discovery", a.Discovery}} {
		if x.c == nil {
			continue
		}
		if err := x.c.Validate(); err != nil {
			return fmt.Errorf("iscsi: %s CHAP: %w", x.name, err)
		}
	}
	return nil
}

// AuthStats counts login outcomes of the security stage.
type AuthStats struct {
	// Successes counts completed CHAP authentications.
	Successes uint64
	// Failures counts logins answered with 0x0201 (authentication failure).
	Failures uint64
	// Refused counts logins answered with 0x0202 (initiator not allowed).
	Refused uint64
	// RateLimited counts logins refused because their source address had
	// too many recent failures (also counted in Failures).
	RateLimited uint64
}

// authState is the server-wide part of authentication.
type authState struct {
	successes, failures, refused, limited atomic.Uint64

	limiter failLimiter

	mu         sync.Mutex
	challenges map[string]int // challenges issued to logins in progress
}

// maxChallenges bounds the registry of issued challenges.
const maxChallenges = 1 << 16

func newAuthState(cfg *AuthConfig) *authState {
	a := &authState{challenges: make(map[string]int)}
	a.limiter.init(cfg.FailureBurst, cfg.FailureRefill, cfg.MaxTrackedAddresses)
	return a
}

func (a *authState) issue(c []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.challenges) >= maxChallenges {
		return false
	}
	a.challenges[string(c)]++
	return true
}

func (a *authState) release(c []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.challenges[string(c)]; n > 1 {
		a.challenges[string(c)] = n - 1
	} else {
		delete(a.challenges, string(c))
	}
}

func (a *authState) issued(c []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.challenges[string(c)] > 0
}

// AuthStats returns the authentication counters.
func (s *Server) AuthStats() AuthStats {
	a := s.auth
	return AuthStats{
		Successes:   a.successes.Load(),
		Failures:    a.failures.Load(),
		Refused:     a.refused.Load(),
		RateLimited: a.limited.Load(),
	}
}

// loginAuth is the per-login authentication state.
type loginAuth struct {
	chapCfg   *chap.TargetConfig // nil: AuthMethod=None
	chap      *chap.Exchange
	keys      map[string]string // CHAP keys of the current request
	challenge []byte            // registered in authState.challenges
}

// remoteAddr returns the initiator's IP address.
func (c *conn) remoteAddr() netip.Addr {
	if ta, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// authorize applies the ACL to a normal session's login (0x0202).
func (st *loginState) authorize() (uint16, string) {
	if st.discovery || st.node == nil {
		return pdu.LoginSuccess, ""
	}
	if ok, why := st.c.srv.aclFor(st.node).Allowed(st.node.Name, st.initiatorName, st.c.remoteAddr()); !ok {
		return pdu.LoginAuthorizationFailure, "initiator not allowed: " + why
	}
	return pdu.LoginSuccess, ""
}

// authRequired returns the CHAP configuration this login must satisfy.
func (st *loginState) authConfig() *chap.TargetConfig {
	if st.discovery {
		return st.c.srv.discoveryAuth()
	}
	if st.node != nil && st.node.Auth != nil {
		return st.node.Auth
	}
	return st.c.srv.cfg.Auth.Session
}

// authMethod answers AuthMethod=<list>: CHAP when CHAP is configured for
// this kind of session, None otherwise.
func (st *loginState) authMethod(offer string, out *pdu.Keys) (uint16, string) {
	cfg := st.authConfig()
	if cfg == nil {
		if selectFromList(offer, []string{"None"}) == "" {
			out.Add("AuthMethod", "Reject")
			return pdu.LoginAuthFailure, fmt.Sprintf("no acceptable AuthMethod in %.64q (this target requires None)", offer)
		}
		out.Add("AuthMethod", "None")
		st.authDone = true
		return pdu.LoginSuccess, ""
	}
	if selectFromList(offer, []string{"CHAP"}) == "" {
		out.Add("AuthMethod", "Reject")
		return pdu.LoginAuthFailure, fmt.Sprintf("CHAP required, initiator offered AuthMethod=%.64q (no credentials configured on the initiator?)", offer)
	}
	if !st.c.srv.auth.limiter.allow(st.c.remoteAddr(), time.Now()) {
		st.c.srv.auth.limited.Add(1)
		return pdu.LoginAuthFailure, "too many failed logins from this address; refused without checking credentials"
	}
	a := st.c.srv.auth
	st.auth.chapCfg = cfg
	st.auth.chap = chap.NewExchange(cfg, nil, a.issued)
	out.Add("AuthMethod", "CHAP")
	return pdu.LoginSuccess, ""
}

// chapKey collects one CHAP key of the current request.
func (st *loginState) chapKey(k, v string) (uint16, string) {
	if st.auth.chap == nil {
		return pdu.LoginAuthFailure, "CHAP keys without CHAP authentication"
	}
	if st.auth.keys == nil {
		st.auth.keys = make(map[string]string, 5)
	}
	if _, dup := st.auth.keys[k]; dup {
		return pdu.LoginAuthFailure, k + " sent twice"
	}
	st.auth.keys[k] = v
	return pdu.LoginSuccess, ""
}

// chapStep runs the CHAP keys collected from one request through the
// exchange and adds the answer to out.
func (st *loginState) chapStep(out *pdu.Keys) (uint16, string) {
	keys := st.auth.keys
	st.auth.keys = nil
	if st.stage != pdu.StageSecurity {
		return pdu.LoginAuthFailure, "CHAP keys outside the security stage"
	}
	ans, err := st.auth.chap.Step(keys)
	if err != nil {
		st.c.srv.stats.chapFailure()
		var f *chap.Failure
		if errors.As(err, &f) && f.Hint != "" {
			return pdu.LoginAuthFailure, f.Reason + "; hint: " + f.Hint
		}
		return pdu.LoginAuthFailure, err.Error()
	}
	if c := st.auth.chap.Challenge(); c != nil && st.auth.challenge == nil {
		if st.c.srv.auth.issue(c) {
			st.auth.challenge = c
		}
	}
	for _, kv := range ans {
		out.Add(kv[0], kv[1])
	}
	if st.auth.chap.Done() {
		st.authDone = true
		st.c.srv.auth.successes.Add(1)
		st.c.log.WithField("algorithm", st.auth.chap.Algorithm().String()).Info("iscsi: CHAP authentication succeeded")
	}
	return pdu.LoginSuccess, ""
}

// authEnd releases what the login registered.
func (st *loginState) authEnd() {
	if st.auth.challenge != nil {
		st.c.srv.auth.release(st.auth.challenge)
		st.auth.challenge = nil
	}
}

// penalize counts a failed login, charges its source address and waits
// FailureDelay before the answer goes out. It blocks only this connection.
func (st *loginState) penalize(status uint16) {
	c := st.c
	a := c.srv.auth
	switch status {
	case pdu.LoginAuthFailure:
		a.failures.Add(1)
	case pdu.LoginAuthorizationFailure:
		a.refused.Add(1)
	default:
		return
	}
	a.limiter.fail(c.remoteAddr(), time.Now())
	d := c.srv.cfg.Auth.FailureDelay
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closed:
	case <-c.srv.ctx.Done():
	}
}

// failLimiter is a token bucket per source address: each failed login
// takes a token, tokens come back at one per refill interval up to burst,
// and an address without a token is refused. Its memory is bounded: when
// the table is full, full buckets (which carry no information) are
// dropped, then the least recently charged one.
type failLimiter struct {
	mu     sync.Mutex
	burst  float64
	refill time.Duration
	max    int
	m      map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (l *failLimiter) init(burst int, refill time.Duration, max int) {
	l.burst, l.refill, l.max = float64(burst), refill, max
	l.m = make(map[netip.Addr]*bucket)
}

// key groups IPv6 addresses by /64, which one host usually controls.
func limiterKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a.Unmap()
}

func (l *failLimiter) level(b *bucket, now time.Time) float64 {
	t := b.tokens + float64(now.Sub(b.last))/float64(l.refill)
	if t > l.burst {
		t = l.burst
	}
	return t
}

func (l *failLimiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[limiterKey(a)]
	return b == nil || l.level(b, now) >= 1
}

func (l *failLimiter) fail(a netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := limiterKey(a)
	b := l.m[k]
	if b == nil {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[k] = b
	}
	b.tokens = max(l.level(b, now)-1, -l.burst)
	b.last = now
}

// evict makes room for one entry; the caller holds l.mu.
func (l *failLimiter) evict(now time.Time) {
	var oldest netip.Addr
	var oldestT time.Time
	for k, b := range l.m {
		if l.level(b, now) >= l.burst {
			delete(l.m, k)
			continue
		}
		if oldestT.IsZero() || b.last.Before(oldestT) {
			oldest, oldestT = k, b.last
		}
	}
	if len(l.m) >= l.max {
		delete(l.m, oldest)
	}
}

func (l *failLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// sameIdentity reports whether a repeated identification key carries the
// value of the first request.
func (st *loginState) sameIdentity(kv pdu.KV) bool {
	switch kv.Key {
	case "InitiatorName":
		return kv.Value == st.initiatorName
	case "TargetName":
		return !st.discovery && kv.Value == st.targetName
	case "SessionType":
		return (kv.Value == "Discovery") == st.discovery && (kv.Value == "Discovery" || kv.Value == "Normal")
	}
	return false
}
