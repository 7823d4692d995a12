package scsi

import (
	"context"
	"fmt"
)

// OpCode is a SCSI operation code (SPC-4 §4.3.4).
type OpCode uint8

// Operation codes of the commands this device server implements, from
// SPC-4 §6 and SBC-4 §5, plus the ones tests refer to.
const (
	OpTestUnitReady    OpCode = 0x00 // TEST UNIT READY
	OpRequestSense     OpCode = 0x03 // REQUEST SENSE
	OpRead6            OpCode = 0x08 // READ(6)
	OpWrite6           OpCode = 0x0A // WRITE(6)
	OpInquiry          OpCode = 0x12 // INQUIRY
	OpModeSelect6      OpCode = 0x15 // MODE SELECT(6)
	OpModeSense6       OpCode = 0x1A // MODE SENSE(6)
	OpStartStopUnit    OpCode = 0x1B // START STOP UNIT
	OpPreventAllow     OpCode = 0x1E // PREVENT ALLOW MEDIUM REMOVAL
	OpReadCapacity10   OpCode = 0x25 // READ CAPACITY(10)
	OpRead10           OpCode = 0x28 // READ(10)
	OpWrite10          OpCode = 0x2A // WRITE(10)
	OpWriteAndVerify10 OpCode = 0x2E // WRITE AND VERIFY(10)
	OpVerify10         OpCode = 0x2F // VERIFY(10)
	OpPreFetch10       OpCode = 0x34 // PRE-FETCH(10)
	OpSyncCache10      OpCode = 0x35 // SYNCHRONIZE CACHE(10)
	OpReadDefectData10 OpCode = 0x37 // READ DEFECT DATA(10)
	OpWriteSame10      OpCode = 0x41 // WRITE SAME(10)
	OpUnmap            OpCode = 0x42 // UNMAP
	OpModeSelect10     OpCode = 0x55 // MODE SELECT(10)
	OpModeSense10      OpCode = 0x5A // MODE SENSE(10)
	OpRead16           OpCode = 0x88 // READ(16)
	OpCompareAndWrite  OpCode = 0x89 // COMPARE AND WRITE
	OpWrite16          OpCode = 0x8A // WRITE(16)
	OpORWrite16        OpCode = 0x8B // ORWRITE(16)
	OpWriteAndVerify16 OpCode = 0x8E // WRITE AND VERIFY(16)
	OpVerify16         OpCode = 0x8F // VERIFY(16)
	OpPreFetch16       OpCode = 0x90 // PRE-FETCH(16)
	OpSyncCache16      OpCode = 0x91 // SYNCHRONIZE CACHE(16)
	OpWriteSame16      OpCode = 0x93 // WRITE SAME(16)
	OpServiceActionIn  OpCode = 0x9E // SERVICE ACTION IN(16)
	OpReportLUNs       OpCode = 0xA0 // REPORT LUNS
	OpMaintenanceIn    OpCode = 0xA3 // MAINTENANCE IN
	OpRead12           OpCode = 0xA8 // READ(12)
	OpWrite12          OpCode = 0xAA // WRITE(12)
	OpWriteAndVerify12 OpCode = 0xAE // WRITE AND VERIFY(12)
	OpVerify12         OpCode = 0xAF // VERIFY(12)
	OpReadDefectData12 OpCode = 0xB7 // READ DEFECT DATA(12)
	OpSanitize         OpCode = 0x48 // SANITIZE
	OpExtendedCopy     OpCode = 0x83 // EXTENDED COPY(LID1)
	OpReceiveCopy      OpCode = 0x84 // RECEIVE COPY RESULTS
	OpWriteAtomic16    OpCode = 0x9C // WRITE ATOMIC(16)
	OpLogSense         OpCode = 0x4D // LOG SENSE
)

// Service actions of SERVICE ACTION IN(16) (SBC-4 §5.x) and MAINTENANCE IN
// (SPC-4 §6.34, §6.36).
const (
	SAReadCapacity16         uint8 = 0x10 // READ CAPACITY(16)
	SAGetLBAStatus           uint8 = 0x12 // GET LBA STATUS
	SAReportSupportedOpcodes uint8 = 0x0C // REPORT SUPPORTED OPERATION CODES
	SAReportSupportedTMFs    uint8 = 0x0D // REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
)

