package target

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsi-target/iscsi-target/chap"
)

// nodeTable is the set of nodes a Server serves; AddNode, RemoveNode and
// ReplaceNode change it while sessions run.
type nodeTable struct {
	mu   sync.RWMutex
	list []*Node
	// discovery replaces Config.Auth.Discovery once SetDiscoveryAuth ran.
	discovery atomic.Pointer[discoveryAuth]
}

type discoveryAuth struct{ cfg *chap.TargetConfig }

// aclFor returns the access list that applies to node n.
func (s *Server) aclFor(n *Node) *ACL {
	if n != nil && n.ACL != nil {
		return n.ACL
	}
	return s.cfg.Access
}

// discoveryAuth returns the CHAP configuration of discovery sessions.
func (s *Server) discoveryAuth() *chap.TargetConfig {
	if d := s.nodes.discovery.Load(); d != nil {
		return d.cfg
	}
	return s.cfg.Auth.Discovery
}

// SetDiscoveryAuth changes the CHAP configuration of discovery sessions
// for logins from now on (nil: AuthMethod=None).
func (s *Server) SetDiscoveryAuth(cfg *chap.TargetConfig) error {
	if cfg != nil {
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	s.nodes.discovery.Store(&discoveryAuth{cfg: cfg})
	return nil
}

// Allowed reports whether the initiator (name and address) may log in to
// node n under the access list in force now; CloseSessions uses it after
// an ACL change.
func (s *Server) Allowed(n *Node, initiator, remoteAddr string) bool {
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		addr = ap.Addr().Unmap()
	}
	ok, _ := s.aclFor(n).Allowed(n.Name, initiator, addr)
	return ok
}

// Timers are the liveness timers (see Config.NOPInterval, NOPTimeout).
type Timers struct {
	NOPInterval time.Duration
	NOPTimeout  time.Duration
}

// Nodes returns the nodes served.
func (s *Server) Nodes() []*Node {
	s.nodes.mu.RLock()
	defer s.nodes.mu.RUnlock()
	return slices.Clone(s.nodes.list)
}

// Node returns the node called name, or nil.
func (s *Server) Node(name string) *Node { return s.node(name) }

func checkNode(n *Node) error {
	if n == nil || n.Name == "" || n.Router == nil {
		return errors.New("iscsi: node without name or router")
	}
	if n.MaxSessions < 0 {
		return fmt.Errorf("iscsi: node %s: MaxSessions %d < 0", n.Name, n.MaxSessions)
	}
	if n.Auth != nil {
		if err := n.Auth.Validate(); err != nil {
			return fmt.Errorf("iscsi: node %s: %w", n.Name, err)
		}
	}
	if n.ACL != nil {
		if err := n.ACL.Validate(); err != nil {
			return fmt.Errorf("iscsi: node %s: %w", n.Name, err)
		}
	}
	if n.AccessMode != "" && n.AccessMode != AccessSingleWriter && n.AccessMode != AccessShared {
		return fmt.Errorf("iscsi: node %s: unknown access mode %q", n.Name, n.AccessMode)
	}
	if n.TPGT == 0 {
		n.TPGT = 1
	}
	return nil
}

// AddNode starts serving a node: logins and SendTargets see it at once.
func (s *Server) AddNode(n *Node) error {
	if err := checkNode(n); err != nil {
		return err
	}
	s.nodes.mu.Lock()
	defer s.nodes.mu.Unlock()
	for _, x := range s.nodes.list {
		if x.Name == n.Name {
			return fmt.Errorf("iscsi: duplicate target name %q", n.Name)
		}
	}
	n.Router.SetTaskAborter(s.preemptAborter(n)) // reservations.go
	s.leases.addNode(n.Name)
	s.nodes.list = append(slices.Clone(s.nodes.list), n)
	s.log.WithField("target", n.Name).Info("target added")
	return nil
}

