package target

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// sessionKey identifies a session for reinstatement: the initiator port
// (InitiatorName + ISID) and the target node (RFC 7143 §6.3.5).
type sessionKey struct {
	initiatorName string
	isid          pdu.ISID
	target        string // "" for discovery sessions
}

// sessionTable holds the live sessions, by TSIH and by key.
type sessionTable struct {
	mu     sync.Mutex
	byT    map[uint16]*session
	byKey  map[sessionKey]*session
	lastTS uint16
}

func (t *sessionTable) init() {
	t.byT = make(map[uint16]*session)
	t.byKey = make(map[sessionKey]*session)
}

func (t *sessionTable) byTSIH(tsih uint16) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byT[tsih]
}

// allocTSIH returns an unused non-zero TSIH; the caller holds t.mu.
func (t *sessionTable) allocTSIH() (uint16, bool) {
	for range 1 << 16 {
		t.lastTS++
		if t.lastTS == 0 {
			t.lastTS = 1
		}
		if _, used := t.byT[t.lastTS]; !used {
			return t.lastTS, true
		}
	}
	return 0, false
}

type sessionSpec struct {
	node           *Node
	discovery      bool
	initiatorName  string
	initiatorAlias string
	isid           pdu.ISID
	cmdSN          uint32
	params         Params
}

// reinstateWait bounds how long a login waits for the session it
// reinstates to finish its in-flight commands.
const reinstateWait = 30 * time.Second

// create makes a session for a login that reached full feature phase. An
// existing session with the same key is reinstated: its connection is
// closed and its tasks end before the new session starts, so nothing of
// the old one can reach the disk afterwards (RFC 7143 §6.3.5).
func (t *sessionTable) create(c *conn, sp sessionSpec) (*session, uint16, string) {
	key := sessionKey{initiatorName: sp.initiatorName, isid: sp.isid}
	if sp.node != nil {
		key.target = sp.node.Name
	}
	for {
		t.mu.Lock()
		old := t.byKey[key]
		if old == nil {
			break
		}
		t.mu.Unlock()
		c.log.WithField("tsih", old.tsih).Info("iscsi: reinstating session")
		old.terminate(errReinstated)
		select {
		case <-old.ended:
		case <-time.After(reinstateWait):
			return nil, pdu.LoginServiceUnavailable, "previous session still busy"
		}
	}
	defer t.mu.Unlock()
	if n := sp.node; n != nil && !sp.discovery && n.MaxSessions > 0 {
		count := 0
		for _, s := range t.byT {
			// By name: ReplaceNode gives new logins a new *Node.
			if s.node != nil && s.node.Name == n.Name && !s.discovery {
				count++
			}
		}
		if count >= n.MaxSessions {
			c.srv.refusedSessions.Add(1)
			return nil, pdu.LoginOutOfResources, fmt.Sprintf("target has its maximum of %d sessions", n.MaxSessions)
		}
	}
	tsih, ok := t.allocTSIH()
	if !ok {
		return nil, pdu.LoginOutOfResources, "no TSIH available"
	}
	s := newSession(c, sp, tsih)
	t.byT[tsih] = s
	t.byKey[key] = s
	s.key = key
	if s.nexus != nil {
		sp.node.Router.NexusAdded(s.nexus)
	}
	return s, pdu.LoginSuccess, ""
}

func (t *sessionTable) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byT[s.tsih] == s {
		delete(t.byT, s.tsih)
	}
	if t.byKey[s.key] == s {
		delete(t.byKey, s.key)
	}
}

// forNode calls fn for each session of node.
func (t *sessionTable) forNode(n *Node, fn func(*session)) {
	t.mu.Lock()
	list := make([]*session, 0, len(t.byT))
	for _, s := range t.byT {
		// By name: sessions from before a ReplaceNode hold the old *Node.
		if s.node != nil && s.node.Name == n.Name {
			list = append(list, s)
		}
	}
	t.mu.Unlock()
	for _, s := range list {
		fn(s)
	}
}

func (t *sessionTable) list() []SessionInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]SessionInfo, 0, len(t.byT))
	for _, s := range t.byT {
		si := SessionInfo{
			InitiatorName: s.initiatorName,
			ISID:          s.isid.String(),
			TSIH:          s.tsih,
			Discovery:     s.discovery,
			Params:        s.params.String(),
			Since:         s.since,
		}
		if s.node != nil {
			si.Target = s.node.Name
		}
		if c := s.conn; c != nil {
			si.RemoteAddr = c.nc.RemoteAddr().String()
			si.LocalAddr = c.nc.LocalAddr().String()
		}
		out = append(out, si)
	}
	return out
}

