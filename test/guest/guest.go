package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPortal is the portal address the guest reaches the target at.
const DefaultPortal = "10.0.2.100:3260"

// DefaultInitiatorName is the guest's InitiatorName unless the job sets
// one.
const DefaultInitiatorName = "iqn.2026-11.test:guest"

// Forward maps a guest-side address to a TCP address on the host.
type Forward struct {
	// Guest is the address the guest connects to (an address in
	// 10.0.2.0/24 other than .2, .3, .15). Default DefaultPortal.
	Guest string
	// Host is the target's address on the host, e.g. 127.0.0.1:3260.
	Host string
}

// Initiator configures open-iscsi in the guest.
type Initiator struct {
	// Name is the InitiatorName; default DefaultInitiatorName.
	Name string
	// Settings are iscsid.conf lines ("key = value") that replace the
	// kit's defaults, e.g. from Digests, CHAP or ReplacementTimeout.
	Settings []string
}

// JobSpec describes one guest run.
type JobSpec struct {
	// Script is a bash script run as root in the guest, with the helpers
	// of lib.sh (shellLib in initiator.go) already defined and the job
	// directory as working directory. Its exit code is Result.ExitCode.
	Script string
	// Env is exported to the script.
	Env map[string]string
	// Files are written into the job directory before boot.
	Files map[string][]byte
	// Forwards are the guest's only network paths; usually one, to the
	// target under test. The first forward's guest address is exported as
	// ISCSI_PORTAL, all of them as ISCSI_PORTALS.
	Forwards []Forward
	// Initiator configures open-iscsi.
	Initiator Initiator
	// Dir is the job directory on the host (no commas). Default: a new
	// directory under os.TempDir(), left in place for the caller.
	Dir string
	// Timeout bounds the whole run, boot included. Default 5 minutes.
	Timeout time.Duration
}

// Result is what a finished guest run produced.
type Result struct {
	// Dir is the job directory; every file the job wrote is there.
	Dir string
	// ExitCode is the job script's exit code, -1 if it did not finish.
	ExitCode int
	// Console is the serial console (kernel messages at loglevel < 4 and
	// the init script's progress lines).
	Console string
	// Stdout and Stderr are the job script's output.
	Stdout, Stderr string
	// Dmesg is the guest kernel log, taken after the job ended.
	Dmesg string
	// Wall is the host time from QEMU start to exit.
	Wall time.Duration
	// BootUptime is the guest uptime when the job started (boot, modules,
	// 9p root, overlay, network).
	BootUptime time.Duration
	// BootWall is the host time from QEMU start until the job started.
	BootWall time.Duration
}

// File returns a file from the job directory.
func (r *Result) File(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.Dir, name))
}

// Guest boots QEMU guests from a Kit.
type Guest struct {
	Kit *Kit
	// QEMU is the emulator binary; default qemu-system-x86_64.
	QEMU string
	// Accel is QEMU's -accel value; default "tcg,thread=multi". "kvm"
	// works on hosts with a regular /dev/kvm.
	Accel string
	// MemoryMiB and CPUs size the guest; default 1536 and 2.
	MemoryMiB, CPUs int
	// Relay is the fwdrelay binary (see BuildTools) that slirp runs for
	// each guest connection. Empty: socat, as in real-initiator.md. socat's
	// delayed ACKs add about 40 ms to every guest write, and it closes the
	// already accepted guest connection at once while the target is down,
	// which can wedge open-iscsi's reconnect until replacement_timeout
	// (seen with fwdrelay -wait 0; see fwdrelay).
	Relay string
	// CapturePackets records the guest's network traffic (as seen by
	// slirp) into net.pcap in the job directory.
	CapturePackets bool
	// ExtraArgs are appended to QEMU's command line (the guest's netdev id
	// is n0).
	ExtraArgs []string
	// Logf receives progress messages. Optional.
	Logf func(format string, args ...any)
}

