// Package conformance runs the libiscsi conformance suite (iscsi-test-cu
// from Debian's libiscsi-bin) against an iSCSI target and counts genuine
// passes, the way conformance-baseline.md prescribes:
//
//   - one iscsi-test-cu process per suite (-t ALL.<Suite>), each bounded by
//     a timeout with SIGTERM then SIGKILL, because libiscsi tests can leave
//     PDU-rewriting hooks behind that corrupt later suites in one process;
//   - --dataloss always, --allow-sanitize for Sanitize, the URL twice for
//     MultipathIO;
//   - each suite on the LUN kind that gives it full coverage (read-only,
//     removable or thin), or on the plain LUN for the "plain" columns;
//   - CUnit counts a skip as a pass (libiscsi skips with CU_PASS), so a
//     passed test that printed "[SKIPPED]" is a skip, and three tests that
//     skip silently on a non-removable LU are classified from INQUIRY RMB;
//     genuine passes = CUnit passes - skips;
//   - a suite that times out, or after which the target is down, counts all
//     its tests without a CUnit pass as failed.
//
// Results render as side-by-side tables (text, Markdown, JSON) for our
// daemon, tgt and gotgt, and compare against a checked-in floor
// (testdata/expected-ours.json). The command lives in cmd/conformance;
// targets are started by test/e2e/harness.
package conformance