// session is an iSCSI session: one connection (MaxConnections=1), the CmdSN
// window, the outstanding tasks and the I_T nexus.
type session struct {
	srv       *Server
	node      *Node // nil for discovery sessions
	discovery bool
	key       sessionKey
	tsih      uint16
	isid      pdu.ISID

	initiatorName  string
	initiatorAlias string
	params         Params
	nexus          *scsi.Nexus
	log            *logrus.Entry
	since          time.Time
	conn           *conn

	// CmdSN window (RFC 7143 §4.2.2.1). expCmdSN is written by the
	// receiver only; maxCmdSN grows by one each time a non-immediate
	// command is retired, so at most window commands are in flight.
	expCmdSN atomic.Uint32
	maxCmdSN atomic.Uint32
	window   uint32

	nextTTT atomic.Uint32

	mu       sync.Mutex
	cond     sync.Cond        // signalled when a task retires (for waiters)
	tasks    map[uint32]*task // outstanding, by initiator task tag
	held     map[uint32]*task // received ahead of ExpCmdSN, by CmdSN
	sched    scheduler
	immCount int // immediate tasks in flight
	closing  bool

	endOnce sync.Once
	ended   chan struct{}
	text    textState // multi-PDU text response in progress
}

func newSession(c *conn, sp sessionSpec, tsih uint16) *session {
	s := &session{
		srv:            c.srv,
		node:           sp.node,
		discovery:      sp.discovery,
		tsih:           tsih,
		isid:           sp.isid,
		initiatorName:  sp.initiatorName,
		initiatorAlias: sp.initiatorAlias,
		params:         sp.params,
		since:          time.Now(),
		conn:           c,
		window:         uint32(c.srv.cfg.CmdWindow),
		tasks:          make(map[uint32]*task),
		held:           make(map[uint32]*task),
		ended:          make(chan struct{}),
	}
	s.cond.L = &s.mu
	s.expCmdSN.Store(sp.cmdSN)
	s.maxCmdSN.Store(sp.cmdSN + s.window - 1)
	s.nextTTT.Store(uint32(tsih) << 16)
	fields := logrus.Fields{
		"initiator": sp.initiatorName,
		"session":   fmt.Sprintf("%s/%d", sp.isid, tsih),
		"conn":      c.id,
	}
	if sp.node != nil {
		fields["target"] = sp.node.Name
		s.nexus = &scsi.Nexus{
			Key: scsi.NexusKey{
				InitiatorName: sp.initiatorName,
				ISID:          sp.isid,
				TargetName:    sp.node.Name,
				TPGT:          sp.node.TPGT,
			},
			RelativeTargetPortID: sp.node.TPGT,
		}
	} else {
		fields["target"] = "discovery"
	}
	s.log = c.srv.log.WithFields(fields)
	s.sched.init(s)
	return s
}

// allocTTT returns a target transfer tag that is never the reserved value.
func (s *session) allocTTT() uint32 {
	for {
		t := s.nextTTT.Add(1)
		if t != pdu.ReservedTag {
			return t
		}
	}
}

// cmdSNStatus classifies a non-immediate CmdSN against the window.
type cmdSNStatus int

const (
	cmdSNInOrder cmdSNStatus = iota
	cmdSNAhead
	cmdSNOutside
)

// checkCmdSN classifies cmdSN (RFC 7143 §4.2.2.1, serial arithmetic of
// RFC 1982): outside [ExpCmdSN, MaxCmdSN] it is silently ignored.
func (s *session) checkCmdSN(cmdSN uint32) cmdSNStatus {
	exp := s.expCmdSN.Load()
	if cmdSN == exp {
		if serialLess(s.maxCmdSN.Load(), cmdSN) {
			return cmdSNOutside
		}
		return cmdSNInOrder
	}
	if serialLess(cmdSN, exp) || serialLess(s.maxCmdSN.Load(), cmdSN) {
		return cmdSNOutside
	}
	return cmdSNAhead
}

// advanceCmdSN accepts the command with CmdSN == ExpCmdSN.
func (s *session) advanceCmdSN() { s.expCmdSN.Add(1) }

// releaseCmdSN opens the window by one after a non-immediate command retired.
func (s *session) releaseCmdSN() { s.maxCmdSN.Add(1) }

// serialLess is a < b in 32-bit serial number arithmetic (RFC 1982).
func serialLess(a, b uint32) bool {
	return a != b && int32(b-a) > 0
}

// terminate ends the session: the connection closes, and the receiver's
// cleanup (connLost) aborts the tasks and waits for them.
func (s *session) terminate(err error) {
	if c := s.conn; c != nil {
		c.close(err)
	}
}

// connLost runs when the session's only connection ended (ERL 0: the
// session ends with it, RFC 7143 §6.1.2). It aborts every task, waits for
// executing ones to finish so none of this nexus's I/O can happen later,
// and releases the TSIH.
func (s *session) connLost(c *conn) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.abortAll()
		s.sched.stop()
		s.srv.sessions.remove(s)
		if s.nexus != nil {
			s.node.Router.NexusLost(s.nexus)
		}
		s.log.Info("iscsi: session ended")
		close(s.ended)
	})
}
