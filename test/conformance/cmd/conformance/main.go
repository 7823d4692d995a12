// Command conformance runs the libiscsi conformance suites against our
// daemon and the reference peers (tgt, gotgt v0.2.2) and prints the
// per-suite genuine-pass table side by side.
//
//	go run ./test/conformance/cmd/conformance [flags]
//
// It needs root (tgtd, network namespaces for gotgt) and the Debian
// packages libiscsi-bin, tgt and iproute2. With --expect it compares our
// results with the checked-in floor and exits 1 on any failure or
// genuine-pass regression. Exit status 2 means the run itself failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/iscsi-target/iscsi-target/test/conformance"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

func main() {
	os.Exit(run())
}

type config struct {
	targets      string
	suites       string
	lun          string
	format       string
	out          string
	expect       string
	writeExpect  string
	timeout      time.Duration
	fresh        string
	noSanitize   bool
	oneMultipath bool
	race         bool
	oursBin      string
	oursExtra    string
	gotgtBin     string
	quiet        bool
}

func run() int {
	var c config
	flag.StringVar(&c.targets, "targets", strings.Join(harness.AllPeers, ","), "comma-separated targets: ours, tgt, gotgt")
	flag.StringVar(&c.suites, "suites", "all", `comma-separated suites, "all" (every ALL.* suite of iscsi-test-cu --list) or "expected" (the suites of --expect)`)
	flag.StringVar(&c.lun, "lun", "best", `"best" (the read-only/removable/thin LUN a suite needs for full coverage) or "plain"`)
	flag.StringVar(&c.format, "format", "text", "report format: text, markdown, json")
	flag.StringVar(&c.out, "out", "", "directory for raw iscsi-test-cu output per target/suite, report.json and report.md")
	flag.StringVar(&c.expect, "expect", "", "expected-results file for ours (e.g. test/conformance/testdata/expected-ours.json); exit 1 on a failure or regression")
	flag.StringVar(&c.writeExpect, "write-expected", "", "merge ours' clean suites into this expected-results file")
	flag.DurationVar(&c.timeout, "timeout", 300*time.Second, "limit per suite process (then SIGTERM, SIGKILL 10 s later)")
	flag.StringVar(&c.fresh, "fresh", "", `targets to restart before every suite ("all" or a comma list); others restart only after a crash`)
	flag.BoolVar(&c.noSanitize, "no-sanitize", false, "do not pass --allow-sanitize (Sanitize skips)")
	flag.BoolVar(&c.oneMultipath, "single-multipath-url", false, "give MultipathIO one URL (its tests skip)")
	flag.BoolVar(&c.race, "race", false, "build our daemon with -race")
	flag.StringVar(&c.oursBin, "ours-bin", "", "prebuilt iscsi-target binary (default: go build ./cmd/iscsi-target)")
	flag.StringVar(&c.oursExtra, "ours-extra", "", "extra serve flags for our daemon, space-separated")
	flag.StringVar(&c.gotgtBin, "gotgt-bin", "", "prebuilt gotgt binary (default: built from test/peers/gotgt)")
	flag.BoolVar(&c.quiet, "q", false, "no per-suite progress on stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "conformance: unexpected arguments %q\n", flag.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := execute(ctx, c, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
	}
	return code
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func execute(ctx context.Context, c config, stdout, stderr io.Writer) (int, error) {
	targets := splitList(c.targets)
	if len(targets) == 0 {
		return 2, fmt.Errorf("no targets")
	}
	for _, t := range targets {
		if !slices.Contains(harness.AllPeers, t) {
			return 2, fmt.Errorf("unknown target %q", t)
		}
	}
	if c.lun != "best" && c.lun != "plain" {
		return 2, fmt.Errorf("--lun must be best or plain")
	}
	if (c.expect != "" || c.writeExpect != "") && !slices.Contains(targets, harness.PeerOurs) {
		return 2, fmt.Errorf("--expect and --write-expected need target ours")
	}
	tools := []string{"iscsi-test-cu", "iscsi-inq"}
	for _, t := range targets {
		tools = append(tools, harness.PeerTools(t)...)
	}
	if m := harness.MissingTools(tools...); len(m) > 0 {
		return 2, fmt.Errorf("missing tools: %s (Debian: libiscsi-bin tgt iproute2, and Go)", strings.Join(m, ", "))
	}
	if os.Geteuid() != 0 && (slices.Contains(targets, harness.PeerTGT) || slices.Contains(targets, harness.PeerGotgt)) {
		return 2, fmt.Errorf("tgt and gotgt need root (tgtd, network namespaces)")
	}

	var exp *conformance.Expected
	if c.expect != "" {
		var err error
		if exp, err = conformance.LoadExpected(c.expect); err != nil {
			return 2, err
		}
	}
	cat, err := conformance.LoadCatalog(ctx)
	if err != nil {
		return 2, err
	}
	var suites []string
	switch c.suites {
	case "expected":
		if exp == nil {
			return 2, fmt.Errorf(`--suites expected needs --expect`)
		}
		suites = exp.SuiteNames()
	default:
		suites = splitList(c.suites)
	}
	if suites, err = cat.Select(suites); err != nil {
		return 2, err
	}

	opts := conformance.Options{
		Catalog:            cat,
		Suites:             suites,
		PlainOnly:          c.lun == "plain",
		NoSanitize:         c.noSanitize,
		SingleMultipathURL: c.oneMultipath,
		Timeout:            c.timeout,
	}
	if !c.quiet {
		opts.Progress = func(format string, args ...any) {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	rep := &conformance.Report{Generated: time.Now().UTC(), Method: conformance.MethodOf(opts)}
	if out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", "libiscsi-bin").Output(); err == nil {
		rep.Method.IscsiTestCu = "libiscsi-bin " + string(out)
	}
	freshSet := splitList(c.fresh)

	for _, name := range targets {
		if !c.quiet {
			fmt.Fprintf(stderr, "== starting %s\n", name)
		}
		set, err := harness.LaunchPeers(ctx, []string{name}, harness.PeerSetOptions{
			OursBin: c.oursBin, OursRace: c.race, OursExtra: strings.Fields(c.oursExtra),
			GotgtBin: c.gotgtBin,
		})
		if err != nil {
			return 2, err
		}
		p := set.Peers[0]
		o := opts
		o.Fresh = slices.Contains(freshSet, "all") || slices.Contains(freshSet, name)
		if c.out != "" {
			o.OutDir = filepath.Join(c.out, name)
		}
		res, rerr := conformance.RunPeer(ctx, p, o)
		if c.out != "" {
			_ = os.WriteFile(filepath.Join(c.out, name, "target.log"), []byte(p.Log()), 0o644)
		}
		if cerr := set.Close(); cerr != nil {
			fmt.Fprintf(stderr, "conformance: closing %s: %v\n", name, cerr)
		}
		if rerr != nil {
			return 2, rerr
		}
		rep.Targets = append(rep.Targets, res)
	}
	rep.Method.Fresh = len(freshSet) > 0

	if err := rep.Write(stdout, c.format); err != nil {
		return 2, err
	}
	if c.out != "" {
		if err := writeReports(rep, c.out); err != nil {
			return 2, err
		}
	}

	code := 0
	var ours *conformance.TargetResult
	for _, t := range rep.Targets {
		if t.Target == harness.PeerOurs {
			ours = t
		}
	}
	if c.writeExpect != "" && ours != nil {
		add, omitted := conformance.ExpectationFrom(ours, nil)
		base := &conformance.Expected{Target: harness.PeerOurs}
		if old, err := conformance.LoadExpected(c.writeExpect); err == nil {
			base = old
		}
		if err := base.Merge(add).WriteFile(c.writeExpect); err != nil {
			return 2, err
		}
		fmt.Fprintf(stderr, "wrote %s (%d suites updated; left out with failures: %s)\n",
			c.writeExpect, len(add.Suites), strings.Join(omitted, ", "))
	}
	if exp != nil && ours != nil {
		// Compare only the expected suites this run was asked for.
		sub := *exp
		sub.Suites = nil
		for _, s := range exp.Suites {
			if slices.Contains(suites, s.Suite) {
				sub.Suites = append(sub.Suites, s)
			}
		}
		problems, better := conformance.Compare(&sub, ours)
		for _, b := range better {
			fmt.Fprintf(stderr, "improvement: %s\n", b)
		}
		if len(problems) > 0 {
			fmt.Fprintf(stderr, "\nFAIL: %d problem(s) against %s:\n", len(problems), c.expect)
			for _, p := range problems {
				fmt.Fprintf(stderr, "  %s\n", p)
			}
			code = 1
		} else {
			fmt.Fprintf(stderr, "\nOK: ours meets %s (%d suites)\n", c.expect, len(sub.Suites))
		}
	}
	return code, nil
}

func writeReports(rep *conformance.Report, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, format := range map[string]string{"report.json": "json", "report.md": "markdown", "report.txt": "text"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		werr := rep.Write(f, format)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
	}
	return nil
}
