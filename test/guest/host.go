package guest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// HostPackages are the Debian packages the host needs to prepare a kit and
// boot guests (the guest also runs the host's bash, coreutils, e2fsprogs
// and util-linux, which every Debian system has).
var HostPackages = []string{"qemu-system-x86", "qemu-system-common", "busybox-static", "socat", "kmod", "xz-utils"}

// hostTools are the commands CheckHost looks for, with their package.
var hostTools = [][2]string{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"socat", "socat"},
	{"apt-get", "apt"},
	{"apt-cache", "apt"},
	{"dpkg-deb", "dpkg"},
	{"dpkg-query", "dpkg"},
	{"ldd", "libc-bin"},
	{"depmod", "kmod"},
	{"xz", "xz-utils"},
	{"bash", "bash"},
	{"mkfs.ext4", "e2fsprogs"},
	{"e2fsck", "e2fsprogs"},
	{"sha256sum", "coreutils"},
	{"setsid", "util-linux"},
	{"dmesg", "util-linux"},
}

// CheckHost reports every missing prerequisite for booting guests.
func CheckHost() error {
	var missing []string
	for _, t := range hostTools {
		if _, err := exec.LookPath(t[0]); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", t[0])); err != nil {
				if _, err := os.Stat(filepath.Join("/sbin", t[0])); err != nil {
					missing = append(missing, fmt.Sprintf("%s (package %s)", t[0], t[1]))
				}
			}
		}
	}
	if st, err := isStatic("/bin/busybox"); err != nil || !st {
		missing = append(missing, "statically linked /bin/busybox (package busybox-static)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("guest: missing host prerequisites: %s; install with: apt-get install --no-install-recommends %s",
			strings.Join(missing, ", "), strings.Join(HostPackages, " "))
	}
	return nil
}

// InCI reports whether the tests run in CI (CI=true), where a missing
// prerequisite is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireHost fails the test in CI and skips it elsewhere when CheckHost
// finds missing prerequisites.
func RequireHost(t testing.TB) {
	t.Helper()
	if err := CheckHost(); err != nil {
		if InCI() {
			t.Fatalf("%v (CI=true: the kernel initiator tests must run)", err)
		}
		t.Skipf("%v (not in CI: skipping)", err)
	}
}

// Tools are the helper programs built from this repository for guest
// runs. The guest sees the host's /, so it runs them from where they are.
type Tools struct {
	// GuestIO is the record writer/verifier (test/guest/guestio), run in
	// the guest.
	GuestIO string
	// Relay is the guestfwd relay (test/guest/fwdrelay), run by QEMU on
	// the host; set it as Guest.Relay.
	Relay string
}

// BuildTools builds the helper programs (static binaries) into dir.
func BuildTools(ctx context.Context, dir string) (*Tools, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	t := &Tools{GuestIO: filepath.Join(abs, "guestio"), Relay: filepath.Join(abs, "fwdrelay")}
	for out, pkg := range map[string]string{t.GuestIO: "./test/guest/guestio", t.Relay: "./test/guest/fwdrelay"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("guest: build %s: %v\n%s", pkg, err, b)
		}
	}
	return t, nil
}
