//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// TestInlineQD1QemuImg: at queue depth 1 QEMU's libiscsi driver gets its
// reads and writes run by the connection's receiver (target/inline.go),
// whose socket is busy-polled between commands (target/busypoll.go), as
// /metrics shows, and the data is what it wrote.
func TestInlineQD1QemuImg(t *testing.T) {
	harness.RequireTools(t, "qemu-img")
	const iqn = "iqn.2026-11.test:e2e-inline"
	const n, bs = 2000, 4096
	dir := t.TempDir()
	tg := libiscsiStart(t, iqn, []string{filepath.Join(dir, "lun0.img") + ",size=16MiB"})
	url := fmt.Sprintf("iscsi://%s/%s/0", tg.Portal, iqn)
	counter := sample("iscsi_target_inline_commands_total")
	ended := func() bool {
		s, _ := scrape(t, tg.MetricsAddr)
		return s[sample("iscsi_target_sessions", "target", iqn)] == 0
	}

	s0, _ := scrape(t, tg.MetricsAddr)
	libiscsiRun(t, 3*time.Minute, "qemu-img", "bench", "-f", "raw", "-t", "none", "-w", "--pattern=171",
		"-c", fmt.Sprint(n), "-d", "1", "-s", fmt.Sprint(bs), url)
	waitFor(t, "the session to end", ended)
	s1, _ := scrape(t, tg.MetricsAddr)
	if d := delta(t, s0, s1, counter); d < n {
		t.Errorf("%v commands ran inline during %d writes at queue depth 1, want at least %d", d, n, n)
	}

	libiscsiRun(t, 3*time.Minute, "qemu-img", "bench", "-f", "raw", "-t", "none",
		"-c", fmt.Sprint(n), "-d", "1", "-s", fmt.Sprint(bs), url)
	waitFor(t, "the session to end", ended)
	s2, _ := scrape(t, tg.MetricsAddr)
	if d := delta(t, s1, s2, counter); d < n {
		t.Errorf("%v commands ran inline during %d reads at queue depth 1, want at least %d", d, n, n)
	}
	if v := s2[sample("iscsi_target_inline_handovers_total")]; v != 0 {
		t.Logf("%v receivers were handed over (a write blocked for 10 ms or more)", v)
	}
	// Between one command's answer and the next (and between a write's
	// command and its data) the receiver polled the socket (the default
	// --busy-poll 50us). How many polls found the PDU depends on the CPU
	// left to qemu-img (the guest tests run beside this package), so only
	// that polling happened is asserted; TestBusyPollAtQD1 asserts hits.
	hit, miss := sample("iscsi_target_busy_polls_total", "outcome", "data"), sample("iscsi_target_busy_polls_total", "outcome", "empty")
	h, m := delta(t, s0, s2, hit), delta(t, s0, s2, miss)
	t.Logf("busy polls over %d commands: %v found the next PDU, %v ran out", 2*n, h, m)
	if h+m == 0 {
		t.Errorf("no busy poll over %d commands at queue depth 1", 2*n)
	}

	// What the inline writes stored: the pattern in every written block,
	// zeros after them.
	back := filepath.Join(dir, "back.img")
	libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:n*bs], bytes.Repeat([]byte{171}, n*bs)) {
		t.Error("the blocks qemu-img bench wrote do not hold its pattern")
	}
	if !bytes.Equal(got[n*bs:], make([]byte, len(got)-n*bs)) {
		t.Error("blocks after the written ones are not zero")
	}
}
