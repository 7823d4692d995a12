package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is one long-running daemon process whose stdout and stderr go to a
// log file. It can be stopped and started again with the same command line.
// proc is not safe for concurrent use; Peer serialises access.
type proc struct {
	argv    []string
	env     []string // appended to os.Environ()
	dir     string
	logPath string

	cmd  *exec.Cmd
	done chan error // receives cmd.Wait's result once; re-sent by readers
}

// start runs the command. The child gets SIGKILL if the test process dies,
// so an aborted run leaves no daemon behind.
func (p *proc) start() error {
	if p.cmd != nil && !p.exited() {
		return errors.New("harness: process already running")
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("harness: log file: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s start: %q\n", time.Now().Format(time.RFC3339Nano), p.argv)
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: start %s: %w", p.argv[0], err)
	}
	p.cmd = cmd
	p.done = make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
	return nil
}

// pid returns the process id, or 0 when never started.
func (p *proc) pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exited reports whether the process has ended (true when never started).
func (p *proc) exited() bool {
	if p.cmd == nil {
		return true
	}
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the exit and returns the exit error, or
// context.DeadlineExceeded.
func (p *proc) wait(timeout time.Duration) error {
	if p.cmd == nil {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-t.C:
		return context.DeadlineExceeded
	}
}

// exitErr returns the exit error of an exited process (nil for status 0 or
// when it is still running).
func (p *proc) exitErr() error {
	if p.cmd == nil || !p.exited() {
		return nil
	}
	err := <-p.done
	p.done <- err
	return err
}

// stop sends SIGTERM, waits grace, then SIGKILL and waits up to 10 s more.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(grace); !errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return p.kill()
}

// kill sends SIGKILL and waits up to 10 s for the exit.
func (p *proc) kill() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	if err := p.wait(10 * time.Second); errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("harness: pid %d did not exit after SIGKILL", p.pid())
	}
	return nil
}

// runTool runs a short helper command (tgtadm, ip, truncate) under a
// timeout and returns its combined output.
func runTool(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%w (timeout %v)", err, timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %q: %w: %s", name, args, err, out)
	}
	return string(out), nil
}

// makeSparse creates (or truncates to) a sparse file of size bytes.
func makeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
