// Package bench is the side-by-side performance benchmark behind
// `make bench`: our daemon, tgt and gotgt v0.2.2 on the same kind of file
// LUN, plus the raw file, driven by the same initiators (qemu-img bench
// through QEMU's libiscsi driver, iscsi-perf from libiscsi, and this
// package's own raw initiator for latency percentiles and many-session
// memory figures), over several rounds with the machine's load recorded.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Target names.
const (
	TOurs       = "ours"
	TOursDirect = "ours-direct"
	TTGT        = "tgt"
	TGotgt      = "gotgt"
	TRaw        = "raw"
	TRawDirect  = "raw-direct"
)

// AllTargets is the default set, in table order.
var AllTargets = []string{TOurs, TOursDirect, TTGT, TGotgt, TRaw, TRawDirect}

// Workload is one row shape.
type Workload struct {
	Name   string `json:"name"`
	Tool   string `json:"tool"` // "qemu-img" or "iscsi-perf"
	Write  bool   `json:"write"`
	Size   int    `json:"size"`
	Depth  int    `json:"depth"`
	Random bool   `json:"random"`
	// Latency: also run the raw initiator with the same shape for p50/p99.
	Latency bool `json:"latency"`
}

// Workloads are the rows of the table.
var Workloads = []Workload{
	{"4k-randread-qd32", "qemu-img", false, 4096, 32, true, true},
	{"4k-randwrite-qd32", "qemu-img", true, 4096, 32, true, true},
	{"4k-randread-qd32-iscsi-perf", "iscsi-perf", false, 4096, 32, true, false},
	{"4k-read-qd1", "qemu-img", false, 4096, 1, true, true},
	{"4k-write-qd1", "qemu-img", true, 4096, 1, true, true},
	{"1m-seqread-qd16", "qemu-img", false, 1 << 20, 16, false, true},
	{"1m-seqread-qd16-iscsi-perf", "iscsi-perf", false, 1 << 20, 16, false, false},
	{"1m-seqwrite-qd16", "qemu-img", true, 1 << 20, 16, false, true},
}

// lunSize is the size of every LUN and of the raw file (tgt's baseline
// size; a multiple of every request size, as qemu-img bench wraps offsets
// modulo the image size).
const lunSize = 512 << 20

// randomStep is qemu-img bench's step for "random" 4 KiB I/O: an odd
// number of 4 KiB blocks, so on a 2^17-block image every block is visited
// in scattered order (conformance-baseline.md §5).
const randomStep = 40503 * 4096

// Config controls a run.
type Config struct {
	Rounds     int
	Seconds    float64 // target length of each measured run
	LatSeconds float64 // length of each latency (raw initiator) run
	Targets    []string
	Workloads  []string // names; empty = all
	OursBin    string   // our daemon, built without -race
	Sessions   int      // idle sessions for the RSS-per-session figure
	Load       int      // sessions of the bounded-RSS load
	QuietWait  time.Duration
	// Attempts bounds the runs per measurement: a run during which other
	// processes used more than NoiseLimit of the machine is repeated, and
	// the quietest attempt is kept.
	Attempts   int
	NoiseLimit float64
	Memory     bool
	Log        io.Writer
}

// Sample is one measured run.
type Sample struct {
	IOPS       float64       `json:"iops"`
	MiBs       float64       `json:"mib_s"`
	CPUPerIO   time.Duration `json:"target_cpu_per_io_ns"`
	CtxPerIO   float64       `json:"target_ctx_switches_per_io"`
	TargetCPU  float64       `json:"target_cpu_frac"` // of all CPUs
	ClientCPU  float64       `json:"client_cpu_frac"`
	Others     float64       `json:"others_frac"`
	Steal      float64       `json:"steal_frac"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	LatOps     int           `json:"lat_ops"`
	Round      int           `json:"round"`
	Ops        int64         `json:"ops"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	Error      string        `json:"error,omitempty"`
	LatError   string        `json:"lat_error,omitempty"`
	LoadBefore string        `json:"loadavg_before"`
	Attempts   int           `json:"attempts"`
}

