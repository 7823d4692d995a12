//go:build e2e

package guest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testGuest prepares the kit (cached) and builds the helper tools.
func testGuest(t *testing.T) *Guest {
	t.Helper()
	RequireHost(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	k, err := PrepareKit(ctx, KitOptions{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kit %s ready in %v (kernel %s)", k.Dir, time.Since(start).Round(time.Millisecond), k.KernelRelease)
	tools, err := BuildTools(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Guest{Kit: k, Relay: tools.Relay, Logf: t.Logf}
}

// echoServer answers each line with "<tag> <line>".
func echoServer(t *testing.T, tag string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", tag, sc.Text())
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestGuestBoot boots a guest with two forwards and checks the kernel,
// modules, environment, job files, host/guest signalling through the job
// directory and both network paths.
func TestGuestBoot(t *testing.T) {
	g := testGuest(t)
	a, b := echoServer(t, "A"), echoServer(t, "B")
	r, err := g.Start(t.Context(), JobSpec{
		Script: `set -eu -o pipefail
[ "$(uname -r)" = "$GUEST_KERNEL" ]
for m in iscsi_tcp sd_mod ext4 9p overlay virtio_net crc32c_generic; do grep -q "^$m " /proc/modules; done
[ "$(cat input.txt)" = "from host" ]
[ "$GREETING" = "it's a test" ]
mark ready "$(cut -d' ' -f1 /proc/uptime)"
for i in $(seq 300); do host_signal go && break; sleep 0.1; done
host_signal go
for p in $ISCSI_PORTALS; do
	exec 3<>/dev/tcp/${p%:*}/${p#*:}
	echo hello >&3
	read -r reply <&3
	exec 3>&-
	echo "$p $reply" >> replies.txt
done
touch /etc/written-in-overlay
echo done
`,
		Env:      map[string]string{"GREETING": "it's a test"},
		Files:    map[string][]byte{"input.txt": []byte("from host")},
		Forwards: []Forward{{Host: a}, {Guest: "10.0.2.101:3260", Host: b}},
		Dir:      t.TempDir(),
		Timeout:  2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Kill)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	up, err := r.WaitFile(ctx, "ready")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("job ready at guest uptime %s s", strings.TrimSpace(string(up)))
	if err := r.WriteFile("go", nil); err != nil {
		t.Fatal(err)
	}
	res, err := r.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot: %.2fs guest uptime, %.2fs wall to job start; whole run %.2fs wall",
		res.BootUptime.Seconds(), res.BootWall.Seconds(), res.Wall.Seconds())
	if res.ExitCode != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s\nconsole:\n%s", res.ExitCode, res.Stdout, res.Stderr, res.Console)
	}
	replies, _ := res.File("replies.txt")
	want := "10.0.2.100:3260 A hello\n10.0.2.101:3260 B hello\n"
	if string(replies) != want {
		t.Errorf("replies %q, want %q", replies, want)
	}
	if res.Dmesg == "" || !strings.Contains(res.Console, "job exit 0") {
		t.Errorf("missing dmesg (%d bytes) or console progress:\n%s", len(res.Dmesg), res.Console)
	}
	if _, err := os.Stat("/etc/written-in-overlay"); err == nil {
		t.Errorf("a guest write reached the host's /etc")
	}
}

// TestGuestTimeout: a job that never ends is killed at its timeout, the
// run reports it, and no QEMU is left behind.
func TestGuestTimeout(t *testing.T) {
	g := testGuest(t)
	dir := t.TempDir()
	start := time.Now()
	r, err := g.Start(t.Context(), JobSpec{Script: "mark started; sleep 1000", Dir: dir, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pid := r.cmd.Process.Pid
	res, err := r.Wait()
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got error %v, want a timeout", err)
	}
	if el := time.Since(start); el < 30*time.Second || el > 45*time.Second {
		t.Errorf("run ended after %v, want just over the 30 s timeout", el)
	}
	if res == nil || res.ExitCode != -1 {
		t.Errorf("result %+v, want exit code -1", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "started")); err != nil {
		t.Errorf("job never started: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("QEMU pid %d still exists", pid)
	}
}
