package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Runtime is the daemon's resource use as its admin socket reports it
// (GET /v1/debug/runtime).
type Runtime struct {
	Goroutines int    `json:"goroutines"`
	FDs        int    `json:"fds"`
	RSSBytes   int64  `json:"rss_bytes"`
	HeapBytes  uint64 `json:"heap_bytes"`
	Sessions   int    `json:"sessions"`
	Stacks     string `json:"stacks"`
	Limits     struct {
		ConnectionsRefusedTotal     uint64
		ConnectionsRefusedPerSource uint64
		SessionsRefused             uint64
		DataBufferWaits             uint64
		DataBufferRefusals          uint64
		DataBufferBytes             int64
		DataBufferLimit             int64
	} `json:"limits"`
}

// AdminSocket is the path of the daemon's admin socket.
func (tg *Target) AdminSocket() string { return filepath.Join(tg.StateDir, "admin.sock") }

// Runtime asks the daemon for its resource use; gc runs a garbage
// collection first (for RSS comparisons), stacks adds every goroutine's
// stack.
func (tg *Target) Runtime(gc, stacks bool) (*Runtime, error) {
	return QueryRuntime(tg.AdminSocket(), gc, stacks)
}

// QueryRuntime asks the daemon serving the admin socket at path.
func QueryRuntime(socket string, gc, stacks bool) (*Runtime, error) {
	url := "http://iscsi-target/v1/debug/runtime?"
	if gc {
		url += "gc&"
	}
	if stacks {
		url += "stacks"
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialUnix(ctx, socket) },
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin socket: %s: %s", resp.Status, b)
	}
	var r Runtime
	return &r, json.Unmarshal(b, &r)
}

// dialUnix connects to a unix socket whose path may exceed sun_path, via
// /proc/self/fd of its directory.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	addr := path
	if len(path) >= 100 {
		fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer syscall.Close(fd)
		addr = fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path))
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", addr)
}

// leakSlack is how many goroutines above the idle baseline still count as
// idle (the admin request being served, a connection closing).
const leakSlack = 3

// checkNoLeaks waits for the daemon to have no sessions and at most its
// idle number of goroutines again, and fails the test otherwise: every
// closed session must release its receiver, transmitter and workers.
func (tg *Target) checkNoLeaks() {
	if tg.baseline == 0 || tg.Exited() {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	var last *Runtime
	for {
		r, err := tg.Runtime(false, false)
		if err == nil {
			last = r
			if r.Sessions == 0 && r.Goroutines <= tg.baseline+leakSlack {
				return
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r, err := tg.Runtime(false, true)
	if err != nil {
		tg.t.Errorf("goroutine leak check: admin socket: %v", err)
		return
	}
	_ = last
	tg.t.Errorf("goroutine leak: the daemon has %d sessions and %d goroutines 30 s after the test, %d when idle at start:\n%s",
		r.Sessions, r.Goroutines, tg.baseline, r.Stacks)
}