// Round records the machine's state over one round.
type Round struct {
	N         int     `json:"n"`
	LoadStart string  `json:"loadavg_start"`
	LoadEnd   string  `json:"loadavg_end"`
	Busy      float64 `json:"busy_frac"`
	Steal     float64 `json:"steal_frac"`
	Others    float64 `json:"others_frac_mean"` // CPU of everything but target and initiator, mean over runs
	OthersMax float64 `json:"others_frac_max"`
	LoopMiBs  float64 `json:"loopback_tcp_mib_s"`
}

// Memory is the per-target memory figures.
type Memory struct {
	Target          string  `json:"target"`
	Sessions        int     `json:"sessions"`
	RSSBefore       int64   `json:"rss_before"`
	RSSAfter        int64   `json:"rss_after"`
	PerSession      float64 `json:"rss_per_session"`
	LoadSessions    int     `json:"load_sessions"`
	LoadRSSBefore   int64   `json:"load_rss_before"`
	LoadRSSPeak     int64   `json:"load_rss_peak"`
	LoadRSSPeak2    int64   `json:"load_rss_peak_second_pass"`
	LoadRSSAfter    int64   `json:"load_rss_after"`
	LoadOps         int     `json:"load_ops"`
	Error           string  `json:"error,omitempty"`
	IdleLoginErrors int     `json:"idle_login_errors"`
}

// Report is everything a run produced.
type Report struct {
	Started   time.Time                      `json:"started"`
	Host      string                         `json:"host"`
	CPUs      int                            `json:"cpus"`
	Kernel    string                         `json:"kernel"`
	Versions  map[string]string              `json:"versions"`
	Config    Config                         `json:"config"`
	Workloads []Workload                     `json:"workloads"`
	Targets   []string                       `json:"targets"`
	Samples   map[string]map[string][]Sample `json:"samples"` // workload → target → rounds
	Rounds    []Round                        `json:"rounds"`
	Memory    []Memory                       `json:"memory"`
	Goals     []Goal                         `json:"goals"`
}

// target is one thing under test.
type target struct {
	name string
	peer *harness.Peer // nil for the raw file
	iqn  string
	lun  int
	file string // raw file path
	pid  func() int
}

func (t *target) url() string {
	return fmt.Sprintf("iscsi://%s/%s/%d", t.peer.Portal, t.iqn, t.lun)
}

func (t *target) dial() (net.Conn, error) {
	return harness.DialNetns(t.peer.Netns, t.peer.Portal, 5*time.Second)
}

// dialFrom dials from the i-th of many loopback source addresses, 50
// connections per address (targets limit connections per source).
func (t *target) dialFrom(i int) DialFunc {
	ip := fmt.Sprintf("127.0.%d.%d", 1+i/50/250, 1+i/50%250)
	return func() (net.Conn, error) {
		return harness.DialNetnsFrom(t.peer.Netns, ip, t.peer.Portal, 5*time.Second)
	}
}

func (t *target) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if t.peer == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return t.peer.Command(ctx, name, args...)
}

