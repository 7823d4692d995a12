package target

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// The single-writer lease (docs/design.md §5). Kubernetes' iSCSI plugins and
// open-iscsi never send SCSI reservations, so in AccessSingleWriter mode the
// target itself guarantees one writer per target node:
//
//   - one initiator name holds the node's lease; more sessions of that name
//     (multipath, reconnects) are admitted;
//   - a normal-session login of another name while the holder is alive is
//     refused with 0x0301 (service unavailable: open-iscsi retries class 03);
//   - the holder is alive while it has a session that received a PDU within
//     NOPInterval+NOPTimeout (an idle initiator answers the NOP-In ping sent
//     after NOPInterval), while one of its logins is being admitted, and,
//     after a target restart, for NOPInterval+NOPTimeout from the start;
//   - a login of another name when the holder is not alive takes the lease
//     over: every I_T nexus (initiator name + ISID) the old holder used is
//     fenced, its connections are closed and its tasks aborted, and the
//     takeover login completes only after every session of the old holder
//     has ended (executing backend I/O included);
//   - a fenced nexus is refused forever with 0x0202 (authorization failure),
//     whatever the TSIH: open-iscsi's session recovery re-logs-in with the
//     same ISID, so a partitioned node's dirty page cache cannot reach the
//     disk through it. A login with an ISID that was never fenced (open-iscsi
//     allocates a new one for each new session) is a fresh login and is
//     treated like any other initiator;
//   - the lease (holder, epoch, holder nexuses, fenced nexuses) is persisted
//     atomically in StateDir before the login that changed it completes.

// AccessMode selects how a target node admits initiators.
type AccessMode string

const (
	// AccessSingleWriter admits normal sessions of one initiator name (the
	// lease holder) at a time. It is the default.
	AccessSingleWriter AccessMode = "single-writer"
	// AccessShared admits every initiator (clusters that coordinate
	// through SCSI reservations or a cluster file system).
	AccessShared AccessMode = "shared"
)

// Limits that keep the persisted lease bounded.
const (
	maxHolderNexuses = 4096
	maxFenced        = 8192
)

// FencedNexus is an I_T nexus refused for good after a takeover or a
// release: the initiator name and ISID of one of the old holder's sessions.
type FencedNexus struct {
	InitiatorName string    `json:"initiator"`
	ISID          string    `json:"isid"`
	Epoch         uint64    `json:"epoch"` // the lease epoch that fenced it
	Since         time.Time `json:"since"`
}

// LeaseCounters count lease events of one target (or of all targets).
type LeaseCounters struct {
	Acquired      uint64 `json:"acquired"`       // taken while free
	Takeovers     uint64 `json:"takeovers"`      // taken from a holder without a live session
	Released      uint64 `json:"released"`       // dropped by the operator
	NexusesAdded  uint64 `json:"nexuses_added"`  // new ISIDs of the holder recorded
	Fenced        uint64 `json:"fenced"`         // nexuses fenced
	RefusedBusy   uint64 `json:"refused_busy"`   // logins refused with 0x0301
	RefusedFenced uint64 `json:"refused_fenced"` // logins of fenced nexuses refused with 0x0202
	PersistErrors uint64 `json:"persist_errors"` // state could not be written; the change was refused
}

func (c *LeaseCounters) add(o LeaseCounters) {
	c.Acquired += o.Acquired
	c.Takeovers += o.Takeovers
	c.Released += o.Released
	c.NexusesAdded += o.NexusesAdded
	c.Fenced += o.Fenced
	c.RefusedBusy += o.RefusedBusy
	c.RefusedFenced += o.RefusedFenced
	c.PersistErrors += o.PersistErrors
}

// LeaseSession is a session of a target as the lease sees it.
type LeaseSession struct {
	InitiatorName string    `json:"initiator"`
	ISID          string    `json:"isid"`
	TSIH          uint16    `json:"tsih"`
	RemoteAddr    string    `json:"remote"`
	LastPDU       time.Time `json:"last_pdu"`
	Alive         bool      `json:"alive"`
}

