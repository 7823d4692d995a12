package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"
)

// DialNetns opens a TCP connection to addr from inside network namespace ns
// ("" = the current one) and returns it. A socket keeps the namespace it
// was created in, so the connection stays usable from any goroutine.
func DialNetns(ns, addr string, timeout time.Duration) (net.Conn, error) {
	return DialNetnsFrom(ns, "", addr, timeout)
}

// DialNetnsFrom is DialNetns from local IP address local ("" = chosen by
// the kernel), e.g. one of many 127.x.y.z addresses so that per-source
// connection limits do not apply to a load generator.
func DialNetnsFrom(ns, local, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	if ns == "" {
		return d.Dial("tcp", addr)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// As in DialIn: the thread is restored before it is unlocked, and
		// stays locked (and is discarded) if the restore fails.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := setns(int(target.Fd())); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, derr := d.Dial("tcp", addr)
		if err := setns(int(orig.Fd())); err == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, derr}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(timeout + 5*time.Second):
		return nil, errors.New("harness: dial in netns timed out")
	}
}
