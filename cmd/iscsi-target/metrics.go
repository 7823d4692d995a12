package main

// Observability wiring of serve: the Prometheus listener (--metrics-listen)
// with /metrics, /healthz and /readyz, and the systemd notification
// protocol (READY=1 once the iSCSI listeners are up and the LUNs open,
// WATCHDOG=1 while the server answers, STOPPING=1 at shutdown). The
// health command probes the listener, for container HEALTHCHECKs.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/metrics"
	"github.com/iscsi-target/iscsi-target/target"
)

// defaultMetricsListen is where /metrics is served unless --metrics-listen
// says otherwise; loopback, because the endpoint has no authentication.
const defaultMetricsListen = "127.0.0.1:9273"

func metricsListenFlag() cli.Flag {
	return &cli.StringFlag{Name: "metrics-listen", Value: defaultMetricsListen,
		Usage: "`HOST:PORT` serving Prometheus /metrics, /healthz and /readyz (\"\" disables)"}
}

// observability is the running metrics listener and systemd notifier.
type observability struct {
	log    *logrus.Entry
	srv    *target.Server
	health *metrics.Health
	http   *http.Server
	done   chan struct{} // closed when the HTTP server has stopped

	stopOnce sync.Once
	stopWD   chan struct{}
	wdDone   chan struct{}
}

// startObservability starts the metrics listener named by --metrics-listen
// (nothing when it is empty). A listen failure is an error: an operator
// who asked for metrics must not get a daemon without them.
func startObservability(c *cli.Context, srv *target.Server, log *logrus.Entry) (*observability, error) {
	o := &observability{log: log, srv: srv, health: metrics.NewHealth(srv), stopWD: make(chan struct{})}
	addr := c.String("metrics-listen")
	if addr == "" {
		return o, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageError("--metrics-listen %q: %v", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &exitError{code: exitFailure, err: fmt.Errorf("metrics listener: %w", err)}
	}
	reg := metrics.NewRegistry(srv, version)
	o.http = &http.Server{
		Handler:           metrics.NewHandler(reg, o.health, log),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	o.done = make(chan struct{})
	go func() {
		defer close(o.done)
		if err := o.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics listener stopped")
		}
	}()
	log.WithField("addr", l.Addr().String()).Info("serving metrics")
	return o, nil
}

// ready marks the daemon ready: /readyz answers 200 and systemd gets
// READY=1. When systemd asks for a watchdog (WatchdogSec), WATCHDOG=1 is
// sent every half period for as long as the server's state can be read.
func (o *observability) ready() {
	o.health.SetReady(true)
	o.notify(sdnotify.SdNotifyReady + "\nSTATUS=serving")
	o.wdDone = make(chan struct{})
	interval, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil {
		o.log.WithError(err).Warn("systemd watchdog settings unreadable; not sending WATCHDOG=1")
	}
	if err != nil || interval <= 0 {
		close(o.wdDone)
		return
	}
	go o.watchdog(interval / 2)
}

// watchdog pings systemd after each successful probe of the server. The
// probe (Server.Stats) takes the server's and the session table's locks:
// a wedged daemon stops pinging and systemd restarts it.
func (o *observability) watchdog(every time.Duration) {
	defer close(o.wdDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_ = o.srv.Stats()
		o.notify(sdnotify.SdNotifyWatchdog)
		select {
		case <-o.stopWD:
			return
		case <-t.C:
		}
	}
}

// reloading and reloaded frame a configuration reload for systemd.
func (o *observability) reloading() {
	o.notify(sdnotify.SdNotifyReloading + "\n" + sdnotify.SdNotifyMonotonicUsec())
}

func (o *observability) reloaded() { o.notify(sdnotify.SdNotifyReady + "\nSTATUS=serving") }

// stopping marks the daemon as shutting down: /readyz answers 503 and
// systemd gets STOPPING=1.
func (o *observability) stopping() {
	o.health.SetReady(false)
	o.notify(sdnotify.SdNotifyStopping + "\nSTATUS=draining sessions")
}

func (o *observability) notify(state string) {
	if _, err := sdnotify.SdNotify(false, state); err != nil {
		o.log.WithError(err).Warn("sd_notify failed")
	}
}

// Close stops the watchdog and the metrics listener.
func (o *observability) Close() {
	o.stopOnce.Do(func() { close(o.stopWD) })
	if o.wdDone != nil {
		<-o.wdDone
	}
	if o.http == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.http.Shutdown(ctx)
	<-o.done
}

func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "probe a running daemon's /healthz (or /readyz) endpoint; exit 0 when healthy",
		Description: `Asks the daemon's metrics listener whether it is alive (or, with --ready,
ready to serve). Meant for container HEALTHCHECKs, where no HTTP client is
installed. A wildcard --metrics-listen address is probed on loopback.`,
		Flags: []cli.Flag{
			metricsListenFlag(),
			&cli.BoolFlag{Name: "ready", Usage: "probe /readyz instead of /healthz"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up after this long"},
		},
		Action: health,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &exitError{code: exitUsage, err: err}
		},
	}
}

func health(c *cli.Context) error {
	u, err := probeURL(c.String("metrics-listen"), c.Bool("ready"))
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: c.Duration("timeout")}
	resp, err := client.Get(u)
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("health: %w", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: exitFailure, err: fmt.Errorf("health: %s: %s %s", u, resp.Status, msg)}
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}

// probeURL turns a listen address into the URL of the probe.
func probeURL(listen string, ready bool) (string, error) {
	if listen == "" {
		return "", usageError("--metrics-listen is empty: the daemon has no health endpoint")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", usageError("--metrics-listen %q: %v", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
