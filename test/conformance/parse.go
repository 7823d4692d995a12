package conformance

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// CUnitTest is one test as printed by CUnit's basic interface in verbose
// mode (iscsi-test-cu's default -v):
//
//	  Test: Simple ...passed
//	  Test: OwnershipEA ...    [FAILED] PRIN command: ...
//	FAILED
//	    1. test_prout_reserve_ownership.c:84  - CU_ASSERT_EQUAL(0,ret)
//
// CUnit prints "  Test: NAME ..." when a test starts, the test's own
// logging lines (four-space indent, the first one right after "..."), then
// "passed" or "FAILED" with no indent, then one numbered line per failed
// assertion.
type CUnitTest struct {
	Suite string
	Name  string
	// Done is false when the output ends before the verdict (the tool was
	// killed or crashed inside the test).
	Done   bool
	Passed bool
	// Log holds the test's logging lines, trimmed.
	Log []string
	// Skips are the log lines that contain "[SKIPPED]".
	Skips []string
	// Failures are the numbered assertion lines after FAILED.
	Failures []string
	// After is text printed after the verdict and before the next test
	// (suite teardown output); it does not change the verdict.
	After []string
}

// CUnitSummary is the "Run Summary" block.
type CUnitSummary struct {
	TestsRun, TestsPassed, TestsFailed, TestsInactive int
	AssertsRun, AssertsPassed, AssertsFailed          int
}

// CUnitRun is everything parsed from one iscsi-test-cu invocation.
type CUnitRun struct {
	Tests []CUnitTest
	// Summary is nil when the output has no Run Summary (the tool died or
	// never reached the registry).
	Summary *CUnitSummary
	// SuiteInitFailed names suites whose initialisation failed.
	SuiteInitFailed []string
	// Preamble holds the lines printed before the first suite (connection
	// and setup errors end up here).
	Preamble []string
}

// Test returns the parsed test suite.name, or nil.
func (r *CUnitRun) Test(suite, name string) *CUnitTest {
	for i := range r.Tests {
		if r.Tests[i].Suite == suite && r.Tests[i].Name == name {
			return &r.Tests[i]
		}
	}
	return nil
}

const skipMarker = "[SKIPPED]"

// ParseCUnit parses iscsi-test-cu's stdout. It never fails on truncated
// output: incomplete tests come back with Done=false.
func ParseCUnit(out string) (*CUnitRun, error) {
	r := &CUnitRun{}
	var suite string
	var cur *CUnitTest
	inFailures := false
	inSummary := false
	seenSuite := false

	closeTest := func() {
		if cur != nil {
			r.Tests = append(r.Tests, *cur)
			cur = nil
		}
		inFailures = false
	}
	// verdict handles unindented text that may start with CUnit's
	// "passed"/"FAILED". Test logging is always indented, but output of
	// the suite's teardown can follow the verdict on the same line
	// ("passed    [FAILED] PRIN command: ..."); it is kept in the log.
	verdict := func(s string) bool {
		var rest string
		switch {
		case strings.HasPrefix(s, "passed"):
			cur.Done, cur.Passed = true, true
			rest = strings.TrimPrefix(s, "passed")
		case strings.HasPrefix(s, "FAILED"):
			cur.Done, cur.Passed = true, false
			inFailures = true
			rest = strings.TrimPrefix(s, "FAILED")
		default:
			return false
		}
		if t := strings.TrimSpace(rest); t != "" {
			cur.After = append(cur.After, t)
		}
		return true
	}
	addLog := func(line string) {
		t := strings.TrimSpace(line)
		if t == "" {
			return
		}
		cur.Log = append(cur.Log, t)
		if strings.Contains(t, skipMarker) {
			cur.Skips = append(cur.Skips, t)
		}
	}

	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Suite: "):
			closeTest()
			suite = strings.TrimSpace(strings.TrimPrefix(line, "Suite: "))
			seenSuite = true
			continue
		case strings.HasPrefix(line, "  Test: "):
			closeTest()
			rest := strings.TrimPrefix(line, "  Test: ")
			name, after, ok := strings.Cut(rest, " ...")
			if !ok {
				name, after = strings.TrimSpace(rest), ""
			}
			cur = &CUnitTest{Suite: suite, Name: name}
			if !verdict(after) {
				addLog(after)
			}
			continue
		case strings.HasPrefix(line, "Run Summary:"):
			closeTest()
			inSummary = true
			r.Summary = &CUnitSummary{}
			continue
		case strings.HasPrefix(line, "WARNING - Suite initialization failed for '"):
			closeTest()
			n := strings.TrimPrefix(line, "WARNING - Suite initialization failed for '")
			n, _, _ = strings.Cut(n, "'")
			r.SuiteInitFailed = append(r.SuiteInitFailed, n)
			continue
		}
		if inSummary {
			f := strings.Fields(line)
			if len(f) >= 6 && (f[0] == "tests" || f[0] == "asserts") {
				nums := make([]int, 5)
				for i := 0; i < 5; i++ {
					nums[i], _ = strconv.Atoi(f[i+1]) // "n/a" stays 0
				}
				if f[0] == "tests" {
					r.Summary.TestsRun, r.Summary.TestsPassed = nums[1], nums[2]
					r.Summary.TestsFailed, r.Summary.TestsInactive = nums[3], nums[4]
				} else {
					r.Summary.AssertsRun, r.Summary.AssertsPassed = nums[1], nums[2]
					r.Summary.AssertsFailed = nums[3]
				}
			}
			continue
		}
		if cur == nil {
			if !seenSuite && strings.TrimSpace(line) != "" {
				r.Preamble = append(r.Preamble, strings.TrimSpace(line))
			}
			continue
		}
		if !cur.Done {
			if verdict(line) {
				continue
			}
			addLog(line)
			continue
		}
		if inFailures && strings.HasPrefix(line, "    ") {
			cur.Failures = append(cur.Failures, strings.TrimSpace(line))
			continue
		}
		// Text after the verdict that is not a failure line.
		if strings.TrimSpace(line) != "" {
			cur.After = append(cur.After, strings.TrimSpace(line))
		}
	}
	closeTest()
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("conformance: reading CUnit output: %w", err)
	}
	return r, nil
}

// Check cross-checks the per-test verdicts against CUnit's Run Summary and
// returns a description of any mismatch.
func (r *CUnitRun) Check() error {
	if r.Summary == nil {
		return nil
	}
	var passed, failed, run int
	for _, t := range r.Tests {
		if !t.Done {
			continue
		}
		run++
		if t.Passed {
			passed++
		} else {
			failed++
		}
	}
	s := r.Summary
	if run != s.TestsRun || passed != s.TestsPassed || failed != s.TestsFailed {
		return fmt.Errorf("conformance: parsed %d run/%d passed/%d failed, CUnit summary says %d/%d/%d",
			run, passed, failed, s.TestsRun, s.TestsPassed, s.TestsFailed)
	}
	return nil
}