// opNames spells every known operation code as the standards do. It is
// separate from the dispatch table so that String never depends on it.
var opNames = [256]string{
	OpTestUnitReady: "TEST UNIT READY", OpRequestSense: "REQUEST SENSE", OpRead6: "READ(6)",
	OpWrite6: "WRITE(6)", OpInquiry: "INQUIRY", OpModeSelect6: "MODE SELECT(6)",
	OpModeSense6: "MODE SENSE(6)", OpStartStopUnit: "START STOP UNIT",
	OpPreventAllow: "PREVENT ALLOW MEDIUM REMOVAL", OpReadCapacity10: "READ CAPACITY(10)",
	OpRead10: "READ(10)", OpWrite10: "WRITE(10)", OpWriteAndVerify10: "WRITE AND VERIFY(10)",
	OpVerify10: "VERIFY(10)", OpPreFetch10: "PRE-FETCH(10)", OpSyncCache10: "SYNCHRONIZE CACHE(10)",
	OpReadDefectData10: "READ DEFECT DATA(10)", OpWriteSame10: "WRITE SAME(10)", OpUnmap: "UNMAP",
	OpModeSelect10: "MODE SELECT(10)", OpModeSense10: "MODE SENSE(10)", OpRead16: "READ(16)",
	OpCompareAndWrite: "COMPARE AND WRITE", OpWrite16: "WRITE(16)", OpORWrite16: "ORWRITE(16)",
	OpWriteAndVerify16: "WRITE AND VERIFY(16)", OpVerify16: "VERIFY(16)", OpPreFetch16: "PRE-FETCH(16)",
	OpSyncCache16: "SYNCHRONIZE CACHE(16)", OpWriteSame16: "WRITE SAME(16)",
	OpServiceActionIn: "SERVICE ACTION IN(16)", OpReportLUNs: "REPORT LUNS",
	OpMaintenanceIn: "MAINTENANCE IN", OpRead12: "READ(12)", OpWrite12: "WRITE(12)",
	OpWriteAndVerify12: "WRITE AND VERIFY(12)", OpVerify12: "VERIFY(12)",
	OpReadDefectData12: "READ DEFECT DATA(12)", OpSanitize: "SANITIZE", OpExtendedCopy: "EXTENDED COPY",
	OpReceiveCopy: "RECEIVE COPY RESULTS", OpWriteAtomic16: "WRITE ATOMIC(16)",
	// Commands we do not implement but that initiators send; named for logs.
	OpReserve6: "RESERVE(6)", OpRelease6: "RELEASE(6)", OpReserve10: "RESERVE(10)", OpRelease10: "RELEASE(10)",
	OpPersistentReserveIn: "PERSISTENT RESERVE IN", OpPersistentReserveOut: "PERSISTENT RESERVE OUT",
	0x04: "FORMAT UNIT", 0x1C: "RECEIVE DIAGNOSTIC RESULTS",
	0x1D: "SEND DIAGNOSTIC", 0x3B: "WRITE BUFFER", 0x3C: "READ BUFFER", OpLogSense: "LOG SENSE",
	0x4C: "LOG SELECT",
	0x85: "ATA PASS-THROUGH(16)", 0xA1: "ATA PASS-THROUGH(12)", 0xA2: "SECURITY PROTOCOL IN",
	0xB5: "SECURITY PROTOCOL OUT",
}

