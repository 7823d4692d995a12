package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/scsi"
	itarget "github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Profile serves a 512 MiB file LUN from this process, built the way
// `iscsi-target serve` builds it, drives it with qemu-img bench (4 KiB
// random reads, then writes, QD32, count each) while the CPU profiler runs,
// and writes the profile to path. It returns `go tool pprof -top` of it.
func Profile(ctx context.Context, dir, path string, count int) (string, error) {
	lg := logrus.New()
	lg.Out = io.Discard
	log := logrus.NewEntry(lg)
	img := filepath.Join(dir, "profile.img")
	dev, err := backstore.OpenFile(img, backstore.FileOptions{CreateSize: lunSize})
	if err != nil {
		return "", err
	}
	lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, Serial: "PROFILE", StatePath: filepath.Join(dir, "lun.json"), Log: log})
	if err != nil {
		dev.Close()
		return "", err
	}
	router, err := scsi.NewRouter([]*scsi.LU{lu})
	if err != nil {
		lu.Close()
		return "", err
	}
	defer router.Close()
	const iqn = "iqn.2026-11.test:profile"
	srv, err := itarget.NewServer(itarget.Config{Nodes: []*itarget.Node{{Name: iqn, Router: router}}, Log: log})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()
	url := fmt.Sprintf("iscsi://%s/%s/0", ln.Addr(), iqn)
	run := func(args ...string) error {
		c, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(c, "qemu-img", args...)
		harness.Bound(cmd, 5*time.Second)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("qemu-img: %v\n%s", err, out)
		}
		return nil
	}
	// Prefill (not profiled).
	if err := run("bench", "-f", "raw", "-t", "none", "-w", "-c", "512", "-d", "16", "-s", "1M", url); err != nil {
		return "", err
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return "", err
	}
	var runErr error
	for _, w := range []string{"", "-w"} {
		args := []string{"bench", "-f", "raw", "-t", "none", "-c", strconv.Itoa(count), "-d", "32", "-s", "4096",
			"-S", strconv.Itoa(randomStep)}
		if w != "" {
			args = append(args, w)
		}
		if runErr = run(append(args, url)...); runErr != nil {
			break
		}
	}
	pprof.StopCPUProfile()
	f.Close()
	if runErr != nil {
		return "", runErr
	}
	exe, _ := os.Executable()
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount", "30", exe, path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pprof: %v\n%s", err, top)
	}
	cum, _ := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount", "30", exe, path).CombinedOutput()
	return strings.TrimSpace(string(top)) + "\n\n-- by cumulative --\n" + strings.TrimSpace(string(cum)), nil
}
