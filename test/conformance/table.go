package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Report is a set of target results shown side by side.
type Report struct {
	// Generated is when the report was made.
	Generated time.Time `json:"generated"`
	// Method records how the suites were run.
	Method  Method          `json:"method"`
	Targets []*TargetResult `json:"targets"`
}

// Method describes the run options that change the numbers.
type Method struct {
	LUN                string `json:"lun"` // "best" or "plain"
	AllowSanitize      bool   `json:"allow_sanitize"`
	MultipathURLs      int    `json:"multipath_urls"`
	Fresh              bool   `json:"fresh_target_per_suite"`
	SuiteTimeout       string `json:"suite_timeout"`
	IscsiTestCu        string `json:"iscsi_test_cu,omitempty"`
	CatalogSuites      int    `json:"catalog_suites"`
	CatalogTests       int    `json:"catalog_tests"`
	InitiatorNamesNote string `json:"initiator_names,omitempty"`
}

// MethodOf returns the Method for o.
func MethodOf(o Options) Method {
	m := Method{LUN: "best", AllowSanitize: !o.NoSanitize, MultipathURLs: 2, Fresh: o.Fresh}
	if o.PlainOnly {
		m.LUN = "plain"
	}
	if o.SingleMultipathURL {
		m.MultipathURLs = 1
	}
	t := o.Timeout
	if t == 0 {
		t = 300 * time.Second
	}
	m.SuiteTimeout = t.String()
	if o.Catalog != nil {
		m.CatalogSuites, m.CatalogTests = len(o.Catalog.Suites), o.Catalog.NumTests()
	}
	return m
}

// suiteOrder is the union of suite names in first-seen order.
func (r *Report) suiteOrder() []string {
	var order []string
	seen := map[string]bool{}
	for _, t := range r.Targets {
		for _, s := range t.Suites {
			if !seen[s.Suite] {
				seen[s.Suite] = true
				order = append(order, s.Suite)
			}
		}
	}
	return order
}

// row is one line of the side-by-side table.
type row struct {
	suite string
	lun   harness.LUNKind
	tests int
	cells []*SuiteResult // per target, nil when not run
}

func (r *Report) rows() []row {
	var rows []row
	for _, name := range r.suiteOrder() {
		rw := row{suite: name, lun: BestKind(name)}
		if r.Method.LUN == "plain" {
			rw.lun = harness.KindPlain
		}
		for _, t := range r.Targets {
			s := t.Suite(name)
			rw.cells = append(rw.cells, s)
			if s != nil {
				rw.tests = s.Counts.Tests
				rw.lun = s.Kind
			}
		}
		rows = append(rows, rw)
	}
	return rows
}

func cellNums(s *SuiteResult) []string {
	if s == nil {
		return []string{"-", "-", "-", "-"}
	}
	c := s.Counts
	return []string{strconv.Itoa(c.Pass), strconv.Itoa(c.Fail), strconv.Itoa(c.Skip), strconv.Itoa(c.Genuine)}
}

// WriteText writes an aligned plain-text table: per suite the LUN kind,
// the number of tests, and pass/fail/skip/genuine per target, then totals.
func (r *Report) WriteText(w io.Writer) error {
	hdr1 := []string{"", "", ""}
	hdr2 := []string{"Suite", "LUN", "Tests"}
	for _, t := range r.Targets {
		hdr1 = append(hdr1, "|", t.Target, "", "", "", "")
		hdr2 = append(hdr2, "|", "pass", "fail", "skip", "gen", "")
	}
	lines := [][]string{hdr1, hdr2}
	for _, rw := range r.rows() {
		cols := []string{rw.suite, string(rw.lun), strconv.Itoa(rw.tests)}
		for _, s := range rw.cells {
			note := ""
			if s != nil {
				note = s.Note()
			}
			cols = append(append(append(cols, "|"), cellNums(s)...), note)
		}
		lines = append(lines, cols)
	}
	tot := []string{"Total", "", strconv.Itoa(r.totalTests())}
	for _, t := range r.Targets {
		c := t.Totals()
		tot = append(tot, "|", strconv.Itoa(c.Pass), strconv.Itoa(c.Fail), strconv.Itoa(c.Skip), strconv.Itoa(c.Genuine), "")
	}
	lines = append(lines, tot)
	// Suite, LUN, the target names and notes align left; numbers right.
	left := func(row, col int) bool {
		if row == 0 || col < 2 {
			return true
		}
		k := (col - 3) % 6
		return col > 2 && (k == 0 || k == 5)
	}
	width := map[int]int{}
	for _, l := range lines {
		for i, c := range l {
			width[i] = max(width[i], len(c))
		}
	}
	for row, l := range lines {
		var b strings.Builder
		for i, c := range l {
			if i > 0 {
				b.WriteByte(' ')
			}
			pad := strings.Repeat(" ", width[i]-len(c))
			if left(row, i) {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
		}
		if _, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " ")); err != nil {
			return err
		}
	}
	return r.writeFooter(w, false)
}

