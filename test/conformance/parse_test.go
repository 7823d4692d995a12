package conformance

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The fixtures in testdata/cu are real iscsi-test-cu 1.19.0 outputs
// (Debian libiscsi-bin 1.19.0-3, CUnit 2.1-3) captured from tgt 1.0.85 and
// gotgt v0.2.2.

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cu", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testCatalog(t *testing.T) *Catalog {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "list-1.19.0.txt"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseList(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseList(t *testing.T) {
	c := testCatalog(t)
	if got, want := len(c.Suites), 51; got != want {
		t.Errorf("suites: got %d, want %d", got, want)
	}
	if got, want := c.NumTests(), 230; got != want {
		t.Errorf("tests: got %d, want %d", got, want)
	}
	if got, want := c.Tests["Reserve6"], []string{"Simple", "2Initiators", "Logout", "ITNexusLoss", "TargetColdReset", "TargetWarmReset", "LUNReset"}; !slices.Equal(got, want) {
		t.Errorf("Reserve6 tests: got %v, want %v", got, want)
	}
	if c.Suites[0] != "CompareAndWrite" || c.Suites[len(c.Suites)-1] != "MultipathIO" {
		t.Errorf("suite order: first %s, last %s", c.Suites[0], c.Suites[len(c.Suites)-1])
	}
	for _, s := range RequiredSuites {
		if !c.Has(s) {
			t.Errorf("required suite %s not in the 1.19.0 list", s)
		}
	}
	if _, err := c.Select([]string{"Read10", "NoSuchSuite"}); err == nil {
		t.Error("Select accepted an unknown suite")
	}
}

func TestParseCUnit(t *testing.T) {
	type want struct {
		passed, done bool
		skips        int
		failures     int
	}
	cases := []struct {
		fixture string
		suite   string
		tests   map[string]want
		summary CUnitSummary
	}{
		{
			fixture: "tgt-Reserve6.out", suite: "Reserve6",
			tests: map[string]want{
				"Simple":          {true, true, 0, 0},
				"2Initiators":     {false, true, 0, 1},
				"TargetColdReset": {true, true, 1, 0},
				"TargetWarmReset": {true, true, 1, 0},
				// "passed" followed on the same line by teardown output.
				"LUNReset": {true, true, 0, 0},
			},
			summary: CUnitSummary{TestsRun: 7, TestsPassed: 6, TestsFailed: 1, AssertsRun: 31, AssertsPassed: 30, AssertsFailed: 1},
		},
		{
			fixture: "tgt-ProutReserve.out", suite: "ProutReserve",
			tests: map[string]want{
				"Simple":      {true, true, 0, 0},
				"OwnershipEA": {false, true, 0, 1},
				"OwnershipWE": {false, true, 0, 1},
			},
			summary: CUnitSummary{TestsRun: 13, TestsPassed: 9, TestsFailed: 4, AssertsRun: 160, AssertsPassed: 156, AssertsFailed: 4},
		},
		{
			fixture: "tgt-ExtendedCopy.out", suite: "ExtendedCopy",
			tests: map[string]want{
				"Simple":      {true, true, 2, 0},
				"DescrLimits": {true, true, 2, 0},
			},
			summary: CUnitSummary{TestsRun: 6, TestsPassed: 6, AssertsRun: 9, AssertsPassed: 9},
		},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			r, err := ParseCUnit(readFixture(t, c.fixture))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Check(); err != nil {
				t.Error(err)
			}
			if r.Summary == nil || *r.Summary != c.summary {
				t.Errorf("summary: got %+v, want %+v", r.Summary, c.summary)
			}
			for name, w := range c.tests {
				ct := r.Test(c.suite, name)
				if ct == nil {
					t.Errorf("%s: not parsed", name)
					continue
				}
				got := want{ct.Passed, ct.Done, len(ct.Skips), len(ct.Failures)}
				if got != w {
					t.Errorf("%s: got %+v, want %+v (log %q)", name, got, w, ct.Log)
				}
			}
		})
	}
}

func TestParseCUnitLUNResetTeardown(t *testing.T) {
	r, _ := ParseCUnit(readFixture(t, "tgt-Reserve6.out"))
	ct := r.Test("Reserve6", "LUNReset")
	if len(ct.After) == 0 || !strings.Contains(ct.After[0], "[FAILED] PRIN command") {
		t.Errorf("teardown text after the verdict: got %q", ct.After)
	}
	if len(ct.Skips) != 0 {
		t.Errorf("teardown text counted as skip: %q", ct.Skips)
	}
}