// LeaseInfo describes the lease of one target node.
type LeaseInfo struct {
	Target string     `json:"target"`
	Access AccessMode `json:"access"`
	// Holder is the initiator name holding the lease; empty when free.
	Holder string    `json:"holder,omitempty"`
	Epoch  uint64    `json:"epoch"`
	Since  time.Time `json:"since,omitempty"`
	// HolderAlive reports whether the holder keeps the lease now.
	HolderAlive bool `json:"holder_alive"`
	// GraceUntil is the end of the restart grace, when one applies.
	GraceUntil time.Time `json:"grace_until,omitempty"`
	// HolderNexuses are the ISIDs the holder logged in with; they are
	// fenced when the lease changes hands.
	HolderNexuses []string `json:"holder_nexuses,omitempty"`
	// Barred is the initiator released by the operator; it may not take
	// the free lease before another initiator held it.
	Barred   string         `json:"barred,omitempty"`
	Sessions []LeaseSession `json:"sessions"`
	Fenced   []FencedNexus  `json:"fenced"`
	Counters LeaseCounters  `json:"counters"`
}

// leaseRecord is the persisted lease of one target.
type leaseRecord struct {
	Holder  string        `json:"holder,omitempty"`
	Epoch   uint64        `json:"epoch"`
	Since   time.Time     `json:"since,omitempty"`
	Nexuses []string      `json:"nexuses,omitempty"`
	Fenced  []FencedNexus `json:"fenced,omitempty"`
	// Barred is the holder an operator released: it may not take the free
	// lease again before another initiator held it (or AllowLease).
	Barred string `json:"barred,omitempty"`
}

func (r *leaseRecord) clone() *leaseRecord {
	c := *r
	c.Nexuses = append([]string(nil), r.Nexuses...)
	c.Fenced = append([]FencedNexus(nil), r.Fenced...)
	return &c
}

func (r *leaseRecord) isFenced(name, isid string) bool {
	for _, f := range r.Fenced {
		if f.ISID == isid && sameName(f.InitiatorName, name) {
			return true
		}
	}
	return false
}

func (r *leaseRecord) hasNexus(isid string) bool {
	for _, n := range r.Nexuses {
		if n == isid {
			return true
		}
	}
	return false
}

// fenceHolder moves the holder's nexuses (and extra ISIDs of its live
// sessions) to the fenced list under the new epoch; it returns how many
// were added.
func (r *leaseRecord) fenceHolder(extra []string, now time.Time) int {
	isids := append(append([]string(nil), r.Nexuses...), extra...)
	n := 0
	for _, isid := range isids {
		if r.isFenced(r.Holder, isid) {
			continue
		}
		r.Fenced = append(r.Fenced, FencedNexus{InitiatorName: r.Holder, ISID: isid, Epoch: r.Epoch, Since: now})
		n++
	}
	if len(r.Fenced) > maxFenced {
		r.Fenced = r.Fenced[len(r.Fenced)-maxFenced:]
	}
	r.Nexuses = nil
	return n
}

// sameName compares iSCSI names, which are case-insensitive (RFC 3722).
func sameName(a, b string) bool { return strings.EqualFold(a, b) }

// leaseManager keeps the leases of a server's nodes.
type leaseManager struct {
	srv   *Server
	store *leaseStore // nil: in memory only

	mu       sync.Mutex
	recs     map[string]*leaseRecord // by target name
	pending  map[string]int          // holder logins being admitted, by target
	counters map[string]*LeaseCounters
	grace    map[string]time.Time // restart grace of restored holders
}

func newLeaseManager(s *Server) (*leaseManager, error) {
	m := &leaseManager{
		srv:      s,
		recs:     make(map[string]*leaseRecord),
		pending:  make(map[string]int),
		counters: make(map[string]*LeaseCounters),
		grace:    make(map[string]time.Time),
	}
	for _, n := range s.cfg.Nodes {
		m.counters[n.Name] = new(LeaseCounters)
	}
	if s.cfg.StateDir != "" {
		m.store = &leaseStore{dir: s.cfg.StateDir}
		recs, err := m.store.load()
		if err != nil {
			return nil, err
		}
		m.recs = recs
		// The holder had no chance to reconnect yet: it keeps the lease
		// for the liveness budget it would have had without the restart.
		until := time.Now().Add(m.liveWindow())
		for _, n := range s.cfg.Nodes {
			if r := recs[n.Name]; r != nil && r.Holder != "" && s.access(n) == AccessSingleWriter {
				m.grace[n.Name] = until
				s.log.WithFields(logrus.Fields{"target": n.Name, "initiator": r.Holder, "epoch": r.Epoch,
					"fenced": len(r.Fenced), "grace": m.liveWindow().String()}).Info("lease: restored")
			}
		}
	}
	return m, nil
}

