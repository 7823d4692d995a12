package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// Expected is the checked-in floor for one target (testdata/expected-ours.json).
// Each listed suite must run with no failure, at least Genuine genuine
// passes, and no skip outside AllowSkip. Suites not listed are not
// checked; add them as the daemon grows (conformance --write-expected
// prints the entries of a run).
type Expected struct {
	Comment []string        `json:"comment,omitempty"`
	Target  string          `json:"target"`
	Suites  []ExpectedSuite `json:"suites"`
}

// ExpectedSuite is the floor for one suite.
type ExpectedSuite struct {
	Suite string          `json:"suite"`
	LUN   harness.LUNKind `json:"lun"`
	Tests int             `json:"tests"`
	// Genuine is the minimum number of genuine passes.
	Genuine int `json:"genuine"`
	// AllowSkip names the tests that may skip (e.g. an optional command
	// the daemon does not implement). Every other test must pass genuinely.
	AllowSkip []string `json:"allow_skip,omitempty"`
}

// LoadExpected reads an expected-results file.
func LoadExpected(path string) (*Expected, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Expected
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("conformance: %s: %w", path, err)
	}
	seen := map[string]bool{}
	for _, s := range e.Suites {
		if seen[s.Suite] {
			return nil, fmt.Errorf("conformance: %s: suite %s listed twice", path, s.Suite)
		}
		seen[s.Suite] = true
		if s.Genuine+len(s.AllowSkip) < s.Tests {
			return nil, fmt.Errorf("conformance: %s: suite %s: genuine %d + allow_skip %d < tests %d",
				path, s.Suite, s.Genuine, len(s.AllowSkip), s.Tests)
		}
	}
	return &e, nil
}

// SuiteNames returns the listed suites in file order.
func (e *Expected) SuiteNames() []string {
	var n []string
	for _, s := range e.Suites {
		n = append(n, s.Suite)
	}
	return n
}

// Problem is one way a result falls short of the expectation.
type Problem struct {
	Suite  string `json:"suite"`
	Detail string `json:"detail"`
}

func (p Problem) String() string { return p.Suite + ": " + p.Detail }

// Compare checks res against e. It returns the problems (any failure, any
// genuine-pass regression, a suite missing from the results or run on a
// different LUN kind) and, separately, improvements worth recording.
func Compare(e *Expected, res *TargetResult) (problems []Problem, improvements []string) {
	for _, es := range e.Suites {
		s := res.Suite(es.Suite)
		if s == nil {
			problems = append(problems, Problem{es.Suite, "not run"})
			continue
		}
		if s.Status != StatusOK {
			problems = append(problems, Problem{es.Suite, fmt.Sprintf("suite %s: %s", s.Status, s.Message)})
		}
		if es.LUN != "" && s.UsedKind != es.LUN {
			problems = append(problems, Problem{es.Suite, fmt.Sprintf("ran on the %s LUN, expected %s", s.UsedKind, es.LUN)})
		}
		if es.Tests != 0 && s.Counts.Tests != es.Tests {
			problems = append(problems, Problem{es.Suite, fmt.Sprintf("%d tests in the suite, expected %d (libiscsi version changed?)", s.Counts.Tests, es.Tests)})
		}
		for _, t := range s.Tests {
			switch t.Outcome {
			case OutcomeFail, OutcomeIncomplete:
				d := fmt.Sprintf("%s %s", t.Name, strings.ToUpper(string(t.Outcome)))
				if len(t.Notes) > 0 {
					d += ": " + t.Notes[0]
				} else if len(t.Failures) > 0 {
					d += ": " + t.Failures[0]
				}
				problems = append(problems, Problem{es.Suite, d})
			case OutcomeSkip:
				if !slices.Contains(es.AllowSkip, t.Name) {
					d := t.Name + " no longer a genuine pass (skipped)"
					if len(t.Notes) > 0 {
						d += ": " + t.Notes[0]
					}
					problems = append(problems, Problem{es.Suite, d})
				}
			}
		}
		if s.Counts.Genuine < es.Genuine {
			problems = append(problems, Problem{es.Suite, fmt.Sprintf("genuine passes %d < expected %d", s.Counts.Genuine, es.Genuine)})
		} else if s.Counts.Genuine > es.Genuine {
			improvements = append(improvements, fmt.Sprintf("%s: genuine passes %d > expected %d (raise the floor)", es.Suite, s.Counts.Genuine, es.Genuine))
		}
	}
	return problems, improvements
}

// ExpectationFrom builds expected entries from a run: every suite that ran
// normally and without failures, at its current genuine count, with its
// current skips allowed. Suites with failures are left out and listed.
func ExpectationFrom(res *TargetResult, comment []string) (*Expected, []string) {
	e := &Expected{Comment: comment, Target: res.Target}
	var omitted []string
	for _, s := range res.Suites {
		if s.Status != StatusOK || s.Counts.Fail > 0 {
			omitted = append(omitted, s.Suite)
			continue
		}
		skips := s.Names(OutcomeSkip)
		sort.Strings(skips)
		e.Suites = append(e.Suites, ExpectedSuite{Suite: s.Suite, LUN: s.UsedKind,
			Tests: s.Counts.Tests, Genuine: s.Counts.Genuine, AllowSkip: skips})
	}
	return e, omitted
}

// Merge returns e with the suites of add replacing or extending its own,
// keeping e's order and appending new suites.
func (e *Expected) Merge(add *Expected) *Expected {
	out := &Expected{Comment: e.Comment, Target: e.Target}
	byName := map[string]ExpectedSuite{}
	for _, s := range add.Suites {
		byName[s.Suite] = s
	}
	for _, s := range e.Suites {
		if n, ok := byName[s.Suite]; ok {
			s = n
			delete(byName, s.Suite)
		}
		out.Suites = append(out.Suites, s)
	}
	for _, s := range add.Suites {
		if _, ok := byName[s.Suite]; ok {
			out.Suites = append(out.Suites, s)
		}
	}
	return out
}

// WriteFile writes e as indented JSON.
func (e *Expected) WriteFile(path string) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
