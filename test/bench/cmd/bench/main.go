// Command bench runs the side-by-side benchmark (make bench): our daemon,
// tgt, gotgt v0.2.2 and the raw file, printing one table and writing
// bench.md and bench.json into the output directory.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_SECONDS (default 5),
// BENCH_TARGETS, BENCH_WORKLOADS (comma lists), BENCH_SESSIONS (1000),
// BENCH_LOAD_SESSIONS (64), BENCH_ATTEMPTS (3), BENCH_QUIET_WAIT (10s), BENCH_NO_MEMORY. Flags override them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iscsi-target/iscsi-target/test/bench"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}

func envList(name string, def []string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return strings.Join(def, ",")
}

func main() {
	var (
		cfg       bench.Config
		targets   string
		workloads string
		out       string
		noMemory  bool
		quiet     time.Duration
		profile   int
		oursBin   string
	)
	flag.IntVar(&cfg.Rounds, "rounds", envInt("BENCH_ROUNDS", 3), "rounds (medians are reported)")
	flag.Float64Var(&cfg.Seconds, "seconds", envFloat("BENCH_SECONDS", 5), "approximate length of each measured run")
	flag.Float64Var(&cfg.LatSeconds, "lat-seconds", envFloat("BENCH_LAT_SECONDS", 2), "length of each latency run")
	flag.StringVar(&targets, "targets", envList("BENCH_TARGETS", bench.AllTargets), "comma list of "+strings.Join(bench.AllTargets, ", "))
	flag.StringVar(&workloads, "workloads", os.Getenv("BENCH_WORKLOADS"), "comma list of workload names (default all)")
	flag.IntVar(&cfg.Sessions, "sessions", envInt("BENCH_SESSIONS", 1000), "idle sessions for RSS per session")
	flag.IntVar(&cfg.Load, "load-sessions", envInt("BENCH_LOAD_SESSIONS", 64), "sessions of the bounded-RSS load")
	flag.BoolVar(&noMemory, "no-memory", os.Getenv("BENCH_NO_MEMORY") != "", "skip the memory measurements")
	quietDef := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BENCH_QUIET_WAIT")); err == nil {
		quietDef = d
	}
	flag.DurationVar(&quiet, "quiet-wait", quietDef, "wait up to this long before each run for the machine to be < 25% busy")
	flag.IntVar(&cfg.Attempts, "attempts", envInt("BENCH_ATTEMPTS", 3), "runs per measurement while other processes are busy")
	flag.Float64Var(&cfg.NoiseLimit, "noise-limit", 0.15, "share of the machine other processes may use before a run is repeated")
	flag.IntVar(&profile, "profile", 0, "instead of the table: CPU-profile an in-process target under this many 4 KiB random reads and then writes (QD32), writing cpu-4k.pprof and cpu-4k.txt")
	flag.StringVar(&out, "out", "out/bench", "output directory for bench.md and bench.json")
	flag.StringVar(&oursBin, "ours-bin", os.Getenv("BENCH_OURS_BIN"), "a prebuilt iscsi-target to measure as ours (default: built from this tree without -race)")
	flag.Parse()
	cfg.Targets = strings.Split(targets, ",")
	if workloads != "" {
		cfg.Workloads = strings.Split(workloads, ",")
	}
	cfg.Memory = !noMemory
	cfg.QuietWait = quiet
	cfg.Log = os.Stderr

	if profile > 0 {
		if err := os.MkdirAll(out, 0o755); err != nil {
			fatal(err)
		}
		dir, err := os.MkdirTemp("", "bench-profile-")
		if err != nil {
			fatal(err)
		}
		defer os.RemoveAll(dir)
		top, err := bench.Profile(context.Background(), dir, filepath.Join(out, "cpu-4k.pprof"), profile)
		if err != nil {
			fatal(err)
		}
		fmt.Println(top)
		if err := os.WriteFile(filepath.Join(out, "cpu-4k.txt"), []byte(top+"\n"), 0o644); err != nil {
			fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (tgtd, network namespace for gotgt)")
		os.Exit(2)
	}
	if m := harness.MissingTools("qemu-img", "iscsi-perf", "tgtd", "tgtadm", "ip", "go"); len(m) > 0 {
		fmt.Fprintf(os.Stderr, "bench: missing tools %s (make deps installs them)\n", strings.Join(m, ", "))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if oursBin != "" {
		abs, err := filepath.Abs(oursBin)
		if err != nil {
			fatal(err)
		}
		cfg.OursBin = abs
	} else {
		dir, err := os.MkdirTemp("", "bench-build-")
		if err != nil {
			fatal(err)
		}
		defer os.RemoveAll(dir)
		cfg.OursBin = filepath.Join(dir, "iscsi-target")
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", cfg.OursBin, "./cmd/iscsi-target")
		build.Dir = harness.RepoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := build.CombinedOutput(); err != nil {
			fatal(fmt.Errorf("build: %v\n%s", err, b))
		}
	}

	rep, err := bench.Run(ctx, cfg)
	if rep == nil {
		fatal(err)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if err := os.MkdirAll(out, 0o755); err != nil {
		fatal(err)
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "bench.json"), js, 0o644); err != nil {
		fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "bench.md"), []byte(md), 0o644); err != nil {
		fatal(err)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