// Run performs the whole benchmark.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	logf := func(format string, a ...any) { fmt.Fprintf(cfg.Log, format+"\n", a...) }
	rep := &Report{Started: time.Now().UTC(), CPUs: runtime.NumCPU(), Config: cfg,
		Versions: map[string]string{}, Samples: map[string]map[string][]Sample{}}
	rep.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rep.Kernel = strings.TrimSpace(string(b))
	}
	for _, w := range Workloads {
		if len(cfg.Workloads) == 0 || slices.Contains(cfg.Workloads, w.Name) {
			rep.Workloads = append(rep.Workloads, w)
		}
	}
	rep.Versions["qemu-img"] = toolVersion(ctx, "qemu-img", "--version")

	tmp, err := os.MkdirTemp("", "iscsi-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	var targets []*target
	var peers []*harness.Peer
	defer func() {
		for _, p := range peers {
			if err := p.Close(); err != nil {
				logf("close %s: %v", p.Name, err)
			}
		}
	}()
	want := func(n string) bool { return slices.Contains(cfg.Targets, n) }
	if want(TOurs) || want(TOursDirect) {
		logf("starting our daemon")
		p, err := harness.LaunchOurs(ctx, harness.OursOptions{Bin: cfg.OursBin, Dir: mkdir(tmp, "ours"),
			Layout: []harness.OursLUN{{Kind: harness.KindPlain, Size: lunSize}, {Kind: "direct", Size: lunSize, Options: "direct"}}})
		if err != nil {
			return nil, err
		}
		peers = append(peers, p)
		rep.Versions[TOurs] = "iscsi-target " + gitDescribe()
		if want(TOurs) {
			targets = append(targets, &target{name: TOurs, peer: p, iqn: p.LUs[harness.KindPlain].IQN, lun: 0, pid: p.PID})
		}
		if want(TOursDirect) {
			targets = append(targets, &target{name: TOursDirect, peer: p, iqn: p.LUs["direct"].IQN, lun: 1, pid: p.PID})
		}
	}
	if want(TTGT) {
		logf("starting tgt")
		p, err := harness.LaunchTGT(ctx, harness.TGTOptions{Dir: mkdir(tmp, "tgt"), NoSpecial: true, PlainSize: lunSize})
		if err != nil {
			return nil, err
		}
		peers = append(peers, p)
		rep.Versions[TTGT] = p.Version
		lu := p.LUs[harness.KindPlain]
		targets = append(targets, &target{name: TTGT, peer: p, iqn: lu.IQN, lun: lu.LUN, pid: p.PID})
	}
	if want(TGotgt) {
		logf("starting gotgt (building it on first use)")
		p, err := harness.LaunchGotgt(ctx, harness.GotgtOptions{Dir: mkdir(tmp, "gotgt"), NoThin: true, PlainSize: lunSize})
		if err != nil {
			return nil, err
		}
		peers = append(peers, p)
		rep.Versions[TGotgt] = p.Version
		lu := p.LUs[harness.KindPlain]
		targets = append(targets, &target{name: TGotgt, peer: p, iqn: lu.IQN, lun: lu.LUN, pid: p.PID})
	}
	for _, n := range []string{TRaw, TRawDirect} {
		if want(n) {
			targets = append(targets, &target{name: n, file: filepath.Join(tmp, n+".img")})
		}
	}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, t.name)
	}

	// Prefill every LUN so reads hit allocated blocks (not measured).
	for _, t := range targets {
		logf("prefilling %s", t.name)
		if err := prefill(ctx, t); err != nil {
			// The runs still measure it; reads may then hit holes.
			logf("WARNING: prefill %s failed: %v", t.name, firstLine(err.Error()))
		}
	}

	counts := map[string]int{}
	for r := 1; r <= cfg.Rounds; r++ {
		rd := Round{N: r, LoadStart: LoadAvg()}
		st0, _ := ReadCPUStat()
		var others []float64
		logf("round %d/%d (loadavg %s)", r, cfg.Rounds, rd.LoadStart)
		for _, w := range rep.Workloads {
			for _, t := range targets {
				if w.Tool == "iscsi-perf" && t.peer == nil {
					continue
				}
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				key := w.Name + "/" + t.name
				var s Sample
				for a := 1; a <= max(1, cfg.Attempts); a++ {
					waitQuiet(cfg.QuietWait)
					x := measure(ctx, cfg, t, w, counts, key)
					x.Attempts = a
					if a == 1 || (x.Error == "" && (s.Error != "" || x.Others < s.Others)) {
						s = x
					}
					if s.Error != "" || s.Others <= cfg.NoiseLimit || ctx.Err() != nil {
						break
					}
				}
				s.Round = r
				if w.Latency && t.peer != nil && s.Error == "" {
					latency(cfg, t, w, &s)
				}
				if s.Error == "" {
					others = append(others, s.Others)
				}
				if rep.Samples[w.Name] == nil {
					rep.Samples[w.Name] = map[string][]Sample{}
				}
				rep.Samples[w.Name][t.name] = append(rep.Samples[w.Name][t.name], s)
				logf("  %-28s %-12s %s", w.Name, t.name, s.brief())
			}
		}
		rd.LoopMiBs = loopbackTCP(time.Duration(min(cfg.Seconds, 3) * float64(time.Second)))
		logf("  loopback TCP single stream: %.0f MiB/s", rd.LoopMiBs)
		st1, _ := ReadCPUStat()
		m := Between(st0, st1)
		rd.Busy, rd.Steal = m.Busy, m.Steal
		if len(others) > 0 {
			var sum float64
			for _, o := range others {
				sum += o
				rd.OthersMax = max(rd.OthersMax, o)
			}
			rd.Others = sum / float64(len(others))
		}
		rd.LoadEnd = LoadAvg()
		rep.Rounds = append(rep.Rounds, rd)
	}

	if cfg.Memory {
		for _, t := range targets {
			if t.peer == nil || t.name == TOursDirect {
				continue
			}
			logf("memory: %s", t.name)
			m := memory(ctx, cfg, t)
			logf("  %+v", m)
			rep.Memory = append(rep.Memory, m)
		}
	}
	rep.Goals = evaluate(rep)
	return rep, nil
}

