package scsi

import "time"

// cmdState is the device server's per-command scratch: the router, the
// resolved LU, the dispatch entry and the decoded CDB. It lives inside
// Command, so planning and executing a command allocate nothing. Only the
// decoded struct that belongs to the command's operation code is valid.
type cmdState struct {
	r     *Router
	lu    *LU
	op    *opEntry
	start time.Time // when Plan began, for the latency histogram

	blk  blockCDB
	inq  inquiryCDB
	ms   modeSenseCDB
	msel modeSelectCDB
	rl   reportLUNsCDB
	rsoc rsocCDB
	tmf  rstmfCDB
	rc   readCapCDB
	gls  lbaStatusCDB
	ssu  startStopCDB
	pa   preventCDB
	rs   requestSenseCDB
	um   unmapCDB
	rdd  defectCDB
	san  sanitizeCDB
	xc   xcopyCDB
	rcr  rcrCDB
	logs logSenseCDB
}