// liveWindow is how long a connection may be silent before the lease
// considers it dead: the NOP-In interval plus the ping timeout.
func (m *leaseManager) liveWindow() time.Duration {
	d := m.srv.cfg.NOPTimeout
	if m.srv.cfg.NOPInterval > 0 {
		d += m.srv.cfg.NOPInterval
	}
	return d
}

// sessionAlive decides deterministically whether a session still counts
// for the lease: its connection is open and, when pings are enabled, it
// received a PDU within the live window.
func (m *leaseManager) sessionAlive(s *session, now time.Time) bool {
	c := s.conn
	if c == nil || c.isClosed() {
		return false
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return false
	}
	if m.srv.cfg.NOPInterval < 0 {
		return true
	}
	return now.Sub(time.Unix(0, c.lastRx.Load())) <= m.liveWindow()
}

// nodeSessions returns the normal sessions of node.
func (m *leaseManager) nodeSessions(n *Node) []*session {
	var out []*session
	m.srv.sessions.forNode(n, func(s *session) { out = append(out, s) })
	return out
}

// forgetOldestIdle removes from rec the oldest holder ISID without a
// session on n; it reports false when every recorded ISID has one. m.mu
// held.
func (m *leaseManager) forgetOldestIdle(n *Node, rec *leaseRecord) bool {
	live := map[string]bool{}
	for _, s := range m.nodeSessions(n) {
		if sameName(s.initiatorName, rec.Holder) {
			live[s.isid.String()] = true
		}
	}
	for i, id := range rec.Nexuses {
		if !live[id] {
			rec.Nexuses = append(rec.Nexuses[:i:i], rec.Nexuses[i+1:]...)
			return true
		}
	}
	return false
}

// holderAlive reports whether the holder of rec keeps the lease; m.mu held.
func (m *leaseManager) holderAlive(n *Node, rec *leaseRecord, now time.Time) bool {
	if rec.Holder == "" {
		return false
	}
	if m.pending[n.Name] > 0 {
		return true
	}
	if g, ok := m.grace[n.Name]; ok && now.Before(g) {
		return true
	}
	for _, s := range m.nodeSessions(n) {
		if sameName(s.initiatorName, rec.Holder) && m.sessionAlive(s, now) {
			return true
		}
	}
	return false
}

func (m *leaseManager) record(name string) *leaseRecord {
	if r := m.recs[name]; r != nil {
		return r
	}
	return &leaseRecord{}
}

// commit persists recs with name replaced by rec, then installs it; m.mu
// held. On a write error nothing changes.
func (m *leaseManager) commit(name string, rec *leaseRecord) error {
	if m.store != nil {
		next := make(map[string]*leaseRecord, len(m.recs)+1)
		for k, v := range m.recs {
			next[k] = v
		}
		next[name] = rec
		if err := m.store.save(next); err != nil {
			m.counters[name].PersistErrors++
			m.srv.log.WithError(err).WithField("target", name).Error("lease: state not persisted; change refused")
			return err
		}
	}
	m.recs[name] = rec
	return nil
}

// admission is the result of admit for a normal login.
type admission struct {
	status uint16
	msg    string
	// done must be called once the login has created its session or failed.
	done func()
}

