// Package target is the iSCSI target of RFC 7143: it accepts TCP
// connections, runs login and negotiation, keeps sessions and their CmdSN
// windows, moves SCSI data with R2T/Data-Out and Data-In, answers task
// management, text and NOP PDUs, and hands SCSI commands to a scsi.Router.
package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/internal/bufpool"
	"github.com/iscsi-target/iscsi-target/scsi"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("iscsi: server closed")

// Node is one iSCSI target node: a target name and the logical units behind
// it. A Server serves any number of nodes on all its portals.
type Node struct {
	// Name is the iSCSI target name (an iqn. or eui. name).
	Name string
	// Alias is reported as TargetAlias when set.
	Alias string
	// TPGT is the target portal group tag; 0 means 1.
	TPGT uint16
	// Router executes SCSI commands for the node's LUNs.
	Router *scsi.Router
	// AccessMode overrides Config.AccessMode for this node when set.
	AccessMode AccessMode
	// MaxSessions bounds the normal sessions of this node (ietd's
	// MaxSessions); further logins get Login Response 0x0302 (out of
	// resources). 0 means no limit.
	MaxSessions int
	// Auth, when set, is the CHAP this node's sessions must pass instead
	// of Config.Auth.Session; ACL, when set, replaces Config.Access for
	// this node (nodes.go).
	Auth *chap.TargetConfig
	ACL  *ACL
}

// Config configures a Server. Zero values select the documented defaults.
type Config struct {
	// Nodes served. Names must be unique.
	Nodes []*Node
	// Advertise lists "host:port" portals returned in SendTargets. Empty
	// means the local address of the connection the request came in on.
	Advertise []string
	// Offer is what the target negotiates; zero fields take defaults:
	// digests CRC32C and None accepted, MaxRecvDataSegmentLength 256 KiB,
	// MaxBurstLength 16 MiB-1, FirstBurstLength 256 KiB, InitialR2T No,
	// ImmediateData Yes, MaxOutstandingR2T 8, DefaultTime2Wait 2,
	// DefaultTime2Retain 20.
	Offer Offer
	// CmdWindow is the number of commands a session may have in flight
	// (the CmdSN window, RFC 7143 §4.2.2.1); default 128.
	CmdWindow int
	// NOPInterval is how long a connection may be silent before the target
	// sends a NOP-In ping; default 5 s, negative disables pings.
	NOPInterval time.Duration
	// NOPTimeout is how long a ping may go unanswered before the
	// connection is declared dead; default 10 s. It also sets
	// TCP_USER_TIMEOUT on accepted connections.
	NOPTimeout time.Duration
	// BusyPoll is how long a connection's receiver keeps reading its
	// empty socket, while no command of its session executes and the
	// initiator is not pipelining, before it sleeps until data arrives
	// (busypoll.go): it trades CPU for latency at low queue depth.
	// Default DefaultBusyPoll, at most MaxBusyPoll; negative disables
	// polling. At most GOMAXPROCS-1 receivers poll at once.
	BusyPoll time.Duration
	// MaxConnections bounds the connections open at once, in login or
	// later; default 1024. Connections beyond it are closed on accept.
	MaxConnections int
	// MaxConnectionsPerSource bounds the connections from one source IP
	// address; default 64.
	MaxConnectionsPerSource int
	// DataBufferBudget bounds the memory lent to commands as data buffers,
	// across all sessions; default 256 MiB. Commands beyond it wait (or a
	// write is answered TASK SET FULL), they never allocate more.
	DataBufferBudget int64
	// LoginTimeout bounds the whole login phase; default 15 s.
	LoginTimeout time.Duration
	// LogoutTime2Wait is Parameter3 of the logout request sent at shutdown:
	// the seconds the initiator has to log out before the target drops the
	// connection (RFC 7143 §11.9.1); default 0.
	LogoutTime2Wait uint16
	// AccessMode is the nodes' write-access mode; default
	// AccessSingleWriter (the single-writer lease, lease.go).
	AccessMode AccessMode
	// StateDir is where the lease state (lease.json) is persisted; empty
	// keeps it in memory only.
	StateDir string
	// Auth configures CHAP for normal and discovery sessions and the
	// penalty for failed logins (auth.go); the zero value is AuthMethod=None.
	Auth AuthConfig
	// Access, when set, restricts which initiators may log in (acl.go).
	Access *ACL
	// Log receives the server's log; nil discards.
	Log *logrus.Entry
}