// Run boots a guest, runs spec's job to completion and returns its result.
// A non-zero exit code of the job is not an error; a guest that did not
// finish the job (timeout, crash, QEMU failure) is.
func (g *Guest) Run(ctx context.Context, spec JobSpec) (*Result, error) {
	r, err := g.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return r.Wait()
}

// Running is a guest that is still running its job.
type Running struct {
	dir      string
	cmd      *exec.Cmd
	start    time.Time
	done     chan struct{}
	waitErr  error
	end      time.Time
	mu       sync.Mutex
	reason   string // why the host killed the guest, if it did
	bootWall time.Duration
	cancel   context.CancelFunc
}

// Start boots a guest and returns while the job runs. The guest is killed
// when ctx ends or spec.Timeout passes; callers should defer Kill.
func (g *Guest) Start(ctx context.Context, spec JobSpec) (*Running, error) {
	if g.Kit == nil {
		return nil, errors.New("guest: no kit")
	}
	if spec.Timeout == 0 {
		spec.Timeout = 5 * time.Minute
	}
	dir := spec.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "guest-job-")
		if err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	if strings.ContainsAny(dir, ", ") {
		return nil, fmt.Errorf("guest: job dir %q must not contain commas or spaces (QEMU option syntax)", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	netdev, err := netdevArg(spec.Forwards, g.Relay)
	if err != nil {
		return nil, err
	}
	if err := g.writeJob(dir, spec); err != nil {
		return nil, err
	}

	qemu := g.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	accel := g.Accel
	if accel == "" {
		accel = "tcg,thread=multi"
	}
	mem, cpus := g.MemoryMiB, g.CPUs
	if mem == 0 {
		mem = 1536
	}
	if cpus == 0 {
		cpus = 2
	}
	args := []string{
		"-nodefaults", "-no-user-config",
		"-accel", accel, "-cpu", "max", "-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem),
		"-machine", "q35", "-display", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(dir, "console.log"),
		"-kernel", g.Kit.Kernel, "-initrd", g.Kit.Initramfs,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off random.trust_cpu=on",
		"-virtfs", "local,path=/,mount_tag=" + hostRootTag + ",security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + dir + ",mount_tag=" + jobTag + ",security_model=none,multidevs=remap",
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0",
	}
	if g.CapturePackets {
		args = append(args, "-object", "filter-dump,id=d0,netdev=n0,file="+filepath.Join(dir, "net.pcap"))
	}
	args = append(args, g.ExtraArgs...)
	logf, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "%s %s\n", qemu, strings.Join(args, " "))
	cmd := exec.Command(qemu, args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: QEMU's socat children die with it. Pdeathsig
	// ends QEMU if the test process dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r := &Running{dir: dir, cmd: cmd, done: make(chan struct{})}
	r.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("guest: start %s: %w", qemu, err)
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	r.cancel = cancel
	go func() {
		r.waitErr = cmd.Wait()
		r.end = time.Now()
		// Leftover socat processes in QEMU's group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(r.done)
	}()
	go func() {
		bootFile := filepath.Join(dir, ".boot-uptime")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.done:
				cancel()
				return
			case <-ctx.Done():
				why := "context ended: " + ctx.Err().Error()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					why = fmt.Sprintf("timed out (or parent deadline) after %v", time.Since(r.start).Round(time.Second))
				}
				r.kill(why)
				<-r.done
				return
			case <-tick.C:
				r.mu.Lock()
				if r.bootWall == 0 {
					if _, err := os.Stat(bootFile); err == nil {
						r.bootWall = time.Since(r.start)
					}
				}
				r.mu.Unlock()
			}
		}
	}()
	if g.Logf != nil {
		g.Logf("guest: started QEMU pid %d, job dir %s", cmd.Process.Pid, dir)
	}
	return r, nil
}

func (r *Running) kill(reason string) {
	r.mu.Lock()
	if r.reason == "" {
		r.reason = reason
	}
	r.mu.Unlock()
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
}

// Kill stops the guest at once (SIGKILL to QEMU and its socat children)
// and waits for QEMU to exit. It is safe to call more than once and after
// the guest exited.
func (r *Running) Kill() {
	select {
	case <-r.done:
	default:
		r.kill("killed by the host")
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
	}
	r.cancel()
}

