package metrics

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target"
)

// Health answers the liveness and readiness probes.
//
// /healthz (liveness) is 200 while the server's state can be read: the
// check takes the server's locks, so a wedged target fails it (by timing
// out) rather than passing it. /readyz (readiness) is 200 once the daemon
// called SetReady (its listeners are up and its LUNs open), while at
// least one listener accepts and before shutdown begins; otherwise 503
// with the reason.
type Health struct {
	srv   *target.Server
	ready atomic.Bool
}

// NewHealth returns the probes of srv, not ready yet.
func NewHealth(srv *target.Server) *Health { return &Health{srv: srv} }

// SetReady marks the daemon ready (true) or not (false).
func (h *Health) SetReady(ready bool) { h.ready.Store(ready) }

// Ready reports readiness and, when not ready, why.
func (h *Health) Ready() (bool, string) {
	st := h.srv.Stats()
	switch {
	case st.Closing:
		return false, "shutting down"
	case !h.ready.Load():
		return false, "starting"
	case st.Listening == 0:
		return false, "no listener accepting connections"
	}
	return true, ""
}

func (h *Health) healthz(w http.ResponseWriter, _ *http.Request) {
	_ = h.srv.Stats()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *Health) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if ok, why := h.Ready(); !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", why)
		return
	}
	fmt.Fprintln(w, "ready")
}

// NewHandler serves /metrics from g, /healthz and /readyz from h, and a
// short index at /. Errors while gathering are logged to log.
func NewHandler(g prometheus.Gatherer, h *Health, log *logrus.Entry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            promLogger{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "iscsi-target: /metrics /healthz /readyz")
	})
	return mux
}

// promLogger adapts logrus to promhttp.Logger.
type promLogger struct{ log *logrus.Entry }

func (l promLogger) Println(v ...any) {
	if l.log != nil {
		l.log.Error(append([]any{"metrics: "}, v...)...)
	}
}
