//go:build e2e

package e2e

// The systemd unit confines the daemon with SystemCallFilter=; a system
// call outside it fails with EPERM, which would surface in production as a
// broken daemon. This test runs the production build (CGO_ENABLED=0, no
// race detector) under strace while real initiators drive it through
// login, I/O, discovery, metrics scrapes and shutdown, and checks every
// system call it made against the filter as systemd-analyze expands it.
//
//	go test -tags e2e -run TestSystemdSyscallFilter -v ./test/e2e/

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// filterGroups parses `systemd-analyze syscall-filter`: every group with
// its members (system calls and nested @groups).
func filterGroups(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		case !strings.HasPrefix(line, " ") && strings.HasPrefix(line, "@"):
			cur = trimmed
			groups[cur] = nil
		case cur != "":
			groups[cur] = append(groups[cur], trimmed)
		}
	}
	if len(groups["@system-service"]) == 0 {
		t.Fatalf("could not parse systemd-analyze syscall-filter:\n%s", out)
	}
	return groups
}

// expand resolves names and @groups into a set of system calls.
func expand(groups map[string][]string, names []string, set map[string]bool) {
	for _, n := range names {
		if strings.HasPrefix(n, "@") {
			if _, ok := groups[n]; ok && !set[n] {
				set[n] = true // guards against cycles
				expand(groups, groups[n], set)
			}
			continue
		}
		set[n] = true
	}
}

// unitFilter returns the system calls the unit allows and denies.
func unitFilter(t *testing.T, groups map[string][]string) (allow, deny map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy/systemd/iscsi-target.service"))
	if err != nil {
		t.Fatal(err)
	}
	allow, deny = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "SystemCallFilter=")
		if !ok {
			continue
		}
		if rest, neg := strings.CutPrefix(v, "~"); neg {
			expand(groups, strings.Fields(rest), deny)
		} else {
			expand(groups, strings.Fields(v), allow)
		}
	}
	if len(allow) == 0 {
		t.Fatal("the unit has no SystemCallFilter allow list")
	}
	return allow, deny
}

// unitSetting returns the value of a [Service] setting of the unit.
func unitSetting(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy/systemd/iscsi-target.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v
		}
	}
	t.Fatalf("the unit has no %s=", key)
	return ""
}

// tolerated are system calls the daemon makes that the filter refuses with
// EPERM, and why that is harmless.
var tolerated = map[string]string{
	// The Go runtime raises the RLIMIT_NOFILE soft limit at start and
	// ignores failure; the unit sets LimitNOFILE itself.
	"prlimit64": "Go runtime RLIMIT_NOFILE bump, failure ignored; LimitNOFILE= sets the limit",
	"setrlimit": "as prlimit64",
}

func TestSystemdSyscallFilter(t *testing.T) {
	harness.RequireTools(t, "strace", "systemd-analyze", "qemu-img", "iscsi-ls")
	groups := filterGroups(t)
	allow, deny := unitFilter(t, groups)

	dir := t.TempDir()
	bin := filepath.Join(dir, "iscsi-target")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/iscsi-target")
	build.Dir = harness.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const iqn = "iqn.2026-11.test:e2e-seccomp"
	portal := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	maddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	trace := filepath.Join(dir, "strace.out")
	state := filepath.Join(dir, "state")
	cmd := exec.Command("strace", "-f", "-qq", "-o", trace, "--", bin, "serve", "--listen", portal,
		"--iqn", iqn, "--state-dir", state, "--metrics-listen", maddr,
		"--lun", filepath.Join(dir, "lun0.img")+",size=8MiB",
		"--lun", filepath.Join(dir, "lun1.img")+",size=8MiB,thin")
	// systemd's notification socket, with the watchdog on.
	sock, notes := notifySocket(t)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	log, done := startProcess(t, cmd)
	if err := harness.WaitListening(portal, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}

	// Discovery, logins, writes with FUA and flushes, reads, UNMAP on the
	// thin LUN, metrics and health scrapes.
	libiscsiRun(t, time.Minute, "iscsi-ls", "-i", libiscsiInitiator, "-s", "iscsi://"+portal)
	src := filepath.Join(dir, "src.img")
	libiscsiImage(t, src, 2<<20, 3)
	for lun := 0; lun < 2; lun++ {
		opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s",
			portal, iqn, lun, libiscsiInitiator)
		libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", src, opts)
		libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "--image-opts", opts, "-O", "raw", filepath.Join(dir, "back.img"))
	}
	zero := filepath.Join(dir, "zero.img")
	if err := os.WriteFile(zero, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	thin := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=1,initiator-name=%s",
		portal, iqn, libiscsiInitiator)
	libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", zero, thin)
	scrape(t, maddr)
	httpGet(t, maddr, "/readyz")

	// SIGTERM to the daemon itself (strace is its parent).
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) != 1 {
		t.Fatalf("daemon pid under strace: %q %v", kids, err)
	}
	var pid int
	fmt.Sscan(string(kids), &pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daemon did not exit after SIGTERM")
	}

	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	used := map[string]int{}
	families := map[string]bool{}
	re := regexp.MustCompile(`^\d+\s+([a-z0-9_]+)\(`)
	reFamily := regexp.MustCompile(`^\d+\s+socket\((AF_[A-Z0-9]+)`)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			used[m[1]]++
		}
		if m := reFamily.FindStringSubmatch(sc.Text()); m != nil {
			families[m[1]] = true
		}
	}
	var sawReady, sawWatchdog bool
	for len(notes) > 0 {
		m := <-notes
		sawReady = sawReady || strings.Contains(m, "READY=1")
		sawWatchdog = sawWatchdog || m == "WATCHDOG=1"
	}
	if !sawReady || !sawWatchdog {
		t.Errorf("notifications under strace: READY=1 %v, WATCHDOG=1 %v", sawReady, sawWatchdog)
	}
	if used["pwrite64"]+used["pwritev2"]+used["pwritev"] == 0 || used["accept4"] == 0 {
		t.Fatalf("the trace shows no writes or accepts; strace output unusable: %v", used)
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	var bad []string
	for _, n := range names {
		if n == "execve" {
			continue // strace's own exec of the daemon, before the filter applies
		}
		if (!allow[n] || deny[n]) && tolerated[n] == "" {
			bad = append(bad, fmt.Sprintf("%s (%d calls; allowed %v, denied %v)", n, used[n], allow[n], deny[n]))
		}
	}
	t.Logf("%d distinct system calls: %s", len(names), strings.Join(names, " "))
	if len(bad) > 0 {
		t.Errorf("system calls the unit's SystemCallFilter refuses:\n  %s", strings.Join(bad, "\n  "))
	}
	// And every socket family must pass RestrictAddressFamilies=.
	allowedFamilies := unitSetting(t, "RestrictAddressFamilies")
	if len(families) == 0 {
		t.Error("the trace shows no socket() call")
	}
	for f := range families {
		if !strings.Contains(" "+allowedFamilies+" ", " "+f+" ") {
			t.Errorf("socket family %s is not in RestrictAddressFamilies=%s", f, allowedFamilies)
		}
	}
}
