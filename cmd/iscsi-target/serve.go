package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/target"
)

// defaultLUNSize is the size of the sparse LUN created when no --lun is given.
const defaultLUNSize = 1 << 30

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve LUNs over iSCSI",
		Description: `Serves iSCSI targets until SIGTERM or SIGINT: the targets of --config FILE
(YAML, or an ietd.conf), or one target with the given --lun LUNs. Flags given
on the command line override the file. SIGHUP (or iscsi-target reload)
re-reads the file: targets and LUNs are added and removed, grown LUNs are
picked up, sessions that stay allowed keep running; a bad file is refused.

LUN SPEC: PATH[,size=SIZE][,ro][,thin][,removable][,blocksize=512|4096][,serial=S][,id=N][,direct][,sanitize-rate=SIZE]
  A missing PATH with size= is created as a sparse file. PATH may be a block device.
  SIZE accepts bytes or units: 512MiB, 4GiB, 1TB. Without --lun, a 1 GiB sparse
  file default-lun0.img is created in the state directory.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "configuration `FILE`: YAML (see iscsi-target config check) or an ietd.conf"},
			&cli.StringSliceFlag{Name: "listen", Usage: "`HOST:PORT` to listen on (repeatable)", Value: cli.NewStringSlice("0.0.0.0:3260")},
			&cli.StringSliceFlag{Name: "advertise", Usage: "portal `HOST:PORT` returned by SendTargets (repeatable; default: the local address of the connection)"},
			&cli.StringFlag{Name: "iqn", Usage: "target `NAME` (default iqn.2026-11.io.iscsi-target:<hostname>)"},
			&cli.StringSliceFlag{Name: "lun", Usage: "LUN `SPEC` (repeatable, numbered 0,1,2... in order)"},
			&cli.StringFlag{Name: "access", Value: "single-writer", Usage: "`MODE`: single-writer (one initiator name may write) or shared"},
			&cli.StringFlag{Name: "state-dir", Usage: "`DIR` for persistent state (default /var/lib/iscsi-target, or ~/.local/state/iscsi-target when not root)"},
			&cli.DurationFlag{Name: "nop-interval", Value: 5 * time.Second, Usage: "send a NOP-In ping after this much silence (0 disables)"},
			&cli.DurationFlag{Name: "nop-timeout", Value: 10 * time.Second, Usage: "declare a connection dead when a ping is not answered in this time"},
			&cli.DurationFlag{Name: "busy-poll", Value: target.DefaultBusyPoll, Usage: "poll an idle session's socket this long for its next command before sleeping: lower latency at queue depth 1 for CPU (0 disables, at most 1ms)"},
			metricsListenFlag(),
			&cli.StringFlag{Name: "admin-socket", Usage: "`PATH` of the admin socket used by the sessions and lease commands (default STATE-DIR/admin.sock; \"none\" disables it)"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, Usage: "how long SIGTERM waits for initiators to log out"},
			&cli.IntFlag{Name: "max-connections", Value: 1024, Usage: "connections open at once, all initiators together"},
			&cli.IntFlag{Name: "max-connections-per-source", Value: 64, Usage: "connections open at once from one IP address"},
			&cli.IntFlag{Name: "max-sessions", Usage: "normal sessions of the target (0: no limit)"},
			&cli.StringFlag{Name: "data-buffer-budget", Value: "256MiB", Usage: "`SIZE` of memory for command data buffers; commands beyond it wait"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL`: debug, info, warn, error"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT`: text or json"},
		}, authFlags()...),
		Action: serve,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &exitError{code: exitUsage, err: err}
		},
	}
}

func newLogger(level, format string) (*logrus.Logger, error) {
	l := logrus.New()
	l.Out = os.Stderr
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", level)
	}
	l.SetLevel(lv)
	switch format {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return nil, usageError("--log-format %q: want text or json", format)
	}
	return l, nil
}

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/iscsi-target"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "iscsi-target")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "iscsi-target")
	}
	return "iscsi-target-state"
}

func defaultIQN() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return "iqn.2026-11.io.iscsi-target:" + strings.ToLower(h)
}

// serveConfig is everything serve needs, parsed and checked before any
// file is touched.
type serveConfig struct {
	listen    []string
	advertise []string
	iqn       string
	luns      []lunSpec
	access    string
	stateDir  string
	adminSock string
	nopIntv   time.Duration
	nopTmo    time.Duration
	busyPoll  time.Duration
	shutdown  time.Duration
	maxConns  int
	maxPerSrc int
	maxSess   int
	budget    int64
	auth      *authSettings
	// warnings found in the configuration file, logged at start.
	warnings []string
}

