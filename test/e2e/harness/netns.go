package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Private network namespaces hold peers that listen on every interface
// (gotgt). Their names carry the creating process id, so namespaces left by
// a killed test run can be recognised and removed by the next one.
const netnsPrefix = "itgt-"

var netnsSeq atomic.Int64

// NewNetns creates a network namespace whose only interface is lo (up) and
// returns its name and a function that deletes it, ending any process still
// inside (all of them were started by this harness).
func NewNetns(ctx context.Context) (string, func() error, error) {
	reapStaleNetns(ctx)
	name := fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1))
	if _, err := runTool(ctx, 10*time.Second, "ip", "netns", "add", name); err != nil {
		return "", nil, err
	}
	del := func() error { return deleteNetns(context.Background(), name) }
	if _, err := runTool(ctx, 10*time.Second, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"); err != nil {
		_ = del()
		return "", nil, err
	}
	return name, del, nil
}

// deleteNetns kills the processes left in the namespace and removes it.
func deleteNetns(ctx context.Context, name string) error {
	out, _ := runTool(ctx, 10*time.Second, "ip", "netns", "pids", name)
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var err error
	for i := 0; i < 20; i++ { // the kernel may need a moment after the kills
		if _, err = runTool(ctx, 10*time.Second, "ip", "netns", "del", name); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// reapStaleNetns deletes namespaces created by harness processes that no
// longer exist.
func reapStaleNetns(ctx context.Context) {
	out, err := runTool(ctx, 10*time.Second, "ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], netnsPrefix) {
			continue
		}
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(f[0], netnsPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // owner still running
		}
		_ = deleteNetns(ctx, f[0])
	}
}

// DialIn opens (and closes) a TCP connection to addr from inside network
// namespace ns ("" = the current one).
func DialIn(ns, addr string, timeout time.Duration) error {
	if ns == "" {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	}
	errc := make(chan error, 1)
	go func() {
		// setns affects only this OS thread; the thread is restored before
		// it is unlocked. If the restore fails, the thread stays locked and
		// is discarded with this goroutine.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := setns(int(target.Fd())); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		c, derr := net.DialTimeout("tcp", addr, timeout)
		if derr == nil {
			derr = c.Close()
		}
		if err := setns(int(orig.Fd())); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- derr
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout + 5*time.Second):
		return errors.New("harness: dial in netns timed out")
	}
}

func setns(fd int) error {
	if sysSetns == 0 {
		return errors.New("setns: unsupported architecture")
	}
	_, _, e := syscall.Syscall(sysSetns, uintptr(fd), uintptr(syscall.CLONE_NEWNET), 0)
	if e != 0 {
		return e
	}
	return nil
}

// WaitListeningIn polls addr inside namespace ns until a connect succeeds,
// the process check alive returns false, or timeout passes.
func WaitListeningIn(ns, addr string, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		err := DialIn(ns, addr, 300*time.Millisecond)
		if err == nil {
			return nil
		}
		if alive != nil && !alive() {
			return fmt.Errorf("process exited before %s listened", addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