func mkdir(parent, name string) string {
	d := filepath.Join(parent, name)
	_ = os.MkdirAll(d, 0o755)
	return d
}

func toolVersion(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func gitDescribe() string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = harness.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "(this tree)"
	}
	return strings.TrimSpace(string(out))
}

func prefill(ctx context.Context, t *target) error {
	if t.peer == nil {
		f, err := os.Create(t.file)
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i*13 + 5)
		}
		for off := 0; off < lunSize; off += len(buf) {
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	_, err := runTool(ctx, t, 300*time.Second, "qemu-img", "bench", "-f", "raw", "-t", "none", "-w",
		"-c", strconv.Itoa(lunSize>>20), "-d", "16", "-s", "1M", t.url())
	return err
}

type toolResult struct {
	out       string
	wall      time.Duration
	clientCPU time.Duration
}

func runTool(ctx context.Context, t *target, timeout time.Duration, name string, args ...string) (*toolResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := t.command(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	harness.Bound(cmd, 5*time.Second)
	start := time.Now()
	err := cmd.Run()
	r := &toolResult{out: out.String(), wall: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		r.clientCPU = ps.UserTime() + ps.SystemTime()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
			r.clientCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		return r, fmt.Errorf("%s: %v\n%s", name, err, tailString(r.out, 500))
	}
	return r, nil
}

// waitQuiet waits up to limit for the machine to be less than 25 % busy
// over a 300 ms sample.
func waitQuiet(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		a, err := ReadCPUStat()
		if err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
		b, err := ReadCPUStat()
		if err != nil || Between(a, b).Busy < 0.25 {
			return
		}
	}
}

// probeCount is the first (calibration) run's count per workload shape.
func probeCount(w Workload) int {
	switch {
	case w.Size >= 1<<20:
		return 256
	case w.Depth == 1:
		return 2000
	}
	return 20000
}

func qemuArgs(t *target, w Workload, count int) []string {
	args := []string{"bench", "-f", "raw"}
	switch t.name {
	case TRaw:
		args = append(args, "-t", "writeback", "-i", "threads")
	case TRawDirect:
		args = append(args, "-t", "none", "-i", "native")
	default:
		args = append(args, "-t", "none")
	}
	if w.Write {
		args = append(args, "-w")
	}
	args = append(args, "-c", strconv.Itoa(count), "-d", strconv.Itoa(w.Depth), "-s", strconv.Itoa(w.Size))
	if w.Random {
		args = append(args, "-S", strconv.Itoa(randomStep))
	}
	if t.peer == nil {
		return append(args, t.file)
	}
	return append(args, t.url())
}

