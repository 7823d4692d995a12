package conformance

// RequiredSuites are the suites issue 2 requires to pass genuinely, with no
// failure, on our daemon (each on its best-coverage LUN: StartStopUnit on
// the removable LUN, Inquiry on the thin LUN for BlockLimits).
// testdata/expected-ours.json starts from exactly this list.
var RequiredSuites = []string{
	"Inquiry", "Mandatory", "ModeSense6",
	"Read6", "Read10", "Read12", "Read16",
	"ReadCapacity10", "ReadCapacity16", "ReportSupportedOpcodes", "TestUnitReady",
	"Verify10", "Verify12", "Verify16",
	"Write10", "Write12", "Write16",
	"WriteVerify10", "WriteVerify12", "WriteVerify16",
	"Prefetch10", "Prefetch16", "StartStopUnit",
	"iSCSIcmdsn", "iSCSIdatasn", "iSCSIResiduals", "iSCSITMF",
}