// Freeze stops the guest dead (SIGSTOP to QEMU and its relays): to the
// target it looks like a node that hung or lost power, with its TCP
// connections open but silent. Thaw resumes it.
func (r *Running) Freeze() error { return r.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen guest (SIGCONT).
func (r *Running) Thaw() error { return r.signal(syscall.SIGCONT) }

func (r *Running) signal(sig syscall.Signal) error {
	select {
	case <-r.done:
		return errors.New("guest: QEMU has exited")
	default:
	}
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("guest: signal %v to QEMU's process group: %w", sig, err)
	}
	return nil
}

// Dir is the job directory on the host.
func (r *Running) Dir() string { return r.dir }

// Done is closed when QEMU has exited.
func (r *Running) Done() <-chan struct{} { return r.done }

// ReadFile reads a file from the job directory.
func (r *Running) ReadFile(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.dir, name))
}

// WriteFile atomically creates a file in the job directory, e.g. a signal
// the job polls for.
func (r *Running) WriteFile(name string, data []byte) error {
	tmp := filepath.Join(r.dir, "."+name+".host-tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(r.dir, name))
}

// WaitUntil polls cond every 50 ms until it returns true. It fails when
// ctx ends or the guest exits first; what names the condition in errors.
func (r *Running) WaitUntil(ctx context.Context, what string, cond func() bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest: waiting for %s: %w", what, ctx.Err())
		case <-r.done:
			if cond() {
				return nil
			}
			return fmt.Errorf("guest: exited while waiting for %s", what)
		case <-tick.C:
		}
	}
}

// WaitFile waits until the job directory holds name and returns its
// content.
func (r *Running) WaitFile(ctx context.Context, name string) ([]byte, error) {
	var b []byte
	err := r.WaitUntil(ctx, name, func() bool {
		var err error
		b, err = r.ReadFile(name)
		return err == nil
	})
	return b, err
}

// Wait waits for the guest to exit and collects the result. It returns an
// error (and a partial result) when the job did not finish.
func (r *Running) Wait() (*Result, error) {
	<-r.done
	r.cancel()
	res := &Result{Dir: r.dir, ExitCode: -1, Wall: r.end.Sub(r.start)}
	read := func(n string) string {
		b, _ := os.ReadFile(filepath.Join(r.dir, n))
		return string(b)
	}
	res.Console = read("console.log")
	res.Stdout = read("stdout")
	res.Stderr = read("stderr")
	res.Dmesg = read("dmesg.txt")
	if s := strings.TrimSpace(read(".boot-uptime")); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			res.BootUptime = time.Duration(f * float64(time.Second))
		}
	}
	r.mu.Lock()
	res.BootWall = r.bootWall
	reason := r.reason
	r.mu.Unlock()
	code := strings.TrimSpace(read("exit-code"))
	if code == "" {
		why := reason
		if why == "" {
			why = fmt.Sprintf("QEMU exited (%v)", r.waitErr)
		}
		return res, fmt.Errorf("guest: job did not finish: %s\nqemu.log:\n%s\nconsole tail:\n%s\nstderr tail:\n%s",
			why, tail(read("qemu.log"), 20), tail(res.Console, 40), tail(res.Stderr, 20))
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		return res, fmt.Errorf("guest: bad exit-code file %q", code)
	}
	res.ExitCode = n
	return res, nil
}