// measure runs one workload against one target: a calibration run the
// first time (to size the count to cfg.Seconds), then the measured run
// with the target's CPU and the machine's load around it.
func measure(ctx context.Context, cfg Config, t *target, w Workload, counts map[string]int, key string) Sample {
	s := Sample{LoadBefore: LoadAvg()}
	if w.Tool == "qemu-img" && counts[key] == 0 {
		n := probeCount(w)
		r, err := runTool(ctx, t, 120*time.Second, "qemu-img", qemuArgs(t, w, n)...)
		if err != nil {
			s.Error = err.Error()
			return s
		}
		d, err := parseQemuBench(r.out)
		if err != nil {
			s.Error = err.Error()
			return s
		}
		counts[key] = max(n, int(float64(n)/d.Seconds()*cfg.Seconds))
	}
	var pid int
	if t.pid != nil {
		pid = t.pid()
	}
	var cpu0, cpu1 time.Duration
	var cs0, cs1 uint64
	if pid > 0 {
		cpu0, _ = ProcCPU(pid)
		cs0, _ = ProcCtxSwitches(pid)
	}
	st0, _ := ReadCPUStat()
	var r *toolResult
	var err error
	var ops float64
	switch w.Tool {
	case "qemu-img":
		r, err = runTool(ctx, t, 120*time.Second+time.Duration(4*cfg.Seconds)*time.Second, "qemu-img", qemuArgs(t, w, counts[key])...)
		if err == nil {
			var d time.Duration
			if d, err = parseQemuBench(r.out); err == nil {
				s.Elapsed = d
				ops = float64(counts[key])
				s.IOPS = ops / d.Seconds()
			}
		}
	case "iscsi-perf":
		secs := max(1, int(cfg.Seconds+0.5))
		args := []string{"-m", strconv.Itoa(w.Depth), "-b", strconv.Itoa(w.Size / 512), "-t", strconv.Itoa(secs)}
		if w.Random {
			args = append(args, "-r")
		}
		r, err = runTool(ctx, t, time.Duration(secs+60)*time.Second, "iscsi-perf", append(args, t.url())...)
		if err == nil {
			if s.IOPS, err = parseIscsiPerf(r.out); err == nil {
				s.Elapsed = time.Duration(secs) * time.Second
				ops = s.IOPS * float64(secs)
			}
		}
	}
	st1, _ := ReadCPUStat()
	if pid > 0 {
		cpu1, _ = ProcCPU(pid)
		cs1, _ = ProcCtxSwitches(pid)
	}
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.Ops = int64(ops)
	s.MiBs = s.IOPS * float64(w.Size) / (1 << 20)
	m := Between(st0, st1)
	s.Steal = m.Steal
	machine := r.wall.Seconds() * float64(runtime.NumCPU())
	if pid > 0 && ops > 0 {
		s.CPUPerIO = time.Duration(float64(cpu1-cpu0) / ops)
		s.TargetCPU = (cpu1 - cpu0).Seconds() / machine
		if cs1 > cs0 {
			s.CtxPerIO = float64(cs1-cs0) / ops
		}
	}
	s.ClientCPU = r.clientCPU.Seconds() / machine
	s.Others = max(0, m.Busy-s.TargetCPU-s.ClientCPU)
	return s
}