func TestParseCUnitCrash(t *testing.T) {
	r, err := ParseCUnit(readFixture(t, "gotgt-OrWrite-crash.out"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Summary != nil {
		t.Errorf("summary parsed from truncated output: %+v", r.Summary)
	}
	if len(r.Tests) != 1 || r.Tests[0].Name != "Simple" || r.Tests[0].Done {
		t.Fatalf("tests: got %+v, want one unfinished Simple", r.Tests)
	}
	if len(r.Preamble) == 0 || !strings.Contains(r.Preamble[0], "PRIN") {
		t.Errorf("preamble: %q", r.Preamble)
	}
	cat := testCatalog(t)
	res := Classify("OrWrite", cat.Tests["OrWrite"], r, StatusCrash, nil)
	for _, tr := range res {
		if tr.Outcome != OutcomeIncomplete {
			t.Errorf("%s: %s, want incomplete", tr.Name, tr.Outcome)
		}
	}
	sr := SuiteResult{Tests: res}
	sr.count()
	if want := (Counts{Tests: 6, Fail: 6}); sr.Counts != want {
		t.Errorf("counts %+v, want %+v", sr.Counts, want)
	}
}

// The silent skips: at normal log level StartStopUnit.PwrCnd and NoLoej
// print nothing on a non-removable LU; at -V they print a [SKIPPED] line.
// Classification from RMB=0 must agree with the -V output.
func TestSilentSkips(t *testing.T) {
	cat := testCatalog(t)
	tests := cat.Tests["StartStopUnit"]
	normal, _ := ParseCUnit(readFixture(t, "tgt-StartStopUnit-plain.out"))
	verbose, _ := ParseCUnit(readFixture(t, "tgt-StartStopUnit-plain-V.out"))
	for _, n := range []string{"PwrCnd", "NoLoej"} {
		if s := normal.Test("StartStopUnit", n).Skips; len(s) != 0 {
			t.Errorf("%s printed a skip at normal level: %q", n, s)
		}
		if s := verbose.Test("StartStopUnit", n).Skips; len(s) == 0 {
			t.Errorf("%s printed no skip at -V", n)
		}
	}
	f, tr := false, true
	for _, c := range []struct {
		name    string
		rmb     *bool
		genuine int
	}{
		{"rmb=0", &f, 0},
		{"rmb unknown", nil, 0},
		{"rmb=1", &tr, 2}, // Simple still skipped by its own [SKIPPED] line
	} {
		sr := SuiteResult{Tests: Classify("StartStopUnit", tests, normal, StatusOK, c.rmb)}
		sr.count()
		if sr.Counts.Genuine != c.genuine || sr.Counts.Pass != 3 {
			t.Errorf("%s: counts %+v, want genuine %d, pass 3", c.name, sr.Counts, c.genuine)
		}
	}
	v := verbose
	sr := SuiteResult{Tests: Classify("StartStopUnit", tests, v, StatusOK, &tr)}
	sr.count()
	if sr.Counts.Skip != 3 {
		t.Errorf("-V output with RMB=1 claimed: skips %d, want 3", sr.Counts.Skip)
	}
}

func TestClassifyMissingAndStatus(t *testing.T) {
	r, _ := ParseCUnit(readFixture(t, "tgt-Reserve6.out"))
	// A test name the output does not contain is incomplete even if the
	// run ended normally.
	res := Classify("Reserve6", []string{"Simple", "Nonexistent"}, r, StatusOK, nil)
	if res[0].Outcome != OutcomePass || res[1].Outcome != OutcomeIncomplete {
		t.Errorf("got %+v", res)
	}
	// After a timeout, finished tests keep their verdict.
	res = Classify("Reserve6", []string{"Simple", "2Initiators", "TargetColdReset"}, r, StatusTimeout, nil)
	want := []Outcome{OutcomePass, OutcomeFail, OutcomeSkip}
	for i, tr := range res {
		if tr.Outcome != want[i] {
			t.Errorf("%s: %s, want %s", tr.Name, tr.Outcome, want[i])
		}
	}
}

func TestParseRMB(t *testing.T) {
	if v := ParseRMB("Peripheral Device Type:DIRECT_ACCESS\nRemovable:1\nVersion:5\n"); v == nil || !*v {
		t.Errorf("Removable:1 -> %v", v)
	}
	if v := ParseRMB("Removable:0\n"); v == nil || *v {
		t.Errorf("Removable:0 -> %v", v)
	}
	if v := ParseRMB("garbage"); v != nil {
		t.Errorf("garbage -> %v", *v)
	}
}

func TestArgs(t *testing.T) {
	u := "iscsi://127.0.0.1:3260/iqn.x/0"
	cases := []struct {
		suite string
		o     Options
		want  string
	}{
		{"Read10", Options{}, "--dataloss --test=ALL.Read10 " + u},
		{"Sanitize", Options{}, "--dataloss --allow-sanitize --test=ALL.Sanitize " + u},
		{"Sanitize", Options{NoSanitize: true}, "--dataloss --test=ALL.Sanitize " + u},
		{"MultipathIO", Options{}, "--dataloss --test=ALL.MultipathIO " + u + " " + u},
		{"MultipathIO", Options{SingleMultipathURL: true}, "--dataloss --test=ALL.MultipathIO " + u},
	}
	for _, c := range cases {
		if got := strings.Join(Args(c.suite, u, c.o), " "); got != c.want {
			t.Errorf("%s: got %q, want %q", c.suite, got, c.want)
		}
	}
}