// admit decides a normal-session login of initiator name with isid to node
// (single-writer mode). On success the caller must wait for the node's
// foreign sessions to end (waitForeign) before completing the login.
func (m *leaseManager) admit(n *Node, name string, isid pdu.ISID, log *logrus.Entry) admission {
	id := isid.String()
	now := time.Now()
	stamp := now.UTC().Round(0) // what the state file holds
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.record(n.Name)
	cnt := m.counters[n.Name]
	fields := logrus.Fields{"target": n.Name, "initiator": name, "isid": id}
	if rec.isFenced(name, id) {
		cnt.RefusedFenced++
		log.WithFields(fields).WithField("epoch", rec.Epoch).Warn("lease: login of a fenced nexus refused")
		return admission{status: pdu.LoginAuthorizationFailure,
			msg: fmt.Sprintf("nexus %s/%s was fenced; log in with a new session", name, id)}
	}
	switch {
	case rec.Holder == "" && rec.Barred != "" && sameName(rec.Barred, name):
		cnt.RefusedBusy++
		log.WithFields(fields).WithField("epoch", rec.Epoch).
			Warn("lease: login refused, this initiator was released by the operator (iscsi-target lease allow lifts it)")
		return admission{status: pdu.LoginServiceUnavailable,
			msg: fmt.Sprintf("initiator %s was released from target %s by the operator", name, n.Name)}
	case rec.Holder == "":
		next := rec.clone()
		next.Holder, next.Epoch, next.Since, next.Nexuses, next.Barred = name, rec.Epoch+1, stamp, []string{id}, ""
		if err := m.commit(n.Name, next); err != nil {
			return admission{status: pdu.LoginTargetError, msg: "lease state could not be saved"}
		}
		cnt.Acquired++
		delete(m.grace, n.Name)
		log.WithFields(fields).WithField("epoch", next.Epoch).Info("lease: acquired")
	case sameName(rec.Holder, name):
		if !rec.hasNexus(id) {
			next := rec.clone()
			if len(next.Nexuses) >= maxHolderNexuses {
				// Sessions that ended without a logout (dropped
				// connections; libiscsi reconnects with a new ISID
				// each time) fill the list over a long tenure. Forget
				// the oldest ISID with no session now: its initiator
				// still logs in like any other name after a takeover.
				if !m.forgetOldestIdle(n, next) {
					return admission{status: pdu.LoginOutOfResources, msg: "too many live sessions recorded for the lease holder"}
				}
			}
			next.Nexuses = append(next.Nexuses, id)
			if err := m.commit(n.Name, next); err != nil {
				return admission{status: pdu.LoginTargetError, msg: "lease state could not be saved"}
			}
			cnt.NexusesAdded++
			log.WithFields(fields).WithField("epoch", next.Epoch).Info("lease: holder nexus added")
		}
	case m.holderAlive(n, rec, now):
		cnt.RefusedBusy++
		log.WithFields(fields).WithFields(logrus.Fields{"holder": rec.Holder, "epoch": rec.Epoch}).
			Warn("lease: login refused, another initiator holds the write lease")
		return admission{status: pdu.LoginServiceUnavailable,
			msg: fmt.Sprintf("target %s is leased to %s (single-writer)", n.Name, rec.Holder)}
	default:
		next := rec.clone()
		var extra []string
		for _, s := range m.nodeSessions(n) {
			if sameName(s.initiatorName, rec.Holder) {
				extra = append(extra, s.isid.String())
			}
		}
		next.Epoch++
		fenced := next.fenceHolder(extra, stamp)
		prev := next.Holder
		next.Holder, next.Since, next.Nexuses = name, stamp, []string{id}
		if err := m.commit(n.Name, next); err != nil {
			return admission{status: pdu.LoginTargetError, msg: "lease state could not be saved"}
		}
		cnt.Takeovers++
		cnt.Fenced += uint64(fenced)
		delete(m.grace, n.Name)
		log.WithFields(fields).WithFields(logrus.Fields{"epoch": next.Epoch, "previous": prev, "fenced": fenced}).
			Warn("lease: taken over; previous holder fenced")
		m.closeForeign(n, name)
	}
	m.pending[n.Name]++
	var once sync.Once
	return admission{status: pdu.LoginSuccess, done: func() {
		once.Do(func() {
			m.mu.Lock()
			m.pending[n.Name]--
			m.mu.Unlock()
		})
	}}
}

// closeForeign closes the connections of every session of n whose
// initiator is not name (name "" closes all); their receivers abort the
// tasks and wait for executing ones.
func (m *leaseManager) closeForeign(n *Node, name string) {
	for _, s := range m.nodeSessions(n) {
		if name == "" || !sameName(s.initiatorName, name) {
			s.log.WithField("lease_holder", name).Warn("lease: fencing session")
			s.terminate(errFenced)
		}
	}
}

// errFenced ends the connections of a fenced nexus.
var errFenced = errors.New("iscsi: nexus fenced by a lease change")