// latency runs the raw initiator with the workload's shape and fills the
// percentiles.
func latency(cfg Config, t *target, w Workload, s *Sample) {
	d, err := NewDriver(t.dial, t.iqn, uint64(t.lun), pdu.ISID{0x80, 0xbe, 0x4c, 0, 0, 1}, "iqn.2026-11.test:bench")
	if err != nil {
		s.LatError = err.Error()
		return
	}
	defer d.Close()
	res, err := d.Run(IOSpec{Write: w.Write, Size: w.Size, Random: w.Random, Depth: w.Depth,
		Duration: time.Duration(cfg.LatSeconds * float64(time.Second)), LUNBlocks: lunSize / 512, RecordLats: true})
	if err != nil {
		s.LatError = err.Error()
		return
	}
	s.P50, s.P99, s.LatOps = res.Percentile(50), res.Percentile(99), res.Ops
}

// loopbackTCP measures single-stream TCP throughput over 127.0.0.1 with
// 128 KiB writes (the wire ceiling of one iSCSI connection).
func loopbackTCP(d time.Duration) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		got <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0
	}
	buf := make([]byte, 128<<10)
	start := time.Now()
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.Close()
	n := <-got
	return float64(n) / time.Since(start).Seconds() / (1 << 20)
}

// memory measures RSS per idle session and RSS under a many-session load.
func memory(ctx context.Context, cfg Config, t *target) Memory {
	m := Memory{Target: t.name, Sessions: cfg.Sessions, LoadSessions: cfg.Load}
	pid := t.pid()
	isid := func(i int) pdu.ISID { return pdu.ISID{0x80, 0xbe, 0x4d, byte(i >> 16), byte(i >> 8), byte(i)} }
	runtime.GC()
	time.Sleep(time.Second)
	m.RSSBefore, _ = ProcRSS(pid)
	drivers := make([]*Driver, cfg.Sessions)
	errs := make(chan error, cfg.Sessions)
	sem := make(chan struct{}, 8)
	for i := range drivers {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			d, err := NewDriver(t.dialFrom(i), t.iqn, uint64(t.lun), isid(i), "iqn.2026-11.test:bench-idle")
			drivers[i] = d
			errs <- err
		}()
	}
	var firstErr error
	for range drivers {
		if err := <-errs; err != nil {
			m.IdleLoginErrors++
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	time.Sleep(time.Second)
	var rerr error
	if m.RSSAfter, rerr = ProcRSS(pid); rerr != nil {
		for _, d := range drivers {
			if d != nil {
				d.Close()
			}
		}
		m.Error = fmt.Sprintf("target process gone after %d logins (crashed): %v", cfg.Sessions-m.IdleLoginErrors, firstErr)
		return m
	}
	if ok := cfg.Sessions - m.IdleLoginErrors; ok > 0 {
		m.PerSession = float64(m.RSSAfter-m.RSSBefore) / float64(ok)
	}
	if firstErr != nil {
		m.Error = fmt.Sprintf("%d of %d logins failed; first: %v", m.IdleLoginErrors, cfg.Sessions, firstErr)
	}
	for _, d := range drivers {
		if d != nil {
			d.Close()
		}
	}
	time.Sleep(2 * time.Second)

	// Load: sessions doing 4 KiB random reads and writes and 1 MiB
	// sequential reads and writes at once, twice; the peak of the second
	// pass shows whether memory settles.
	m.LoadRSSBefore, _ = ProcRSS(pid)
	for pass := 0; pass < 2; pass++ {
		peak, ops, err := loadPass(cfg, t, pid, pass)
		if err != nil && m.Error == "" {
			m.Error = "load: " + err.Error()
		}
		m.LoadOps += ops
		if pass == 0 {
			m.LoadRSSPeak = peak
		} else {
			m.LoadRSSPeak2 = peak
		}
	}
	time.Sleep(time.Second)
	m.LoadRSSAfter, _ = ProcRSS(pid)
	return m
}

func loadPass(cfg Config, t *target, pid, pass int) (int64, int, error) {
	type res struct {
		ops int
		err error
	}
	out := make(chan res, cfg.Load)
	stop := make(chan struct{})
	var peak int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if r, err := ProcRSS(pid); err == nil {
					peak = max(peak, r)
				}
			}
		}
	}()
	dur := time.Duration(max(cfg.Seconds, 2) * float64(time.Second))
	for i := 0; i < cfg.Load; i++ {
		go func() {
			d, err := NewDriver(t.dialFrom(i), t.iqn, uint64(t.lun),
				pdu.ISID{0x80, 0xbe, 0x4e, byte(pass), byte(i >> 8), byte(i)}, "iqn.2026-11.test:bench-load")
			if err != nil {
				out <- res{0, err}
				return
			}
			defer d.Close()
			spec := IOSpec{Size: 4096, Random: true, Depth: 8, Duration: dur, LUNBlocks: lunSize / 512}
			switch i % 4 {
			case 1:
				spec.Write = true
			case 2:
				spec.Size, spec.Random, spec.Depth = 1<<20, false, 4
			case 3:
				spec.Size, spec.Random, spec.Depth, spec.Write = 1<<20, false, 4, true
			}
			r, err := d.Run(spec)
			if r == nil {
				out <- res{0, err}
				return
			}
			out <- res{r.Ops, err}
		}()
	}
	var ops int
	var errs []error
	for i := 0; i < cfg.Load; i++ {
		r := <-out
		ops += r.ops
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	close(stop)
	<-sampled
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("%d sessions failed; first: %w", len(errs), errors.Join(errs[0]))
	}
	return peak, ops, err
}