// ReplaceNode swaps the node of the same name for n, for new logins and
// SendTargets. Sessions already logged in keep the node they logged in to
// (with its Router, whose LUs can change with AddLU/RemoveLU); end them
// with CloseSessions when they are no longer allowed.
func (s *Server) ReplaceNode(n *Node) error {
	if err := checkNode(n); err != nil {
		return err
	}
	s.nodes.mu.Lock()
	defer s.nodes.mu.Unlock()
	for i, x := range s.nodes.list {
		if x.Name == n.Name {
			if n.Router != x.Router {
				n.Router.SetTaskAborter(s.preemptAborter(n))
			}
			list := slices.Clone(s.nodes.list)
			list[i] = n
			s.nodes.list = list
			return nil
		}
	}
	return fmt.Errorf("iscsi: no target %q", n.Name)
}

// RemoveNode stops serving the node called name: new logins get "not
// found", and its sessions are closed (their executing commands finish
// first, as at shutdown). It returns the node so the caller can close its
// Router once the sessions are gone (WaitSessions).
func (s *Server) RemoveNode(name string) (*Node, error) {
	s.nodes.mu.Lock()
	var gone *Node
	list := make([]*Node, 0, len(s.nodes.list))
	for _, x := range s.nodes.list {
		if x.Name == name {
			gone = x
			continue
		}
		list = append(list, x)
	}
	s.nodes.list = list
	s.nodes.mu.Unlock()
	if gone == nil {
		return nil, fmt.Errorf("iscsi: no target %q", name)
	}
	n := s.CloseSessions(func(si SessionInfo) bool { return si.Target == name }, "target removed")
	s.log.WithFields(map[string]any{"target": name, "sessions": n}).Info("target removed")
	return gone, nil
}

// CloseSessions closes the connection of every normal session for which
// match returns true and returns how many it closed. The sessions end as
// after a connection loss (tasks aborted, executing commands finished).
func (s *Server) CloseSessions(match func(SessionInfo) bool, reason string) int {
	t := &s.sessions
	t.mu.Lock()
	var list []*session
	for _, ss := range t.byT {
		if ss.node == nil {
			continue
		}
		si := SessionInfo{Target: ss.node.Name, InitiatorName: ss.initiatorName, ISID: ss.isid.String(), TSIH: ss.tsih}
		if c := ss.conn; c != nil {
			si.RemoteAddr = c.nc.RemoteAddr().String()
			si.LocalAddr = c.nc.LocalAddr().String()
		}
		if match(si) {
			list = append(list, ss)
		}
	}
	t.mu.Unlock()
	for _, ss := range list {
		ss.log.WithField("reason", reason).Info("iscsi: closing session")
		ss.terminate(fmt.Errorf("iscsi: %s", reason))
	}
	return len(list)
}

// WaitSessions blocks until no session of the node called name is left
// (after RemoveNode or CloseSessions) or done is closed; it reports
// whether they all ended.
func (s *Server) WaitSessions(name string, done <-chan struct{}) bool {
	t := &s.sessions
	for {
		t.mu.Lock()
		var wait *session
		for _, ss := range t.byT {
			if ss.node != nil && ss.node.Name == name {
				wait = ss
				break
			}
		}
		t.mu.Unlock()
		if wait == nil {
			return true
		}
		select {
		case <-wait.ended:
		case <-done:
			return false
		}
	}
}

// SetTimers changes the liveness timers for connections accepted from now
// on; connections already open keep theirs. NOPInterval <= 0 disables
// pings.
func (s *Server) SetTimers(tm Timers) error {
	if tm.NOPTimeout <= 0 {
		return errors.New("iscsi: NOPTimeout must be > 0")
	}
	if tm.NOPInterval == 0 {
		tm.NOPInterval = -1
	}
	s.timers.Store(&tm)
	return nil
}

// addNode prepares the lease counters of a node added while serving. A
// lease recorded for that name in the state directory (a target removed
// and added back) stays in force.
func (m *leaseManager) addNode(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counters[name] == nil {
		m.counters[name] = new(LeaseCounters)
	}
}

// countNode counts the sessions of the node called name; t.mu is held.
func (t *sessionTable) countNode(name string) int {
	n := 0
	for _, s := range t.byT {
		if s.node != nil && s.node.Name == name {
			n++
		}
	}
	return n
}