func (c *Config) setDefaults() {
	o := &c.Offer
	if len(o.HeaderDigests) == 0 {
		o.HeaderDigests = []string{"CRC32C", "None"}
	}
	if len(o.DataDigests) == 0 {
		o.DataDigests = []string{"CRC32C", "None"}
	}
	if o.MaxRecvDataSegmentLength == 0 {
		o.MaxRecvDataSegmentLength = 256 << 10
	}
	if o.MaxBurstLength == 0 {
		o.MaxBurstLength = maxSegmentLength
	}
	if o.FirstBurstLength == 0 {
		o.FirstBurstLength = 256 << 10
	}
	if o.MaxOutstandingR2T == 0 {
		o.MaxOutstandingR2T = 8
	}
	if o.DefaultTime2Wait == 0 {
		o.DefaultTime2Wait = 2
	}
	if o.DefaultTime2Retain == 0 {
		o.DefaultTime2Retain = 20
	}
	if c.CmdWindow <= 0 {
		c.CmdWindow = 128
	}
	if c.NOPInterval == 0 {
		c.NOPInterval = 5 * time.Second
	}
	if c.NOPTimeout <= 0 {
		c.NOPTimeout = 10 * time.Second
	}
	if c.BusyPoll == 0 {
		c.BusyPoll = DefaultBusyPoll
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1024
	}
	if c.MaxConnectionsPerSource <= 0 {
		c.MaxConnectionsPerSource = 64
	}
	if c.DataBufferBudget <= 0 {
		c.DataBufferBudget = 256 << 20
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 15 * time.Second
	}
	if c.AccessMode == "" {
		c.AccessMode = AccessSingleWriter
	}
	c.Auth.setDefaults()
	if c.Log == nil {
		l := logrus.New()
		l.Out = discard{}
		c.Log = logrus.NewEntry(l)
	}
	for _, n := range c.Nodes {
		if n.TPGT == 0 {
			n.TPGT = 1
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (c *Config) validate() error {
	o := c.Offer
	for _, v := range []struct {
		name string
		val  int
	}{
		{"MaxRecvDataSegmentLength", o.MaxRecvDataSegmentLength},
		{"MaxBurstLength", o.MaxBurstLength},
		{"FirstBurstLength", o.FirstBurstLength},
	} {
		if v.val < minSegmentLength || v.val > maxSegmentLength {
			return fmt.Errorf("iscsi: %s %d outside [%d, %d]", v.name, v.val, minSegmentLength, maxSegmentLength)
		}
	}
	// The RFC defaults apply when an initiator does not negotiate a key,
	// so the target must be able to handle at least them.
	if o.MaxBurstLength < 262144 || o.FirstBurstLength < 65536 {
		return fmt.Errorf("iscsi: MaxBurstLength must be >= 262144 and FirstBurstLength >= 65536")
	}
	if o.FirstBurstLength > o.MaxBurstLength {
		return fmt.Errorf("iscsi: FirstBurstLength %d exceeds MaxBurstLength %d", o.FirstBurstLength, o.MaxBurstLength)
	}
	if o.MaxOutstandingR2T < 1 || o.MaxOutstandingR2T > maxR2TPerTask {
		return fmt.Errorf("iscsi: MaxOutstandingR2T %d outside [1, %d]", o.MaxOutstandingR2T, maxR2TPerTask)
	}
	if c.CmdWindow > 1<<16 {
		return fmt.Errorf("iscsi: CmdWindow %d too large", c.CmdWindow)
	}
	if c.BusyPoll > MaxBusyPoll {
		return fmt.Errorf("iscsi: BusyPoll %v too long (at most %v)", c.BusyPoll, MaxBusyPoll)
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if c.Access != nil {
		if err := c.Access.Validate(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if n.Name == "" || n.Router == nil {
			return errors.New("iscsi: node without name or router")
		}
		if seen[n.Name] {
			return fmt.Errorf("iscsi: duplicate target name %q", n.Name)
		}
		seen[n.Name] = true
		if n.AccessMode != "" && n.AccessMode != AccessSingleWriter && n.AccessMode != AccessShared {
			return fmt.Errorf("iscsi: node %s: unknown access mode %q", n.Name, n.AccessMode)
		}
	}
	if c.AccessMode != AccessSingleWriter && c.AccessMode != AccessShared {
		return fmt.Errorf("iscsi: unknown access mode %q", c.AccessMode)
	}
	for _, a := range c.Advertise {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("iscsi: advertise address %q: %w", a, err)
		}
	}
	return nil
}

// Server serves iSCSI on any number of listeners.
type Server struct {
	cfg  Config
	log  *logrus.Entry
	bufs *bufpool.Pool
	// rxBufs lends busy connections their large receive buffers (rxbuf.go);
	// apart from bufs so DataBuffersInUse counts command data only.
	rxBufs *bufpool.Pool

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	perSource map[string]int // open connections by source IP
	closing   bool
	connWG    sync.WaitGroup

	sessions sessionTable
	nodes    nodeTable              // nodes.go
	timers   atomic.Pointer[Timers] // nodes.go
	leases   *leaseManager
	auth     *authState
	nextID   atomic.Uint64
	tasks    sync.Pool
	stats    serverStats // counters for Stats (stats.go)
	budget   *budget
	watch    inlineWatch // inline.go
	poll     *busyPoll   // busypoll.go

	// Logins refused by Node.MaxSessions.
	refusedSessions atomic.Uint64
	// Connections refused on accept because of MaxConnections and
	// MaxConnectionsPerSource.
	refusedTotal, refusedSource atomic.Uint64
	lastRefusalLog              atomic.Int64

	// workerHook, set only by tests (export_test.go), is called with each
	// command's CDB where it executes (a worker or the receiver), ahead
	// of execution, outside the device server's own recover; for a
	// command Plan completed, where the receiver answers it.
	workerHook atomic.Pointer[func(cdb []byte)]
	// tmfHook, likewise, runs at the start of the goroutine that sends a
	// task management response once the aborted tasks have drained.
	tmfHook atomic.Pointer[func()]
	// readyHook, likewise, runs in the receiver right after it has made a
	// task ready (and possibly handed it to a worker), before it looks at
	// whether to run it inline: a test widens that window with it.
	readyHook atomic.Pointer[func()]
}

// recovered logs a recovered panic p with msg and the stack, counts it in
// Stats().Panics, and closes c unless it is nil.
func (s *Server) recovered(log *logrus.Entry, c *conn, msg string, p any) {
	log.WithField("panic", p).Errorf("%s\n%s", msg, debug.Stack())
	s.stats.panics.Add(1)
	if c != nil {
		c.close(fmt.Errorf("%s: %v", msg, p))
	}
}

// NewServer validates cfg and returns a server ready to Serve.
func NewServer(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var err error
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		log:       cfg.Log,
		bufs:      bufpool.New(),
		rxBufs:    bufpool.New(),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		perSource: make(map[string]int),
		budget:    newBudget(cfg.DataBufferBudget),
		poll:      newBusyPoll(cfg.BusyPoll),
	}
	s.sessions.init()
	s.nodes.list = cfg.Nodes
	s.timers.Store(&Timers{NOPInterval: cfg.NOPInterval, NOPTimeout: cfg.NOPTimeout})
	s.auth = newAuthState(&s.cfg.Auth)
	s.tasks.New = func() any { return new(task) }
	for _, n := range cfg.Nodes {
		n.Router.SetTaskAborter(s.preemptAborter(n)) // reservations.go
		n.Router.SetNexusReaper(s.nexusReaper(n))    // reaper.go
	}
	if s.leases, err = newLeaseManager(s); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// node returns the node called name, or nil.
func (s *Server) node(name string) *Node {
	for _, n := range s.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Serve accepts connections on l until Shutdown or Close. It always returns
// a non-nil error; after Shutdown or Close it is ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Resource exhaustion (EMFILE, ENFILE, ENOBUFS) and
			// aborted handshakes are retried with a growing pause, as
			// net/http does.
			backoff = nextBackoff(backoff)
			s.log.WithError(err).Warnf("iscsi: accept error; retrying in %v", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	d *= 2
	if d > time.Second {
		d = time.Second
	}
	return d
}

// Listening returns how many listeners Serve is accepting on.
func (s *Server) Listening() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.listeners)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// newConn registers a connection; it returns nil when the server is
// closing or the connection is over a limit (then it is closed at once).
func (s *Server) newConn(nc net.Conn) *conn {
	src := sourceIP(nc.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return nil
	}
	var over string
	switch {
	case len(s.conns) >= s.cfg.MaxConnections:
		s.refusedTotal.Add(1)
		over = "MaxConnections"
	case s.perSource[src] >= s.cfg.MaxConnectionsPerSource:
		s.refusedSource.Add(1)
		over = "MaxConnectionsPerSource"
	}
	if over != "" {
		nc.Close()
		// At most one line a second: a flood must not flood the log.
		now := time.Now().UnixNano()
		if last := s.lastRefusalLog.Load(); now-last >= int64(time.Second) && s.lastRefusalLog.CompareAndSwap(last, now) {
			s.log.WithFields(logrus.Fields{"remote": nc.RemoteAddr().String(), "limit": over,
				"refused_total": s.refusedTotal.Load() + s.refusedSource.Load()}).Warn("iscsi: connection refused: limit reached")
		}
		return nil
	}
	c := newConn(s, nc)
	s.stats.accepted.Add(1)
	c.source = src
	s.conns[c] = struct{}{}
	s.perSource[src]++
	s.connWG.Add(1)
	return c
}

func (s *Server) forgetConn(c *conn) {
	if c.inl.joined {
		s.watch.leave(c)
	}
	s.mu.Lock()
	delete(s.conns, c)
	if s.perSource[c.source]--; s.perSource[c.source] <= 0 {
		delete(s.perSource, c.source)
	}
	s.mu.Unlock()
	s.connWG.Done()
}

// sourceIP is the IP address of a remote address, the unit of the
// per-source connection limit.
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// LimitStats counts what the resource limits refused or delayed.
type LimitStats struct {
	// ConnectionsRefusedTotal and ConnectionsRefusedPerSource count
	// connections closed on accept by MaxConnections and
	// MaxConnectionsPerSource.
	ConnectionsRefusedTotal     uint64
	ConnectionsRefusedPerSource uint64
	// SessionsRefused counts logins refused by Node.MaxSessions.
	SessionsRefused uint64
	// DataBufferWaits counts commands that waited for buffer memory;
	// DataBufferRefusals writes answered TASK SET FULL for lack of it.
	DataBufferWaits    uint64
	DataBufferRefusals uint64
	// DataBufferBytes is the budget in use now; DataBufferLimit its size.
	DataBufferBytes int64
	DataBufferLimit int64
}

// LimitStats returns the resource-limit counters.
func (s *Server) LimitStats() LimitStats {
	return LimitStats{
		ConnectionsRefusedTotal:     s.refusedTotal.Load(),
		ConnectionsRefusedPerSource: s.refusedSource.Load(),
		SessionsRefused:             s.refusedSessions.Load(),
		DataBufferWaits:             s.budget.waits.Load(),
		DataBufferRefusals:          s.budget.refused.Load(),
		DataBufferBytes:             s.budget.used.Load(),
		DataBufferLimit:             s.budget.limit,
	}
}

// Shutdown stops the server gracefully: it closes the listeners, asks every
// initiator in full feature phase to log out (Asynchronous Message, RFC 7143
// §11.9.1 event 1), lets in-flight commands finish and waits for the
// sessions to end. When ctx expires first, the remaining connections are
// closed; commands already executing still run to completion (so a write
// is either fully done or never acknowledged) before Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.requestLogout(s.cfg.LogoutTime2Wait)
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			s.cancel()
			return nil
		case <-ctx.Done():
			s.closeAll()
			<-done
			s.cancel()
			return ctx.Err()
		case <-ticker.C:
			// Connections still in login or idle in discovery have nobody
			// to ask; close them.
			s.closeIdle()
		}
	}
}

// Close closes all listeners and connections at once. Executing commands
// still finish before Close returns.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.closeAll()
	s.connWG.Wait()
	s.cancel()
	return nil
}

func (s *Server) closeAll() {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(errShutdown)
	}
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if c.idleForShutdown() {
			c.close(errShutdown)
		}
	}
}

var errShutdown = errors.New("iscsi: server shutting down")

// SessionInfo describes a session for operators (iscsi-target sessions).
type SessionInfo struct {
	Target        string
	InitiatorName string
	ISID          string
	TSIH          uint16
	Discovery     bool
	RemoteAddr    string
	LocalAddr     string
	Params        string
	Since         time.Time
}

// DataBuffersInUse is the capacity of the pooled data buffers currently
// lent to commands; 0 once every command has completed or been aborted.
func (s *Server) DataBuffersInUse() int64 { return s.bufs.Stats().OutstandingBytes }

// Sessions lists the current sessions.
func (s *Server) Sessions() []SessionInfo {
	return s.sessions.list()
}