func (s Sample) brief() string {
	if s.Error != "" {
		return "ERROR " + firstLine(s.Error)
	}
	b := fmt.Sprintf("%9.0f IOPS %7.1f MiB/s", s.IOPS, s.MiBs)
	if s.CPUPerIO > 0 {
		b += fmt.Sprintf("  cpu/io %s", fmtDur(s.CPUPerIO))
	}
	if s.CtxPerIO > 0 {
		b += fmt.Sprintf("  cs/io %.2f", s.CtxPerIO)
	}
	if s.P50 > 0 {
		b += fmt.Sprintf("  p50 %s p99 %s", fmtDur(s.P50), fmtDur(s.P99))
	}
	if s.LatError != "" {
		b += "  lat-error: " + firstLine(s.LatError)
	}
	b += fmt.Sprintf("  others %.0f%%", 100*s.Others)
	return b
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// median of the successful samples' field f.
func median(ss []Sample, f func(Sample) float64) float64 {
	var v []float64
	for _, s := range ss {
		if s.Error == "" {
			if x := f(s); x > 0 {
				v = append(v, x)
			}
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Stat is the median figures of one workload on one target.
type Stat struct {
	IOPS, MiBs, CPUPerIO, CtxPerIO, P50, P99, TargetCPU, Others float64
	N                                                           int
}

// Median returns the medians of workload w on target t.
func (r *Report) Median(w, t string) Stat {
	ss := r.Samples[w][t]
	st := Stat{
		IOPS:      median(ss, func(s Sample) float64 { return s.IOPS }),
		MiBs:      median(ss, func(s Sample) float64 { return s.MiBs }),
		CPUPerIO:  median(ss, func(s Sample) float64 { return float64(s.CPUPerIO) }),
		CtxPerIO:  median(ss, func(s Sample) float64 { return s.CtxPerIO }),
		P50:       median(ss, func(s Sample) float64 { return float64(s.P50) }),
		P99:       median(ss, func(s Sample) float64 { return float64(s.P99) }),
		TargetCPU: median(ss, func(s Sample) float64 { return s.TargetCPU }),
		Others:    median(ss, func(s Sample) float64 { return s.Others }),
	}
	for _, s := range ss {
		if s.Error == "" {
			st.N++
		}
	}
	return st
}

// LoopbackMiBs is the median loopback TCP throughput over the rounds.
func (r *Report) LoopbackMiBs() float64 {
	var v []float64
	for _, rd := range r.Rounds {
		if rd.LoopMiBs > 0 {
			v = append(v, rd.LoopMiBs)
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