func parseServe(c *cli.Context) (*serveConfig, error) {
	sc := &serveConfig{
		listen:    c.StringSlice("listen"),
		advertise: c.StringSlice("advertise"),
		iqn:       c.String("iqn"),
		access:    c.String("access"),
		stateDir:  c.String("state-dir"),
		nopIntv:   c.Duration("nop-interval"),
		nopTmo:    c.Duration("nop-timeout"),
		busyPoll:  c.Duration("busy-poll"),
		shutdown:  c.Duration("shutdown-timeout"),
	}
	var err error
	if sc.auth, err = parseAuth(c, os.Getenv); err != nil {
		return nil, err
	}
	if c.NArg() > 0 {
		return nil, usageError("unexpected arguments %q (LUNs are given with --lun)", c.Args().Slice())
	}
	if sc.iqn == "" {
		sc.iqn = defaultIQN()
	}
	if !config.ValidName(sc.iqn) {
		return nil, usageError("--iqn %q: not an iSCSI name (iqn.YYYY-MM.reverse.domain[:id], eui.<16 hex> or naa.<hex>)", sc.iqn)
	}
	if sc.stateDir == "" {
		sc.stateDir = defaultStateDir()
	}
	switch sc.adminSock = c.String("admin-socket"); sc.adminSock {
	case "":
		sc.adminSock = filepath.Join(sc.stateDir, adminSocketName)
	case "none":
		sc.adminSock = ""
	}
	for _, l := range sc.listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return nil, usageError("--listen %q: %v (use HOST:PORT, [::1]:3260 for IPv6)", l, err)
		}
	}
	for _, a := range sc.advertise {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, usageError("--advertise %q: %v", a, err)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return nil, usageError("--advertise %q: a wildcard address cannot be reached by initiators", a)
		}
	}
	switch sc.access {
	case "single-writer", "shared":
	default:
		return nil, usageError("--access %q: want single-writer or shared", sc.access)
	}
	sc.maxConns, sc.maxPerSrc, sc.maxSess = c.Int("max-connections"), c.Int("max-connections-per-source"), c.Int("max-sessions")
	if sc.maxConns < 1 || sc.maxPerSrc < 1 || sc.maxSess < 0 {
		return nil, usageError("--max-connections and --max-connections-per-source must be >= 1, --max-sessions >= 0")
	}
	b, err := parseSize(c.String("data-buffer-budget"))
	if err != nil || b < 1<<20 {
		return nil, usageError("--data-buffer-budget %q: want a size of at least 1MiB", c.String("data-buffer-budget"))
	}
	sc.budget = b
	if sc.nopIntv < 0 || sc.nopTmo <= 0 {
		return nil, usageError("--nop-interval must be >= 0 and --nop-timeout > 0")
	}
	if sc.busyPoll < 0 || sc.busyPoll > config.MaxBusyPoll {
		return nil, usageError("--busy-poll %v: want 0 (off) to %v", sc.busyPoll, config.MaxBusyPoll)
	}
	specs := c.StringSlice("lun")
	if len(specs) == 0 && !c.IsSet("config") {
		specs = []string{filepath.Join(sc.stateDir, "default-lun0.img") + fmt.Sprintf(",size=%d", defaultLUNSize)}
	}
	for i, s := range specs {
		ls, err := parseLUNSpec(s)
		if err != nil {
			return nil, usageError("--lun %q (LUN %d): %v", s, i+1, err)
		}
		sc.luns = append(sc.luns, ls)
	}
	if err := assignIDs(sc.luns); err != nil {
		return nil, usageError("%v", err)
	}
	return sc, nil
}

