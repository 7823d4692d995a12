package main

// The admin socket: HTTP/1.1 with JSON bodies over a unix socket (mode
// 0600) in the state directory. The daemon serves it; the operator
// commands (sessions, lease, reload, ...) are its clients. Routes live
// under /v1/; an error answer is {"error": "..."} with a 4xx/5xx status.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/iscsi-target/iscsi-target/target"
)

// adminSocketName is the socket's file name inside the state directory.
const adminSocketName = "admin.sock"

// adminMaxBody bounds request bodies read by the daemon.
const adminMaxBody = 1 << 20

// adminFlags select the daemon an operator command talks to.
func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "admin-socket", Usage: "`PATH` of the daemon's admin socket (default STATE-DIR/admin.sock)"},
		&cli.StringFlag{Name: "state-dir", Usage: "`DIR` of the daemon (default /var/lib/iscsi-target, or ~/.local/state/iscsi-target when not root)"},
	}
}

// adminSocketPath is the socket a command's flags name.
func adminSocketPath(c *cli.Context) string {
	if p := c.String("admin-socket"); p != "" {
		return p
	}
	dir := c.String("state-dir")
	if dir == "" {
		dir = defaultStateDir()
	}
	return filepath.Join(dir, adminSocketName)
}

// shortUnixPath returns an address for the socket at path that fits in
// sun_path (108 bytes): path itself, or for a longer one the name under
// /proc/self/fd/N of its directory opened with O_PATH (done closes it once
// the socket is bound or connected). Test and container state directories
// easily exceed the limit.
func shortUnixPath(path string) (addr string, done func(), err error) {
	if len(path) < 100 {
		return path, func() {}, nil
	}
	fd, err := syscall.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", filepath.Dir(path), err)
	}
	addr = fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path))
	if len(addr) >= 100 {
		syscall.Close(fd)
		return "", nil, fmt.Errorf("%s: file name too long for a unix socket", path)
	}
	return addr, func() { syscall.Close(fd) }, nil
}

// dialUnix connects to the unix socket at path (any length).
func dialUnix(ctx context.Context, path string, timeout time.Duration) (net.Conn, error) {
	addr, done, err := shortUnixPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, "unix", addr)
}

// adminServer serves the admin routes until closed.
type adminServer struct {
	path string
	l    net.Listener
	srv  *http.Server
	done chan struct{}
}

// startAdmin listens on path. A stale socket left by a killed daemon is
// replaced; a socket another daemon still answers on is an error.
func startAdmin(path string, h http.Handler, log *logrus.Entry) (*adminServer, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := dialUnix(context.Background(), path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another daemon is serving it (is the state directory shared?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: removing stale socket: %w", path, err)
		}
	}
	// The socket is created 0600: only the daemon's user may steer it.
	addr, done, err := shortUnixPath(path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", addr)
	syscall.Umask(old)
	done()
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	a := &adminServer{path: path, l: l, done: make(chan struct{}), srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("admin socket stopped")
		}
	}()
	return a, nil
}

// Close stops the server and removes the socket.
func (a *adminServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}

// adminJSON writes v as a JSON answer with status code.
func adminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// adminError writes an error answer.
func adminError(w http.ResponseWriter, code int, format string, args ...any) {
	adminJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// adminDecode reads a bounded JSON request body into v, rejecting unknown
// fields.
func adminDecode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, adminMaxBody))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// adminCall sends a request to the daemon at socket and decodes the JSON
// answer into out (if not nil).
func adminCall(ctx context.Context, socket, method, route string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://iscsi-target"+route, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialUnix(ctx, socket, 0)
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w (is the daemon running with this --state-dir?)", socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("admin socket: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// adminRoutes returns the daemon's admin handler; each extra function
// registers more routes.
func adminRoutes(srv *target.Server, extra ...func(*http.ServeMux)) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, _ *http.Request) {
		adminJSON(w, http.StatusOK, srv.Sessions())
	})
	leaseRoutes(mux, srv)
	mux.HandleFunc("GET /v1/debug/runtime", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, http.StatusOK, runtimeInfo(srv, r.URL.Query().Has("gc"), r.URL.Query().Has("stacks")))
	})
	for _, f := range extra {
		f(mux)
	}
	return mux
}

func sessionsCommand() *cli.Command {
	return &cli.Command{
		Name:  "sessions",
		Usage: "list the daemon's iSCSI sessions",
		Flags: append(adminFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			var list []target.SessionInfo
			if err := adminCall(c.Context, adminSocketPath(c), http.MethodGet, "/v1/sessions", nil, &list); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tINITIATOR\tISID\tTSIH\tTYPE\tREMOTE\tSINCE")
			for _, s := range list {
				typ := "normal"
				if s.Discovery {
					typ = "discovery"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", dash(s.Target), s.InitiatorName, s.ISID, s.TSIH, typ,
					s.RemoteAddr, s.Since.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// RuntimeInfo is the daemon's resource use, for soak and leak tests and
// for operators chasing one (GET /v1/debug/runtime[?gc][&stacks]).
type RuntimeInfo struct {
	Goroutines int               `json:"goroutines"`
	FDs        int               `json:"fds"`
	RSSBytes   int64             `json:"rss_bytes"`
	HeapBytes  uint64            `json:"heap_bytes"`
	Sessions   int               `json:"sessions"`
	Limits     target.LimitStats `json:"limits"`
	Stacks     string            `json:"stacks,omitempty"`
}

func runtimeInfo(srv *target.Server, gc, stacks bool) RuntimeInfo {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ri := RuntimeInfo{
		Goroutines: runtime.NumGoroutine(),
		HeapBytes:  ms.HeapAlloc,
		Sessions:   len(srv.Sessions()),
		Limits:     srv.LimitStats(),
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		ri.FDs = len(ents)
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, res int64
		if _, err := fmt.Sscan(string(b), &size, &res); err == nil {
			ri.RSSBytes = res * int64(os.Getpagesize())
		}
	}
	if stacks {
		buf := make([]byte, 4<<20)
		ri.Stacks = string(buf[:runtime.Stack(buf, true)])
	}
	return ri
}