// waitForeign closes and waits for the end of every session of n not of
// initiator name (all sessions for name ""): the old holder's executing
// commands finish or are aborted before the caller proceeds. It reports
// false when they did not end within timeout.
func (m *leaseManager) waitForeign(n *Node, name string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var wait *session
		for _, s := range m.nodeSessions(n) {
			if name == "" || !sameName(s.initiatorName, name) {
				s.terminate(errFenced)
				wait = s
				break
			}
		}
		if wait == nil {
			return true
		}
		select {
		case <-wait.ended:
		case <-deadline.C:
			return false
		}
	}
}

// release drops the holder of target (the operator's force release): its
// nexuses are fenced, its sessions closed and waited for.
func (m *leaseManager) release(n *Node) (LeaseInfo, bool, error) {
	now := time.Now().UTC().Round(0)
	m.mu.Lock()
	rec := m.record(n.Name)
	if rec.Holder == "" {
		m.mu.Unlock()
		return m.info(n), false, nil
	}
	next := rec.clone()
	var extra []string
	for _, s := range m.nodeSessions(n) {
		extra = append(extra, s.isid.String())
	}
	next.Epoch++
	fenced := next.fenceHolder(extra, now)
	prev := next.Holder
	next.Holder, next.Since, next.Barred = "", now, prev
	if err := m.commit(n.Name, next); err != nil {
		m.mu.Unlock()
		return LeaseInfo{}, false, fmt.Errorf("lease state could not be saved: %w", err)
	}
	cnt := m.counters[n.Name]
	cnt.Released++
	cnt.Fenced += uint64(fenced)
	delete(m.grace, n.Name)
	m.srv.log.WithFields(logrus.Fields{"target": n.Name, "initiator": prev, "epoch": next.Epoch, "fenced": fenced}).
		Warn("lease: released by the operator; holder fenced")
	m.closeForeign(n, "")
	m.mu.Unlock()
	if !m.waitForeign(n, "", reinstateWait) {
		return m.info(n), true, errors.New("lease released, but sessions of the old holder are still ending")
	}
	return m.info(n), true, nil
}

// loggedOut forgets the nexus of a holder session that the initiator
// logged out of on its own (iscsiadm --logout, the end of a qemu-img run):
// it will not come back through session recovery, so it need not be fenced
// later. This keeps the holder's nexus list bounded across attach/detach
// cycles. Logouts the target asked for (shutdown) are followed by session
// recovery with the same ISID (open-iscsi), so they are not called here.
func (m *leaseManager) loggedOut(s *session) {
	if s.node == nil || m.srv.access(s.node) != AccessSingleWriter {
		return
	}
	id := s.isid.String()
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.record(s.node.Name)
	if !sameName(rec.Holder, s.initiatorName) || !rec.hasNexus(id) {
		return
	}
	for _, o := range m.nodeSessions(s.node) {
		if o != s && o.isid == s.isid && sameName(o.initiatorName, s.initiatorName) {
			return
		}
	}
	next := rec.clone()
	next.Nexuses = next.Nexuses[:0]
	for _, n := range rec.Nexuses {
		if n != id {
			next.Nexuses = append(next.Nexuses, n)
		}
	}
	if m.commit(s.node.Name, next) == nil {
		s.log.WithField("epoch", next.Epoch).Debug("lease: holder nexus logged out")
	}
}

// info describes the lease of n.
func (m *leaseManager) info(n *Node) LeaseInfo {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.record(n.Name)
	li := LeaseInfo{
		Target:        n.Name,
		Access:        m.srv.access(n),
		Holder:        rec.Holder,
		Epoch:         rec.Epoch,
		Since:         rec.Since,
		HolderNexuses: append([]string(nil), rec.Nexuses...),
		Barred:        rec.Barred,
		Fenced:        append([]FencedNexus{}, rec.Fenced...),
		Sessions:      []LeaseSession{},
		Counters:      *m.counters[n.Name],
	}
	if li.Access == AccessSingleWriter {
		li.HolderAlive = m.holderAlive(n, rec, now)
		if g, ok := m.grace[n.Name]; ok && now.Before(g) {
			li.GraceUntil = g
		}
	}
	for _, s := range m.nodeSessions(n) {
		ls := LeaseSession{InitiatorName: s.initiatorName, ISID: s.isid.String(), TSIH: s.tsih,
			Alive: m.sessionAlive(s, now)}
		if c := s.conn; c != nil {
			ls.RemoteAddr = c.nc.RemoteAddr().String()
			ls.LastPDU = time.Unix(0, c.lastRx.Load())
		}
		li.Sessions = append(li.Sessions, ls)
	}
	sort.Slice(li.Sessions, func(i, j int) bool { return li.Sessions[i].TSIH < li.Sessions[j].TSIH })
	return li
}