// WriteMarkdown writes the same table as GitHub-flavoured Markdown.
func (r *Report) WriteMarkdown(w io.Writer) error {
	hdr := []string{"Suite", "LUN", "Tests"}
	align := []string{"---", "---", "---:"}
	for _, t := range r.Targets {
		hdr = append(hdr, t.Target+" pass", "fail", "skip", "**gen**", "note")
		align = append(align, "---:", "---:", "---:", "---:", "---")
	}
	fmt.Fprintf(w, "| %s |\n|%s|\n", strings.Join(hdr, " | "), strings.Join(align, "|"))
	for _, rw := range r.rows() {
		cols := []string{rw.suite, string(rw.lun), strconv.Itoa(rw.tests)}
		for _, s := range rw.cells {
			n := cellNums(s)
			n[3] = "**" + n[3] + "**"
			note := ""
			if s != nil {
				note = s.Note()
			}
			cols = append(cols, append(n, note)...)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
	}
	tot := []string{"**Total**", "", fmt.Sprintf("**%d**", r.totalTests())}
	for _, t := range r.Targets {
		c := t.Totals()
		tot = append(tot, fmt.Sprintf("**%d**", c.Pass), fmt.Sprintf("**%d**", c.Fail),
			fmt.Sprintf("**%d**", c.Skip), fmt.Sprintf("**%d**", c.Genuine), "")
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(tot, " | "))
	return r.writeFooter(w, true)
}

// writeFooter lists per target the run time, restarts, abnormal suites and
// the failed tests.
func (r *Report) writeFooter(w io.Writer, md bool) error {
	bullet, sub := "", "  "
	if md {
		bullet, sub = "- ", "  - "
	}
	m := r.Method
	fmt.Fprintf(w, "\n%sMethod: one iscsi-test-cu process per suite, --dataloss, LUN=%s, allow-sanitize=%v, MultipathIO URLs=%d, fresh target per suite=%v, suite timeout %s. pass = CUnit passed (includes skips); gen = genuine passes = pass - skip; fail includes tests left without a verdict by a timeout or crash.\n",
		bullet, m.LUN, m.AllowSanitize, m.MultipathURLs, m.Fresh, m.SuiteTimeout)
	for _, t := range r.Targets {
		c := t.Totals()
		crashFail := 0
		var abn []string
		for _, s := range t.Abnormal() {
			abn = append(abn, fmt.Sprintf("%s %s", s.Suite, strings.ToUpper(string(s.Status))))
			crashFail += s.Counts.Fail
		}
		fmt.Fprintf(w, "%s%s (%s): %d tests, %d genuine, %d skip, %d fail (%d in abnormal suites), %d suites abnormal%s, %d restarts, %.1fs\n",
			bullet, t.Target, t.Version, c.Tests, c.Genuine, c.Skip, c.Fail, crashFail, len(abn),
			list(abn), t.Restarts, t.Duration.Seconds())
		var failed []string
		for _, s := range t.Suites {
			for _, n := range append(s.Names(OutcomeFail), s.Names(OutcomeIncomplete)...) {
				failed = append(failed, s.Suite+"."+n)
			}
		}
		if len(failed) > 0 {
			fmt.Fprintf(w, "%sfailed: %s\n", sub, strings.Join(failed, ", "))
		}
		for _, s := range t.Suites {
			if s.ParseWarning != "" {
				fmt.Fprintf(w, "%sparse warning %s: %s\n", sub, s.Suite, s.ParseWarning)
			}
		}
	}
	return nil
}

func list(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return " (" + strings.Join(s, ", ") + ")"
}

func (r *Report) totalTests() int {
	n := 0
	for _, rw := range r.rows() {
		n += rw.tests
	}
	return n
}

// WriteJSON writes the whole report, per-test outcomes included.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Write renders the report in format "text", "markdown" or "json".
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case "text", "":
		return r.WriteText(w)
	case "markdown", "md":
		return r.WriteMarkdown(w)
	case "json":
		return r.WriteJSON(w)
	}
	return fmt.Errorf("conformance: unknown format %q (text, markdown, json)", format)
}
