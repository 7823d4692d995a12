package bench

import (
	"fmt"
	"strings"
	"time"
)

// Goal is one target of issue 6, evaluated on the run's medians.
type Goal struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Value float64 `json:"value"`
	Shown string  `json:"shown"`
	Met   bool    `json:"met"`
	// Missing is set when a figure needed for the goal was not measured.
	Missing bool `json:"missing"`
}

func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// evaluate checks the goals against the medians.
func evaluate(r *Report) []Goal {
	var g []Goal
	has := func(w string) bool {
		for _, x := range r.Workloads {
			if x.Name == w {
				return true
			}
		}
		return false
	}
	atLeast := func(name string, v, want float64, shown string) {
		g = append(g, Goal{Name: name, Want: fmt.Sprintf(">= %.2f", want), Value: v, Shown: shown, Met: v >= want && v > 0, Missing: v == 0})
	}
	atMost := func(name string, v, want float64, shown string) {
		g = append(g, Goal{Name: name, Want: fmt.Sprintf("<= %.2f", want), Value: v, Shown: shown, Met: v <= want && v > 0, Missing: v == 0})
	}
	x := func(v float64) string { return fmt.Sprintf("%.2fx", v) }
	for _, w := range []string{"4k-randread-qd32", "4k-randwrite-qd32"} {
		if !has(w) {
			continue
		}
		o, t := r.Median(w, TOurs), r.Median(w, TTGT)
		v := ratio(o.IOPS, t.IOPS)
		atLeast(w+" IOPS vs tgt", v, 1.3, x(v))
		c := ratio(o.CPUPerIO, t.CPUPerIO)
		atMost(w+" target CPU per I/O vs tgt", c, 0.5, fmt.Sprintf("%s (%s vs %s)", x(c), fmtDur(time.Duration(o.CPUPerIO)), fmtDur(time.Duration(t.CPUPerIO))))
	}
	if has("4k-read-qd1") {
		o, t := r.Median("4k-read-qd1", TOurs), r.Median("4k-read-qd1", TTGT)
		v := ratio(o.P50, t.P50)
		atMost("4k QD1 read median latency vs tgt", v, 1.0, fmt.Sprintf("%s (%s vs %s)", x(v), fmtDur(time.Duration(o.P50)), fmtDur(time.Duration(t.P50))))
	}
	if has("4k-write-qd1") {
		o, t := r.Median("4k-write-qd1", TOurs), r.Median("4k-write-qd1", TTGT)
		v := ratio(o.P50, t.P50)
		atMost("4k QD1 write median latency vs tgt", v, 1.0, fmt.Sprintf("%s (%s vs %s)", x(v), fmtDur(time.Duration(o.P50)), fmtDur(time.Duration(t.P50))))
	}
	if has("1m-seqread-qd16") {
		o, t := r.Median("1m-seqread-qd16", TOurs), r.Median("1m-seqread-qd16", TTGT)
		v := ratio(o.MiBs, t.MiBs)
		atLeast("1 MiB seq read vs tgt", v, 1.2, x(v))
		l := ratio(o.MiBs, r.LoopbackMiBs())
		atLeast("1 MiB seq read vs loopback TCP single stream", l, 0.75, fmt.Sprintf("%.0f%% (%.0f of %.0f MiB/s)", 100*l, o.MiBs, r.LoopbackMiBs()))
	}
	if has("1m-seqwrite-qd16") {
		o, t := r.Median("1m-seqwrite-qd16", TOurs), r.Median("1m-seqwrite-qd16", TTGT)
		v := ratio(o.MiBs, t.MiBs)
		atLeast("1 MiB seq write vs tgt", v, 1.5, x(v))
	}
	for _, w := range r.Workloads {
		o, t := r.Median(w.Name, TOurs), r.Median(w.Name, TGotgt)
		if t.N == 0 && o.N == 0 {
			continue
		}
		v := ratio(o.IOPS, t.IOPS)
		atLeast(w.Name+" vs gotgt", v, 2, x(v))
	}
	for _, m := range r.Memory {
		if m.Target != TOurs {
			continue
		}
		kib := m.PerSession / 1024
		g = append(g, Goal{Name: fmt.Sprintf("RSS growth per idle session (%d sessions)", m.Sessions), Want: "<= 64 KiB",
			Value: kib, Shown: fmt.Sprintf("%.1f KiB", kib), Met: m.IdleLoginErrors == 0 && m.PerSession > 0 && kib <= 64,
			Missing: m.PerSession == 0})
		// Bounded: the second identical load pass does not raise the peak
		// by more than 10 % (+4 MiB for sampling noise).
		bounded := m.LoadRSSPeak > 0 && m.LoadRSSPeak2 > 0 &&
			float64(m.LoadRSSPeak2) <= 1.10*float64(m.LoadRSSPeak)+4<<20 && m.Error == ""
		g = append(g, Goal{Name: fmt.Sprintf("RSS bounded under a %d-session load", m.LoadSessions),
			Want: "2nd pass peak <= 1.1x 1st + 4 MiB", Value: float64(m.LoadRSSPeak2),
			Shown: fmt.Sprintf("peaks %s, %s (idle %s)", mib(m.LoadRSSPeak), mib(m.LoadRSSPeak2), mib(m.LoadRSSBefore)),
			Met:   bounded, Missing: m.LoadRSSPeak == 0})
	}
	return g
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# iscsi-target benchmark, %s\n\n", r.Started.Format("2006-01-02 15:04 MST"))
	p("Host %s, %d CPUs, kernel %s. %d round(s) of about %.0f s per run; medians shown.\n",
		r.Host, r.CPUs, r.Kernel, r.Config.Rounds, r.Config.Seconds)
	p("Initiators: qemu-img bench (QEMU libiscsi driver) and iscsi-perf on 127.0.0.1; p50/p99 from the bench package's raw initiator (same shape, %.1f s).\n", r.Config.LatSeconds)
	var vs []string
	for _, k := range []string{TOurs, TTGT, TGotgt, "qemu-img"} {
		if v, ok := r.Versions[k]; ok {
			vs = append(vs, fmt.Sprintf("%s: %s", k, v))
		}
	}
	p("Versions: %s.\n\n", strings.Join(vs, "; "))

	p("## Machine load per round\n\n")
	p("| round | loadavg start | loadavg end | busy | steal | others mean / max | loopback TCP |\n|---:|---|---|---:|---:|---:|---:|\n")
	for _, rd := range r.Rounds {
		p("| %d | %s | %s | %.0f%% | %.1f%% | %.0f%% / %.0f%% | %.0f MiB/s |\n", rd.N, rd.LoadStart, rd.LoadEnd,
			100*rd.Busy, 100*rd.Steal, 100*rd.Others, 100*rd.OthersMax, rd.LoopMiBs)
	}
	p("\n\"others\" is the CPU used by everything except the target and the initiator during a run (share of all CPUs).\n\n")

	p("## Results\n\n")
	p("| workload | target | IOPS | MiB/s | p50 | p99 | target CPU / I/O | ctx switches / I/O | target CPU | ours ÷ this (IOPS; CPU/IO) | n |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, w := range r.Workloads {
		ours := r.Median(w.Name, TOurs)
		for _, t := range r.Targets {
			if w.Tool == "iscsi-perf" && (t == TRaw || t == TRawDirect) {
				continue
			}
			s := r.Median(w.Name, t)
			rel := ""
			if t != TOurs && t != TOursDirect {
				if v := ratio(ours.IOPS, s.IOPS); v > 0 {
					rel = fmt.Sprintf("%.2fx", v)
				}
				if c := ratio(ours.CPUPerIO, s.CPUPerIO); c > 0 {
					rel += fmt.Sprintf("; %.2fx", c)
				}
			}
			if s.N == 0 {
				p("| %s | %s | error | | | | | | | | 0 |\n", w.Name, t)
				continue
			}
			cpu, cs := "-", "-"
			if s.TargetCPU > 0 {
				cpu = fmt.Sprintf("%.0f%%", 100*s.TargetCPU)
			}
			if s.CtxPerIO > 0 {
				cs = fmt.Sprintf("%.2f", s.CtxPerIO)
			}
			p("| %s | %s | %.0f | %.1f | %s | %s | %s | %s | %s | %s | %d |\n", w.Name, t, s.IOPS, s.MiBs,
				fmtDur(time.Duration(s.P50)), fmtDur(time.Duration(s.P99)), fmtDur(time.Duration(s.CPUPerIO)), cs, cpu, rel, s.N)
		}
	}
	p("\nLoopback TCP single stream (Go, 128 KiB writes, median): %.0f MiB/s.\n", r.LoopbackMiBs())
	p("Target CPU is utime+stime of the target process from /proc/PID/stat; \"target CPU\" is its share of all CPUs.\n")
	p("Context switches are the voluntary and involuntary switches of the target's threads (/proc/PID/task/*/status).\n\n")

	if len(r.Memory) > 0 {
		p("## Memory\n\n")
		p("| target | idle sessions | RSS before | RSS after | per session | load sessions | RSS idle | peak pass 1 | peak pass 2 | after | note |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, m := range r.Memory {
			if m.RSSAfter == 0 {
				p("| %s | %d | %s | - | - | | | | | | %s |\n", m.Target, m.Sessions-m.IdleLoginErrors, mib(m.RSSBefore), firstLine(m.Error))
				continue
			}
			p("| %s | %d | %s | %s | %.1f KiB | %d | %s | %s | %s | %s | %s |\n", m.Target, m.Sessions-m.IdleLoginErrors,
				mib(m.RSSBefore), mib(m.RSSAfter), m.PerSession/1024, m.LoadSessions, mib(m.LoadRSSBefore),
				mib(m.LoadRSSPeak), mib(m.LoadRSSPeak2), mib(m.LoadRSSAfter), firstLine(m.Error))
		}
		p("\n")
	}

	p("## Goals (issue 6)\n\n| goal | want | measured | |\n|---|---|---|---|\n")
	for _, g := range r.Goals {
		v := "MISS"
		switch {
		case g.Missing:
			v = "NOT MEASURED"
		case g.Met:
			v = "met"
		}
		p("| %s | %s | %s | %s |\n", g.Name, g.Want, g.Shown, v)
	}
	var errs []string
	for _, w := range r.Workloads {
		for _, t := range r.Targets {
			for _, s := range r.Samples[w.Name][t] {
				if s.Error != "" {
					errs = append(errs, fmt.Sprintf("- %s / %s round %d: %s", w.Name, t, s.Round, firstLine(s.Error)))
				}
				if s.LatError != "" {
					errs = append(errs, fmt.Sprintf("- %s / %s round %d (latency): %s", w.Name, t, s.Round, firstLine(s.LatError)))
				}
			}
		}
	}
	if len(errs) > 0 {
		p("\n## Errors\n\n%s\n", strings.Join(errs, "\n"))
	}
	return b.String()
}