// netdevArg builds the -netdev value: user networking with no route out
// (restrict=on) and one guestfwd per forward to relay (fwdrelay) or a
// socat that must not log: slirp connects the program's stderr to the
// guest socket too, so a log line would arrive in the guest as iSCSI
// bytes.
func netdevArg(fwds []Forward, relay string) (string, error) {
	if strings.ContainsAny(relay, ", \t") {
		return "", fmt.Errorf("guest: relay path %q must not contain commas or spaces", relay)
	}
	parts := []string{"user", "id=n0", "restrict=on", "net=10.0.2.0/24", "host=10.0.2.2"}
	seen := map[string]bool{}
	for i, f := range fwds {
		g := f.Guest
		if g == "" {
			if i > 0 {
				return "", fmt.Errorf("guest: forward %d has no guest address", i)
			}
			g = DefaultPortal
		}
		host, port, err := net.SplitHostPort(g)
		if err != nil || net.ParseIP(host) == nil || port == "" {
			return "", fmt.Errorf("guest: bad guest address %q", g)
		}
		if seen[g] {
			return "", fmt.Errorf("guest: duplicate guest address %q", g)
		}
		seen[g] = true
		if _, _, err := net.SplitHostPort(f.Host); err != nil || strings.ContainsAny(f.Host, ", ") {
			return "", fmt.Errorf("guest: bad host address %q", f.Host)
		}
		cmd := "socat -lf /dev/null STDIO TCP:" + f.Host
		if relay != "" {
			cmd = relay + " " + f.Host
		}
		parts = append(parts, fmt.Sprintf("guestfwd=tcp:%s-cmd:%s", g, cmd))
	}
	return strings.Join(parts, ","), nil
}

// writeJob fills the job directory: the script, the shell helpers, the
// wrapper /init runs, iscsid.conf and the caller's files.
func (g *Guest) writeJob(dir string, spec JobSpec) error {
	// A reused directory must not carry an old result.
	for _, n := range []string{"exit-code", ".boot-uptime", "stdout", "stderr", "dmesg.txt", "console.log"} {
		_ = os.Remove(filepath.Join(dir, n))
	}
	base, err := os.ReadFile(filepath.Join(g.Kit.Root, "etc", "iscsi", "iscsid.conf"))
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	conf, err := IscsidConf(base, spec.Initiator.Settings)
	if err != nil {
		return err
	}
	name := spec.Initiator.Name
	if name == "" {
		name = DefaultInitiatorName
	}
	var portals []string
	for i, f := range spec.Forwards {
		if f.Guest == "" && i == 0 {
			f.Guest = DefaultPortal
		}
		portals = append(portals, f.Guest)
	}
	if len(portals) == 0 {
		portals = []string{DefaultPortal}
	}
	env := map[string]string{
		"PATH":               "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME":               "/root",
		"LC_ALL":             "C",
		"JOB":                GuestJobDir,
		"KIT_ROOT":           g.Kit.Root,
		"KIT_LIBRARY_PATH":   g.Kit.LibraryPath(),
		"INITIATOR_NAME":     name,
		"ISCSI_PORTAL":       portals[0],
		"ISCSI_PORTALS":      strings.Join(portals, " "),
		"GUEST_KERNEL":       g.Kit.KernelRelease,
		"GUEST_ISCSID_DEBUG": "1",
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	var run bytes.Buffer
	run.WriteString("#!/bin/bash\n# Generated by test/guest: environment, helpers, then the job script.\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !validEnvName(k) {
			return fmt.Errorf("guest: bad environment variable name %q", k)
		}
		fmt.Fprintf(&run, "export %s=%s\n", k, shellQuote(env[k]))
	}
	run.WriteString("cd \"$JOB\" || exit 99\n. \"$JOB/lib.sh\" || exit 98\n")
	run.WriteString("trap 'echo \"job: line $LINENO: $BASH_COMMAND: exit status $?\" >&2' ERR\n")
	run.WriteString(". \"$JOB/script.sh\"\n")
	files := map[string][]byte{
		".run.sh":     run.Bytes(),
		"lib.sh":      []byte(shellLib),
		"script.sh":   []byte(spec.Script),
		"iscsid.conf": conf,
	}
	for n, b := range spec.Files {
		if strings.Contains(n, "/") || strings.HasPrefix(n, ".") {
			return fmt.Errorf("guest: job file name %q must be a plain name", n)
		}
		if _, clash := files[n]; clash {
			return fmt.Errorf("guest: job file %q is reserved", n)
		}
		files[n] = b
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			return fmt.Errorf("guest: %w", err)
		}
	}
	return nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
