package conformance

import (
	"fmt"
	"strings"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Outcome is the verdict on one libiscsi test after skip classification.
type Outcome string

// Outcomes. CUnit counts OutcomeSkip as passed, because libiscsi reports a
// skip with CU_PASS("[SKIPPED] ...").
const (
	OutcomePass       Outcome = "pass"       // genuine pass
	OutcomeSkip       Outcome = "skip"       // CUnit passed, but the test skipped (part of) itself
	OutcomeFail       Outcome = "fail"       // CUnit FAILED
	OutcomeIncomplete Outcome = "incomplete" // no verdict: the suite timed out, crashed or aborted
)

// Status says how a suite run ended.
type Status string

// Suite statuses. Anything but StatusOK turns every test without a CUnit
// pass into a failure.
const (
	StatusOK      Status = "ok"
	StatusTimeout Status = "timeout" // killed after the suite timeout: target hung (or the tool did)
	StatusCrash   Status = "crash"   // the target process died or stopped accepting connections
	StatusAborted Status = "aborted" // iscsi-test-cu ended without a Run Summary (setup error, signal)
	StatusError   Status = "error"   // the harness could not run the suite (target down, restart failed)
)

// TestResult is one test's classified result.
type TestResult struct {
	Name    string  `json:"name"`
	Outcome Outcome `json:"outcome"`
	// Notes are the [SKIPPED] lines, the silent-skip reason, or why the
	// test is incomplete.
	Notes []string `json:"notes,omitempty"`
	// Failures are CUnit's failed-assertion lines (at most a few kept).
	Failures []string `json:"failures,omitempty"`
	// FailureCount is the number of failed assertions CUnit listed.
	FailureCount int `json:"failure_count,omitempty"`
}

// Counts are the per-suite numbers of the tables. Pass is CUnit's passed
// count (genuine passes plus skips), as in conformance-baseline.md.
type Counts struct {
	Tests   int `json:"tests"`
	Pass    int `json:"pass"`
	Fail    int `json:"fail"` // CUnit failures plus incomplete tests
	Skip    int `json:"skip"`
	Genuine int `json:"genuine"`
}

// Add accumulates c2 into c.
func (c *Counts) Add(c2 Counts) {
	c.Tests += c2.Tests
	c.Pass += c2.Pass
	c.Fail += c2.Fail
	c.Skip += c2.Skip
	c.Genuine += c2.Genuine
}

// SuiteResult is one suite run against one target.
type SuiteResult struct {
	Suite string `json:"suite"`
	// Kind is the LUN kind requested for the suite; UsedKind the one the
	// target actually offered (plain when it lacks the kind).
	Kind     harness.LUNKind `json:"lun"`
	UsedKind harness.LUNKind `json:"lun_used"`
	URL      string          `json:"url"`
	Status   Status          `json:"status"`
	Message  string          `json:"message,omitempty"`
	ExitCode int             `json:"exit_code"`
	Duration time.Duration   `json:"duration_ns"`
	Tests    []TestResult    `json:"tests"`
	Counts   Counts          `json:"counts"`
	// ParseWarning reports a mismatch between parsed verdicts and CUnit's
	// own summary (should never happen).
	ParseWarning string `json:"parse_warning,omitempty"`
}

// count fills Counts from Tests.
func (s *SuiteResult) count() {
	c := Counts{Tests: len(s.Tests)}
	for _, t := range s.Tests {
		switch t.Outcome {
		case OutcomePass:
			c.Pass++
			c.Genuine++
		case OutcomeSkip:
			c.Pass++
			c.Skip++
		default:
			c.Fail++
		}
	}
	s.Counts = c
}

// Test returns the named test's result, or nil.
func (s *SuiteResult) Test(name string) *TestResult {
	for i := range s.Tests {
		if s.Tests[i].Name == name {
			return &s.Tests[i]
		}
	}
	return nil
}

// Names returns the names of tests with outcome o.
func (s *SuiteResult) Names(o Outcome) []string {
	var n []string
	for _, t := range s.Tests {
		if t.Outcome == o {
			n = append(n, t.Name)
		}
	}
	return n
}

// Note is the short annotation of the tables: the abnormal status and the
// LUN fallback.
func (s *SuiteResult) Note() string {
	var n []string
	if s.Status != StatusOK {
		n = append(n, strings.ToUpper(string(s.Status)))
	}
	if s.UsedKind != s.Kind {
		n = append(n, fmt.Sprintf("lun=%s", s.UsedKind))
	}
	return strings.Join(n, " ")
}

// TargetResult is a whole run against one target.
type TargetResult struct {
	Target   string        `json:"target"`
	Version  string        `json:"version,omitempty"`
	Suites   []SuiteResult `json:"suites"`
	Duration time.Duration `json:"duration_ns"`
	Restarts int           `json:"restarts"`
}

// Suite returns the named suite's result, or nil.
func (r *TargetResult) Suite(name string) *SuiteResult {
	for i := range r.Suites {
		if r.Suites[i].Suite == name {
			return &r.Suites[i]
		}
	}
	return nil
}

// Totals sums the counts of all suites.
func (r *TargetResult) Totals() Counts {
	var c Counts
	for _, s := range r.Suites {
		c.Add(s.Counts)
	}
	return c
}

// Abnormal returns the suites whose status is not ok.
func (r *TargetResult) Abnormal() []SuiteResult {
	var a []SuiteResult
	for _, s := range r.Suites {
		if s.Status != StatusOK {
			a = append(a, s)
		}
	}
	return a
}
