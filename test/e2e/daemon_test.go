//go:build e2e

package e2e

// The daemon's own contract, against the built binary: SIGTERM asks
// initiators to log out, drains, flushes and exits 0; a second signal exits
// at once; IPv6 listeners; --advertise; the embedded default LUN.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

func startDaemon(t *testing.T, o harness.TargetOptions) *harness.Target {
	t.Helper()
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	return harness.StartTarget(t, b, dir, o)
}

func rawLogin(t *testing.T, addr, iqn string, isid byte) *targettest.Client {
	t.Helper()
	c, err := targettest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.ISID[5] = isid
	if err := c.Login(targettest.LoginOptions{Target: iqn}); err != nil {
		t.Fatalf("login to %s: %v", addr, err)
	}
	for i := 0; i < 3; i++ { // consume the power-on unit attention
		r, err := c.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == 0 {
			break
		}
	}
	return c
}

func write10(lba uint32, blocks uint16) []byte {
	return []byte{0x2a, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, byte(blocks >> 8), byte(blocks), 0}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestDaemonSIGTERMDrainsAndExitsZero(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "lun0.img")
	tg := startDaemon(t, harness.TargetOptions{LUNs: []string{img + ",size=16MiB"}})
	c := rawLogin(t, tg.Portal, tg.IQN, 1)
	data := bytes.Repeat([]byte("acknowledged-write"), 4096/18+1)[:4096]
	r, err := c.Command(write10(64, 8), data, 0, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("write: %+v %v", r, err)
	}
	if err := tg.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rh, _, err := c.Expect(pdu.OpAsyncMessage)
	if err != nil {
		t.Fatalf("no logout request after SIGTERM: %v", err)
	}
	var a pdu.AsyncMessage
	_ = a.Unmarshal(&rh.BHS)
	if a.AsyncEvent != pdu.AsyncRequestLogout {
		t.Fatalf("async event %d, want %d (request logout)", a.AsyncEvent, pdu.AsyncRequestLogout)
	}
	// New connections are refused while the session drains.
	if c2, err := targettest.Dial(tg.Portal); err == nil {
		c2.Close()
		t.Fatal("listener still accepting after SIGTERM")
	}
	if resp, err := c.Logout(); err != nil || resp.Response != pdu.LogoutRespClosed {
		t.Fatalf("logout: %+v %v", resp, err)
	}
	if err := tg.Wait(15 * time.Second); exitCode(err) != 0 {
		t.Fatalf("daemon exit: %v (code %d)\n%s", err, exitCode(err), tg.Log())
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[64*512:64*512+4096], data) {
		t.Fatal("acknowledged write missing from the backing file after shutdown")
	}
	if !strings.Contains(tg.Log(), "stopped") {
		t.Fatalf("no shutdown log line:\n%s", tg.Log())
	}
}

func TestDaemonSecondSignalExitsAtOnce(t *testing.T) {
	tg := startDaemon(t, harness.TargetOptions{Extra: []string{"--shutdown-timeout", "60s"}})
	c := rawLogin(t, tg.Portal, tg.IQN, 1) // never logs out
	_ = c
	if err := tg.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if tg.Exited() {
		t.Fatal("daemon exited before the session logged out (first signal must drain)")
	}
	start := time.Now()
	if err := tg.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := tg.Wait(5 * time.Second)
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit code %d after the second signal, want 1 (%v)", code, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("second signal took %v", d)
	}
}

func TestDaemonIPv6AndAdvertise(t *testing.T) {
	port := harness.FreePort(t)
	v6 := fmt.Sprintf("[::1]:%d", port)
	tg := startDaemon(t, harness.TargetOptions{Listen: v6,
		Extra: []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--advertise", "192.0.2.10:3260"}})
	for _, addr := range []string{v6, fmt.Sprintf("127.0.0.1:%d", port)} {
		c := rawLogin(t, addr, tg.IQN, 1)
		keys, err := c.SendTargets("All")
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := keys.Get("TargetAddress"); v != "192.0.2.10:3260,1" {
			t.Fatalf("via %s: TargetAddress %q, want the advertised portal", addr, v)
		}
		c.Logout()
	}
	// libiscsi's discovery over IPv6 reports the advertised portal.
	if _, err := exec.LookPath("iscsi-ls"); err == nil {
		out, err := exec.Command("timeout", "20", "iscsi-ls", "iscsi://"+v6).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Target:"+tg.IQN+" Portal:192.0.2.10:3260,1") {
			t.Fatalf("iscsi-ls over IPv6: %v\n%s", err, out)
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("iscsi-ls not installed (libiscsi-bin)")
	}
}

func TestDaemonSendTargetsUsesLocalAddress(t *testing.T) {
	// Listening on the wildcard address, the advertised portal is the
	// address the connection came in on, never 0.0.0.0.
	port := harness.FreePort(t)
	tg := startDaemon(t, harness.TargetOptions{Listen: fmt.Sprintf("0.0.0.0:%d", port)})
	_ = tg
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		addr := fmt.Sprintf("%s:%d", ip, port)
		if err := harness.WaitListening(addr, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		c := rawLogin(t, addr, tg.IQN, 2)
		keys, err := c.SendTargets("All")
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := keys.Get("TargetAddress"); v != addr+",1" {
			t.Fatalf("connected to %s, TargetAddress %q", addr, v)
		}
		c.Logout()
	}
}

func TestDaemonDefaultLUN(t *testing.T) {
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := b.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	port := harness.FreePort(t)
	cmd := exec.Command(bin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--state-dir", state,
		"--iqn", "iqn.2026-11.test:default", "--metrics-listen", "")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := harness.WaitListening(fmt.Sprintf("127.0.0.1:%d", port), 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	img := filepath.Join(state, "default-lun0.img")
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatalf("default LUN not created: %v", err)
	}
	if st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
		t.Fatalf("default LUN: size %d, allocated %d bytes; want a sparse 1 GiB file", st.Size, st.Blocks*512)
	}
	c := rawLogin(t, fmt.Sprintf("127.0.0.1:%d", port), "iqn.2026-11.test:default", 1)
	r, err := c.Command([]byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, 32, targettest.CommandOptions{})
	if err != nil || r.Status != 0 {
		t.Fatalf("READ CAPACITY(16): %+v %v", r, err)
	}
	last := uint64(0)
	for _, b := range r.Data[:8] {
		last = last<<8 | uint64(b)
	}
	if last != 1<<30/512-1 {
		t.Fatalf("last LBA %d", last)
	}
	c.Logout()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
}