func (o OpCode) String() string {
	if n := opNames[o]; n != "" {
		return n
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// opFlags are the generic properties the dispatcher checks before a
// command's own planning (SAM-5 §5.14, SPC-4 §5.14, SBC-4 §4.x).
type opFlags uint8

const (
	// flagNoUA: the command neither reports nor clears unit attentions
	// (INQUIRY, REPORT LUNS, REQUEST SENSE: SPC-4 §5.14).
	flagNoUA opFlags = 1 << iota
	// flagNoLU: the command is answered even for a LUN that does not
	// exist (SPC-4 §6.6.2, §6.33, §6.39).
	flagNoLU
	// flagMedium: the command needs the medium (NOT READY, MEDIUM NOT
	// PRESENT after an eject).
	flagMedium
	// flagWrite: the command modifies the medium; a write-protected LU
	// answers DATA PROTECT.
	flagWrite
	// flagThin: the command exists only on thin provisioned LUs (SBC-4
	// §4.7); elsewhere it is an invalid operation code.
	flagThin
	// flagQuick: an ordinary read or write, usually done as soon as the
	// backing store's page cache has answered (Command.Quick).
	flagQuick
)

type (
	// planFunc decodes and validates the CDB, stores the decoded form in
	// c.state and sets c.Dir and c.XferLen. lu is nil for a LUN that does
	// not exist (only flagNoLU commands see that).
	planFunc func(lu *LU, c *Command) error
	// execFunc does the work once data has moved. nil means the command
	// completes in Plan.
	execFunc func(ctx context.Context, lu *LU, c *Command) error
)

// opEntry describes one operation code (or one service action of a
// service action opcode). usage is the CDB USAGE DATA of REPORT SUPPORTED
// OPERATION CODES (SPC-4 §6.35.3): its length is the CDB length, byte 0 is
// the opcode, a service action sits where the CDB carries it, and every
// other bit set to one is a bit the device server examines. The
// dispatcher rejects any CDB bit outside this map (SPC-4 §4.3.4.1: the
// device server may check reserved fields), so the bitmap reported to the
// initiator and the bits accepted cannot disagree.
type opEntry struct {
	usage []byte
	flags opFlags
	plan  planFunc
	exec  execFunc
	sas   []opEntry // service actions (SERVICE ACTION IN, MAINTENANCE IN)
}

// saMask selects the SERVICE ACTION field in byte 1 of the 12 and 16 byte
// service action CDBs (SPC-4 §4.3.3).
const saMask = 0x1F

// sbcOps is the dispatch table of a direct access block device. It is
// never modified after package initialisation.
var sbcOps = [256]opEntry{
	OpTestUnitReady: {usage: u(0x00, 0, 0, 0, 0, 0), flags: flagMedium, plan: planNoData},
	OpRequestSense:  {usage: u(0x03, 0x01, 0, 0, 0xFF, 0), flags: flagNoUA | flagNoLU, plan: planRequestSense, exec: execRequestSense},
	OpRead6:         {usage: u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), flags: flagMedium | flagQuick, plan: planRead, exec: execRead},
	OpWrite6:        {usage: u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite | flagQuick, plan: planWrite, exec: execWrite},
	OpInquiry:       {usage: u(0x12, 0x01, 0xFF, 0xFF, 0xFF, 0), flags: flagNoUA | flagNoLU, plan: planInquiry, exec: execInquiry},
	OpModeSelect6:   {usage: u(0x15, 0x11, 0, 0, 0xFF, 0), plan: planModeSelect, exec: execModeSelect},
	OpModeSense6:    {usage: u(0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0), plan: planModeSense, exec: execModeSense},
	OpStartStopUnit: {usage: u(0x1B, 0x01, 0, 0x0F, 0xF7, 0), plan: planStartStop, exec: execStartStop},
	OpPreventAllow:  {usage: u(0x1E, 0, 0, 0, 0x03, 0), plan: planPreventAllow, exec: execPreventAllow},

	OpReadCapacity10:   {usage: u(0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0), flags: flagMedium, plan: planReadCapacity10, exec: execReadCapacity10},
	OpRead10:           {usage: u(0x28, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium | flagQuick, plan: planRead, exec: execRead},
	OpWrite10:          {usage: u(0x2A, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite | flagQuick, plan: planWrite, exec: execWrite},
	OpWriteAndVerify10: {usage: u(0x2E, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite, plan: planWriteAndVerify, exec: execWriteAndVerify},
	OpVerify10:         {usage: u(0x2F, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium, plan: planVerify, exec: execVerify},
	OpPreFetch10:       {usage: u(0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium, plan: planPreFetch},
	OpSyncCache10:      {usage: u(0x35, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium, plan: planSyncCache, exec: execSyncCache},
	OpReadDefectData10: {usage: u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0), flags: flagMedium, plan: planReadDefectData, exec: execReadDefectData},
	OpWriteSame10:      {usage: u(0x41, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite, plan: planWriteSame, exec: execWriteSame},
	OpUnmap:            {usage: u(0x42, 0x01, 0, 0, 0, 0, 0x3F, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite | flagThin, plan: planUnmap, exec: execUnmap},
	OpSanitize: {sas: []opEntry{
		{usage: u(0x48, 0xA0|saOverwrite, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite, plan: planSanitize, exec: execSanitize},
		{usage: u(0x48, 0xA0|saBlockErase, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite | flagThin, plan: planSanitize, exec: execSanitize},
		{usage: u(0x48, 0xA0|saExitFailureMode, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), flags: flagMedium | flagWrite, plan: planSanitize, exec: execSanitize},
	}},
	OpLogSense:     {usage: u(0x4D, 0, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0), plan: planLogSense, exec: execLogSense},
	OpModeSelect10: {usage: u(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), plan: planModeSelect, exec: execModeSelect},
	OpModeSense10:  {usage: u(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), plan: planModeSense, exec: execModeSense},

	OpExtendedCopy: {usage: u(0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), flags: flagMedium | flagWrite, plan: planExtendedCopy, exec: execExtendedCopy},
	OpReceiveCopy: {sas: []opEntry{
		{usage: u(0x84, rcrCopyStatus, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), plan: planReceiveCopy, exec: execReceiveCopy},
		{usage: u(0x84, rcrOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), plan: planReceiveCopy, exec: execReceiveCopy},
	}},
	// Reservations (pr*.go, reserve.go).
	OpReserve6:             {usage: reserveUsage(OpReserve6), plan: planNoData, exec: execReserve},
	OpRelease6:             {usage: reserveUsage(OpRelease6), plan: planNoData, exec: execRelease},
	OpReserve10:            {usage: reserveUsage(OpReserve10), plan: planNoData, exec: execReserve},
	OpRelease10:            {usage: reserveUsage(OpRelease10), plan: planNoData, exec: execRelease},
	OpPersistentReserveIn:  {sas: prinSAs},
	OpPersistentReserveOut: {sas: proutSAs},

	OpRead16:           {usage: u16(0x88, 0xFE, 0x3F), flags: flagMedium | flagQuick, plan: planRead, exec: execRead},
	OpCompareAndWrite:  {usage: u(0x89, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x3F, 0), flags: flagMedium | flagWrite, plan: planCompareAndWrite, exec: execCompareAndWrite},
	OpWrite16:          {usage: u16(0x8A, 0xFA, 0x3F), flags: flagMedium | flagWrite | flagQuick, plan: planWrite, exec: execWrite},
	OpORWrite16:        {usage: u16(0x8B, 0xFA, 0x3F), flags: flagMedium | flagWrite, plan: planORWrite, exec: execORWrite},
	OpWriteAndVerify16: {usage: u16(0x8E, 0xF6, 0x3F), flags: flagMedium | flagWrite, plan: planWriteAndVerify, exec: execWriteAndVerify},
	OpVerify16:         {usage: u16(0x8F, 0xF6, 0x3F), flags: flagMedium, plan: planVerify, exec: execVerify},
	OpPreFetch16:       {usage: u16(0x90, 0x02, 0x3F), flags: flagMedium, plan: planPreFetch},
	OpSyncCache16:      {usage: u16(0x91, 0x06, 0x3F), flags: flagMedium, plan: planSyncCache, exec: execSyncCache},
	OpWriteSame16:      {usage: u16(0x93, 0xF9, 0x3F), flags: flagMedium | flagWrite, plan: planWriteSame, exec: execWriteSame},
	OpWriteAtomic16:    {usage: u(0x9C, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0), flags: flagMedium | flagWrite, plan: planWriteAtomic, exec: execWriteAtomic},
	OpServiceActionIn: {sas: []opEntry{
		{usage: u(0x9E, SAReadCapacity16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0), flags: flagMedium, plan: planReadCapacity16, exec: execReadCapacity16},
		{usage: u(0x9E, SAGetLBAStatus, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), flags: flagMedium, plan: planGetLBAStatus, exec: execGetLBAStatus},
	}},

	OpReportLUNs: {usage: u(0xA0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), flags: flagNoUA | flagNoLU, plan: planReportLUNs, exec: execReportLUNs},
	OpMaintenanceIn: {sas: []opEntry{
		{usage: u(0xA3, SAReportSupportedOpcodes, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), plan: planRSOC, exec: execRSOC},
		{usage: u(0xA3, SAReportSupportedTMFs, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), plan: planRSTMF, exec: execRSTMF},
	}},
	OpRead12:           {usage: u12(0xA8, 0xFE), flags: flagMedium | flagQuick, plan: planRead, exec: execRead},
	OpWrite12:          {usage: u12(0xAA, 0xFA), flags: flagMedium | flagWrite | flagQuick, plan: planWrite, exec: execWrite},
	OpWriteAndVerify12: {usage: u12(0xAE, 0xF6), flags: flagMedium | flagWrite, plan: planWriteAndVerify, exec: execWriteAndVerify},
	OpVerify12:         {usage: u12(0xAF, 0xF6), flags: flagMedium, plan: planVerify, exec: execVerify},
	OpReadDefectData12: {usage: u(0xB7, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), flags: flagMedium, plan: planReadDefectData, exec: execReadDefectData},
}

func u(b ...byte) []byte { return b }

// u12 is the usage map of a 12-byte block command: LBA in bytes 2-5,
// length in bytes 6-9, GROUP NUMBER in byte 10 (SBC-4 §5.x).
func u12(op, b1 byte) []byte {
	return []byte{op, b1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0}
}

// u16 is the usage map of a 16-byte block command: LBA in bytes 2-9,
// length in bytes 10-13 and the group byte 14.
func u16(op, b1, b14 byte) []byte {
	return []byte{op, b1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, b14, 0}
}

// lookupOp finds the entry for a CDB, following the service action of
// SERVICE ACTION IN and MAINTENANCE IN. A service action we do not
// implement is an invalid field at byte 1 (SPC-4 §4.3.3); libiscsi and
// Linux read that as "not implemented".
func lookupOp(ops *[256]opEntry, cdb []byte) (*opEntry, error) {
	e := &ops[cdb[0]]
	if e.sas != nil {
		if len(cdb) < 2 {
			return nil, invalidCDB(1, 4)
		}
		sa := cdb[1] & saMask
		for i := range e.sas {
			if e.sas[i].usage[1]&saMask == sa {
				return &e.sas[i], nil
			}
		}
		return nil, invalidCDB(1, 4)
	}
	if e.plan == nil {
		return nil, ErrInvalidOpcode
	}
	return e, nil
}

// hasSA reports whether the entry is a service action of its opcode.
func (e *opEntry) hasSA() bool {
	switch OpCode(e.usage[0]) {
	case OpServiceActionIn, OpMaintenanceIn, OpPersistentReserveIn, OpPersistentReserveOut, OpSanitize, OpReceiveCopy:
		return true
	}
	return false
}

// checkUsage rejects CDB bits outside the usage map, including the
// control byte (NACA and LINK are not supported: SAM-5 §5.2). The CDB
// must be at least as long as the usage map.
func (e *opEntry) checkUsage(cdb []byte) error {
	n := len(e.usage)
	if len(cdb) < n {
		return invalidCDB(len(cdb), -1)
	}
	for i := 1; i < n; i++ {
		mask := e.usage[i]
		if i == 1 && e.hasSA() {
			mask |= saMask
		}
		if bad := cdb[i] &^ mask; bad != 0 {
			bit := 7
			for bad&0x80 == 0 {
				bad <<= 1
				bit--
			}
			return invalidCDB(i, bit)
		}
	}
	return nil
}

// supportedOn reports whether the command is available on lu (REPORT
// SUPPORTED OPERATION CODES lists only those).
func (e *opEntry) supportedOn(lu *LU) bool {
	return e.flags&flagThin == 0 || (lu != nil && lu.thin)
}
