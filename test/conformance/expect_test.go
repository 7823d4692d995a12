package conformance

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// suiteFrom builds a SuiteResult from a fixture the way Run would.
func suiteFrom(t *testing.T, suite, fixture string, kind harness.LUNKind, status Status, rmb *bool) SuiteResult {
	t.Helper()
	r, err := ParseCUnit(readFixture(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	s := SuiteResult{Suite: suite, Kind: kind, UsedKind: kind, Status: status}
	s.Tests = Classify(suite, testCatalog(t).Tests[suite], r, status, rmb)
	s.count()
	return s
}

func TestExpectedFile(t *testing.T) {
	e, err := LoadExpected(filepath.Join("testdata", "expected-ours.json"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Target != "ours" {
		t.Errorf("target %q", e.Target)
	}
	cat := testCatalog(t)
	for _, s := range e.Suites {
		if got := len(cat.Tests[s.Suite]); got != s.Tests {
			t.Errorf("%s: %d tests in libiscsi 1.19.0, file says %d", s.Suite, got, s.Tests)
		}
		if s.LUN != BestKind(s.Suite) {
			t.Errorf("%s: lun %s, best-coverage kind is %s", s.Suite, s.LUN, BestKind(s.Suite))
		}
	}
	// Issue 2: every required suite is in the floor, fully genuine.
	for _, name := range RequiredSuites {
		i := slices.IndexFunc(e.Suites, func(s ExpectedSuite) bool { return s.Suite == name })
		if i < 0 {
			t.Errorf("required suite %s missing from expected-ours.json", name)
			continue
		}
		if s := e.Suites[i]; s.Genuine != s.Tests || len(s.AllowSkip) > 0 {
			t.Errorf("required suite %s must be all genuine: %+v", name, s)
		}
	}
}

func TestCompare(t *testing.T) {
	f, tr := false, true
	res := &TargetResult{Target: "ours", Suites: []SuiteResult{
		suiteFrom(t, "ExtendedCopy", "tgt-ExtendedCopy.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "Reserve6", "tgt-Reserve6.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "StartStopUnit", "tgt-StartStopUnit-plain.out", harness.KindRMB, StatusOK, &tr),
		suiteFrom(t, "OrWrite", "gotgt-OrWrite-crash.out", harness.KindPlain, StatusCrash, &f),
	}}
	all6 := []string{"DescrLimits", "DescrType", "ParamHdr", "Simple", "ValidSegDescr", "ValidTgtDescr"}
	cases := []struct {
		name     string
		exp      ExpectedSuite
		problems []string // substrings, one per expected problem
		improved bool
	}{
		{"skips allowed", ExpectedSuite{Suite: "ExtendedCopy", LUN: "plain", Tests: 6, Genuine: 0, AllowSkip: all6}, nil, false},
		{"skip not allowed", ExpectedSuite{Suite: "ExtendedCopy", LUN: "plain", Tests: 6, Genuine: 0, AllowSkip: all6[1:]},
			[]string{"DescrLimits no longer a genuine pass"}, false},
		{"failure", ExpectedSuite{Suite: "Reserve6", LUN: "plain", Tests: 7, Genuine: 4,
			AllowSkip: []string{"2Initiators", "TargetColdReset", "TargetWarmReset"}},
			[]string{"2Initiators FAIL"}, false},
		{"regression", ExpectedSuite{Suite: "StartStopUnit", LUN: "rmb", Tests: 3, Genuine: 3},
			[]string{"Simple no longer a genuine pass", "genuine passes 2 < expected 3"}, false},
		{"improvement", ExpectedSuite{Suite: "StartStopUnit", LUN: "rmb", Tests: 3, Genuine: 1,
			AllowSkip: []string{"Simple", "PwrCnd"}}, nil, true},
		{"wrong lun", ExpectedSuite{Suite: "StartStopUnit", LUN: "plain", Tests: 3, Genuine: 2, AllowSkip: []string{"Simple"}},
			[]string{"ran on the rmb LUN"}, false},
		{"crash", ExpectedSuite{Suite: "OrWrite", LUN: "plain", Tests: 6, Genuine: 0,
			AllowSkip: []string{"Simple", "BeyondEol", "ZeroBlocks", "Protect", "DpoFua", "Verify"}},
			[]string{"suite crash", "Simple INCOMPLETE", "BeyondEol INCOMPLETE", "ZeroBlocks INCOMPLETE", "Protect INCOMPLETE", "DpoFua INCOMPLETE", "Verify INCOMPLETE"}, false},
		{"not run", ExpectedSuite{Suite: "Read10", Tests: 6, Genuine: 6}, []string{"not run"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probs, better := Compare(&Expected{Suites: []ExpectedSuite{c.exp}}, res)
			if len(probs) != len(c.problems) {
				t.Fatalf("problems %v, want %d matching %q", probs, len(c.problems), c.problems)
			}
			for i, p := range probs {
				if !strings.Contains(p.Detail, c.problems[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p.Detail, c.problems[i])
				}
			}
			if (len(better) > 0) != c.improved {
				t.Errorf("improvements %v, want %v", better, c.improved)
			}
		})
	}
}

func TestExpectationFromAndMerge(t *testing.T) {
	tr := true
	res := &TargetResult{Target: "ours", Suites: []SuiteResult{
		suiteFrom(t, "ExtendedCopy", "tgt-ExtendedCopy.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "Reserve6", "tgt-Reserve6.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "StartStopUnit", "tgt-StartStopUnit-plain.out", harness.KindRMB, StatusOK, &tr),
	}}
	add, omitted := ExpectationFrom(res, nil)
	if !slices.Equal(omitted, []string{"Reserve6"}) {
		t.Errorf("omitted %v, want [Reserve6] (it has a failure)", omitted)
	}
	if probs, _ := Compare(add, res); len(probs) != 0 {
		t.Errorf("a run does not meet its own expectation: %v", probs)
	}
	base := &Expected{Target: "ours", Comment: []string{"keep"}, Suites: []ExpectedSuite{
		{Suite: "Read10", LUN: "plain", Tests: 6, Genuine: 6},
		{Suite: "StartStopUnit", LUN: "rmb", Tests: 3, Genuine: 0},
	}}
	m := base.Merge(add)
	if got := m.SuiteNames(); !slices.Equal(got, []string{"Read10", "StartStopUnit", "ExtendedCopy"}) {
		t.Errorf("merged order %v", got)
	}
	if m.Suites[1].Genuine != 2 || m.Comment[0] != "keep" {
		t.Errorf("merge: %+v", m)
	}
	path := filepath.Join(t.TempDir(), "e.json")
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadExpected(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.SuiteNames(), m.SuiteNames()) {
		t.Errorf("round trip: %v", back.SuiteNames())
	}
}

func TestReportFormats(t *testing.T) {
	f := false
	ours := &TargetResult{Target: "ours", Suites: []SuiteResult{
		suiteFrom(t, "Reserve6", "tgt-Reserve6.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "StartStopUnit", "tgt-StartStopUnit-plain.out", harness.KindRMB, StatusOK, &f),
	}}
	peer := &TargetResult{Target: "gotgt", Suites: []SuiteResult{
		suiteFrom(t, "Reserve6", "tgt-Reserve6.out", harness.KindPlain, StatusOK, nil),
		suiteFrom(t, "OrWrite", "gotgt-OrWrite-crash.out", harness.KindPlain, StatusCrash, nil),
	}}
	peer.Suites[0].UsedKind = harness.KindPlain
	rep := &Report{Method: Method{LUN: "best"}, Targets: []*TargetResult{ours, peer}}

	var txt bytes.Buffer
	if err := rep.Write(&txt, "text"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(txt.String(), "\n")
	for _, want := range []string{
		"Reserve6      plain     7 |    6    1    2   4  |     6    1    2   4",
		"StartStopUnit rmb       3 |    3    0    3   0  |     -    -    -   -",
		"OrWrite       plain     6 |    -    -    -   -  |     0    6    0   0 CRASH",
		"Total                  16 |    9    1    5   4  |     6    7    2   4",
	} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.TrimRight(l, " ") == want }) {
			t.Errorf("text table lacks %q:\n%s", want, txt.String())
		}
	}
	if !strings.Contains(txt.String(), "gotgt (): 13 tests, 4 genuine, 2 skip, 7 fail (6 in abnormal suites), 1 suites abnormal (OrWrite CRASH)") {
		t.Errorf("footer:\n%s", txt.String())
	}

	var md bytes.Buffer
	if err := rep.Write(&md, "markdown"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| OrWrite | plain | 6 | - | - | - | **-** |  | 0 | 6 | 0 | **0** | CRASH |") {
		t.Errorf("markdown:\n%s", md.String())
	}

	var js bytes.Buffer
	if err := rep.Write(&js, "json"); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Targets[1].Suite("OrWrite").Tests[0].Outcome; got != OutcomeIncomplete {
		t.Errorf("json round trip: OrWrite.Simple %s", got)
	}
	if err := rep.Write(&js, "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}