// access returns the access mode of node n.
func (s *Server) access(n *Node) AccessMode {
	if n.AccessMode != "" {
		return n.AccessMode
	}
	return s.cfg.AccessMode
}

// admitLogin applies the node's access mode to a normal-session login that
// is about to enter full feature phase. On success done must be called
// after the session was created (or the login failed).
func (s *Server) admitLogin(n *Node, name string, isid pdu.ISID, log *logrus.Entry) (done func(), status uint16, msg string) {
	if s.access(n) != AccessSingleWriter {
		return func() {}, pdu.LoginSuccess, ""
	}
	a := s.leases.admit(n, name, isid, log)
	if a.status != pdu.LoginSuccess {
		return func() {}, a.status, a.msg
	}
	if !s.leases.waitForeign(n, name, s.cfg.LoginTimeout) {
		a.done()
		return func() {}, pdu.LoginServiceUnavailable, "sessions of the previous lease holder are still ending"
	}
	return a.done, pdu.LoginSuccess, ""
}

// ErrNoSuchTarget is returned for a target name the server does not serve.
var ErrNoSuchTarget = errors.New("iscsi: no such target")

// Leases describes the lease of every target node.
func (s *Server) Leases() []LeaseInfo {
	nodes := s.Nodes() // nodes.go: nodes come and go with reload
	out := make([]LeaseInfo, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, s.leases.info(n))
	}
	return out
}

// Lease describes the lease of one target node.
func (s *Server) Lease(target string) (LeaseInfo, error) {
	n := s.node(target)
	if n == nil {
		return LeaseInfo{}, fmt.Errorf("%w: %q", ErrNoSuchTarget, target)
	}
	return s.leases.info(n), nil
}

// ReleaseLease drops the lease holder of target by force (the case
// Kubernetes' out-of-service taint covers): every nexus of the holder is
// fenced and its sessions are closed; the call returns after they ended.
// released is false when the lease was already free.
func (s *Server) ReleaseLease(target string) (info LeaseInfo, released bool, err error) {
	n := s.node(target)
	if n == nil {
		return LeaseInfo{}, false, fmt.Errorf("%w: %q", ErrNoSuchTarget, target)
	}
	if s.access(n) != AccessSingleWriter {
		return LeaseInfo{}, false, fmt.Errorf("target %s is in %s access mode: it has no lease", target, s.access(n))
	}
	return s.leases.release(n)
}

// AllowLease lifts the bar a release put on the released holder, so it may
// take the free lease again. It reports whether there was a bar.
func (s *Server) AllowLease(target string) (LeaseInfo, bool, error) {
	n := s.node(target)
	if n == nil {
		return LeaseInfo{}, false, fmt.Errorf("%w: %q", ErrNoSuchTarget, target)
	}
	m := s.leases
	m.mu.Lock()
	rec := m.record(n.Name)
	if rec.Barred == "" {
		m.mu.Unlock()
		return m.info(n), false, nil
	}
	next := rec.clone()
	next.Barred = ""
	if err := m.commit(n.Name, next); err != nil {
		m.mu.Unlock()
		return LeaseInfo{}, false, fmt.Errorf("lease state could not be saved: %w", err)
	}
	s.log.WithFields(logrus.Fields{"target": n.Name, "initiator": rec.Barred, "epoch": rec.Epoch}).
		Warn("lease: operator allowed the released initiator again")
	m.mu.Unlock()
	return m.info(n), true, nil
}

// LeaseCounters sums the lease counters of every target node (for metrics).
func (s *Server) LeaseCounters() LeaseCounters {
	var total LeaseCounters
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	for _, c := range s.leases.counters {
		total.add(*c)
	}
	return total
}