func serve(c *cli.Context) error {
	logger, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	sc, err := parseServe(c)
	if err != nil {
		return err
	}
	f, load, err := effectiveConfig(c, sc)
	if err != nil {
		return err
	}
	log := logrus.NewEntry(logger)
	for _, w := range sc.warnings {
		log.Warn(w)
	}
	if f.StateDir != "" && !c.IsSet("state-dir") {
		sc.stateDir = f.StateDir
		if !c.IsSet("admin-socket") {
			sc.adminSock = filepath.Join(sc.stateDir, adminSocketName)
		}
	}
	if err := os.MkdirAll(sc.stateDir, 0o700); err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("state directory: %w", err)}
	}
	d := &daemon{stateDir: sc.stateDir, log: log, load: load, sec: securityFlagsOf(c, sc)}
	nodes, err := d.start(f)
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	tm := timersOf(f)
	srv, err := target.NewServer(target.Config{
		Nodes:       nodes,
		Advertise:   f.Advertise,
		Offer:       offerOf(f),
		NOPInterval: tm.NOPInterval,
		NOPTimeout:  tm.NOPTimeout,
		BusyPoll:    busyPollOf(f),
		AccessMode:  target.AccessMode(f.Access),
		StateDir:    sc.stateDir,
		// Resource limits (hostile or broken peers).
		MaxConnections:          f.Limits.MaxConnections,
		MaxConnectionsPerSource: f.Limits.MaxConnectionsPerSource,
		DataBufferBudget:        int64(f.Limits.DataBufferBudget),
		// The logout request tells initiators how long they have.
		LogoutTime2Wait: uint16(min(sc.shutdown/time.Second, 3600)),
		Auth:            sc.auth.cfg,
		Access:          sc.auth.acl,
		Log:             log,
	})
	if err != nil {
		d.closeAll()
		return &exitError{code: exitUsage, err: err}
	}
	if err := d.attach(srv); err != nil {
		d.closeAll()
		return &exitError{code: exitUsage, err: err}
	}

	var listeners []net.Listener
	for _, a := range f.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, x := range listeners {
				x.Close()
			}
			d.closeAll()
			return &exitError{code: exitFailure, err: fmt.Errorf("listen %s: %w", a, err)}
		}
		listeners = append(listeners, l)
	}
	var admin *adminServer
	if sc.adminSock != "" {
		if admin, err = startAdmin(sc.adminSock, adminRoutes(srv, d.opsRoutes), log); err != nil {
			for _, x := range listeners {
				x.Close()
			}
			d.closeAll()
			return &exitError{code: exitFailure, err: err}
		}
		defer admin.Close()
	}
	obs, err := startObservability(c, srv, log) // metrics.go
	if err != nil {
		for _, x := range listeners {
			x.Close()
		}
		d.closeAll()
		return err
	}
	defer obs.Close()
	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		wg.Add(1)
		go func(l net.Listener) {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, target.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
		}(l)
		log.WithField("addr", l.Addr().String()).Info("listening")
	}
	for _, t := range f.Targets {
		access := t.Access
		if access == "" {
			access = f.Access
		}
		for _, l := range t.LUNs {
			log.WithFields(logrus.Fields{"target": t.Name, "lun": *l.ID, "path": l.Path, "ro": l.ReadOnly, "thin": l.Thin,
				"removable": l.Removable}).Info("LUN ready")
		}
		log.WithFields(logrus.Fields{"target": t.Name, "access": access}).Info("target ready")
	}
	logAuth(log, sc.auth)
	// READY=1 and /readyz only once every listener is accepting: the
	// Serve goroutines may not have started yet.
	for deadline := time.Now().Add(5 * time.Second); srv.Listening() < len(listeners) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	log.WithFields(logrus.Fields{"targets": len(f.Targets), "config": c.String("config"), "version": version}).Info("serving")
	obs.ready()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
wait:
	for {
		select {
		case <-hup:
			log.Info("SIGHUP: reloading the configuration")
			obs.reloading()
			res, err := d.reload()
			obs.reloaded()
			if err == nil {
				for _, w := range res.Warnings {
					log.Warn(w)
				}
			}
		case sig := <-sigs:
			log.WithField("signal", sig.String()).Info("shutting down: asking initiators to log out")
			break wait
		case runErr = <-serveErr:
			log.WithError(runErr).Error("listener failed; shutting down")
			break wait
		}
	}
	obs.stopping()
	go func() {
		sig := <-sigs
		log.WithField("signal", sig.String()).Warn("second signal: exiting at once")
		os.Exit(exitFailure)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), sc.shutdown)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.WithError(err).Warn("initiators did not log out in time; connections closed")
	}
	wg.Wait()
	d.mu.Lock()
	if err := d.closeAll(); err != nil {
		log.WithError(err).Error("flushing and closing LUNs")
		runErr = errors.Join(runErr, err)
	}
	d.mu.Unlock()
	log.Info("stopped")
	if runErr != nil {
		return &exitError{code: exitFailure, err: runErr}
	}
	return nil
}
