package scsi

import "encoding/binary"

// This file decodes CDBs into typed structs. Decoders run after
// opEntry.checkUsage, so the CDB is long enough and carries no bit outside
// the usage map; they extract fields and never index raw bytes again.

var be = binary.BigEndian

// blockCDB is every SBC command that addresses a range of logical blocks:
// READ, WRITE, VERIFY, WRITE AND VERIFY, ORWRITE, COMPARE AND WRITE,
// PRE-FETCH, SYNCHRONIZE CACHE and WRITE SAME (SBC-4 §5).
type blockCDB struct {
	LBA    uint64
	Blocks uint32
	// Protect is RDPROTECT, WRPROTECT, VRPROTECT or ORPROTECT (byte 1 bits
	// 7:5); this device server has no protection information, so any
	// non-zero value is an invalid field (SBC-4 §4.22.2).
	Protect uint8
	DPO     bool
	FUA     bool
	ByteChk uint8 // BYTCHK of VERIFY and WRITE AND VERIFY (byte 1 bits 2:1)
	Immed   bool  // SYNCHRONIZE CACHE, PRE-FETCH
	Anchor  bool  // WRITE SAME
	Unmap   bool  // WRITE SAME
	NDOB    bool  // WRITE SAME(16): no Data-Out buffer
	// Boundary is the ATOMIC BOUNDARY of WRITE ATOMIC(16).
	Boundary uint16
}

// decodeBlock decodes a block command. The transfer length of READ(6) and
// WRITE(6) is 256 when the CDB says 0 (SBC-4 §5.15, §5.41).
func decodeBlock(cdb []byte) blockCDB {
	var b blockCDB
	op := OpCode(cdb[0])
	switch op {
	case OpRead6, OpWrite6:
		b.LBA = uint64(cdb[1]&0x1F)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		b.Blocks = uint32(cdb[4])
		if b.Blocks == 0 {
			b.Blocks = 256
		}
		return b
	case OpCompareAndWrite:
		b.LBA = be.Uint64(cdb[2:10])
		b.Blocks = uint32(cdb[13])
	case OpWriteAtomic16:
		b.LBA = be.Uint64(cdb[2:10])
		b.Boundary = be.Uint16(cdb[10:12])
		b.Blocks = uint32(be.Uint16(cdb[12:14]))
	default:
		switch cdbLen(op) {
		case 10:
			b.LBA = uint64(be.Uint32(cdb[2:6]))
			b.Blocks = uint32(be.Uint16(cdb[7:9]))
		case 12:
			b.LBA = uint64(be.Uint32(cdb[2:6]))
			b.Blocks = be.Uint32(cdb[6:10])
		case 16:
			b.LBA = be.Uint64(cdb[2:10])
			b.Blocks = be.Uint32(cdb[10:14])
		}
	}
	f := cdb[1]
	switch op {
	case OpSyncCache10, OpSyncCache16, OpPreFetch10, OpPreFetch16:
		b.Immed = f&0x02 != 0
		return b
	case OpWriteSame10, OpWriteSame16:
		b.Anchor = f&0x10 != 0
		b.Unmap = f&0x08 != 0
		b.NDOB = op == OpWriteSame16 && f&0x01 != 0
	case OpVerify10, OpVerify12, OpVerify16, OpWriteAndVerify10, OpWriteAndVerify12, OpWriteAndVerify16:
		b.DPO = f&0x10 != 0
		b.ByteChk = f >> 1 & 0x03
	default:
		b.DPO = f&0x10 != 0
		b.FUA = f&0x08 != 0
	}
	b.Protect = f >> 5
	return b
}

// cdbLen is the CDB length implied by the operation code group (SPC-4
// §4.3.2): group 0 is 6 bytes, groups 1-2 are 10, group 4 is 16 and
// group 5 is 12. Groups 3, 6 and 7 have no fixed length here (0).
func cdbLen(op OpCode) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// inquiryCDB is INQUIRY (SPC-4 §6.6.1).
type inquiryCDB struct {
	EVPD     bool
	Page     uint8
	AllocLen uint16
}

func decodeInquiry(cdb []byte) inquiryCDB {
	return inquiryCDB{EVPD: cdb[1]&0x01 != 0, Page: cdb[2], AllocLen: be.Uint16(cdb[3:5])}
}

// modeSenseCDB is MODE SENSE(6) and (10) (SPC-4 §6.13, §6.14).
type modeSenseCDB struct {
	Ten      bool  // MODE SENSE(10)
	DBD      bool  // disable block descriptors
	LLBAA    bool  // long LBA block descriptor accepted (10 only)
	PC       uint8 // page control: current, changeable, default, saved
	Page     uint8
	Subpage  uint8
	AllocLen uint16
}

func decodeModeSense(cdb []byte) modeSenseCDB {
	m := modeSenseCDB{
		Ten:     OpCode(cdb[0]) == OpModeSense10,
		DBD:     cdb[1]&0x08 != 0,
		PC:      cdb[2] >> 6,
		Page:    cdb[2] & 0x3F,
		Subpage: cdb[3],
	}
	if m.Ten {
		m.LLBAA = cdb[1]&0x10 != 0
		m.AllocLen = be.Uint16(cdb[7:9])
	} else {
		m.AllocLen = uint16(cdb[4])
	}
	return m
}

// modeSelectCDB is MODE SELECT(6) and (10) (SPC-4 §6.11, §6.12).
type modeSelectCDB struct {
	Ten      bool
	PF       bool // page format
	SP       bool // save pages
	ParamLen uint16
}

func decodeModeSelect(cdb []byte) modeSelectCDB {
	m := modeSelectCDB{Ten: OpCode(cdb[0]) == OpModeSelect10, PF: cdb[1]&0x10 != 0, SP: cdb[1]&0x01 != 0}
	if m.Ten {
		m.ParamLen = be.Uint16(cdb[7:9])
	} else {
		m.ParamLen = uint16(cdb[4])
	}
	return m
}

// reportLUNsCDB is REPORT LUNS (SPC-4 §6.33).
type reportLUNsCDB struct {
	Select   uint8
	AllocLen uint32
}

func decodeReportLUNs(cdb []byte) reportLUNsCDB {
	return reportLUNsCDB{Select: cdb[2], AllocLen: be.Uint32(cdb[6:10])}
}

// rsocCDB is REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
type rsocCDB struct {
	RCTD     bool  // return command timeouts descriptor
	Options  uint8 // REPORTING OPTIONS
	Opcode   uint8 // REQUESTED OPERATION CODE
	SA       uint16
	AllocLen uint32
}

func decodeRSOC(cdb []byte) rsocCDB {
	return rsocCDB{
		RCTD:     cdb[2]&0x80 != 0,
		Options:  cdb[2] & 0x07,
		Opcode:   cdb[3],
		SA:       be.Uint16(cdb[4:6]),
		AllocLen: be.Uint32(cdb[6:10]),
	}
}

// rstmfCDB is REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36).
type rstmfCDB struct {
	REPD     bool // return extended parameter data
	AllocLen uint32
}

func decodeRSTMF(cdb []byte) rstmfCDB {
	return rstmfCDB{REPD: cdb[2]&0x80 != 0, AllocLen: be.Uint32(cdb[6:10])}
}

// readCapCDB is READ CAPACITY(10) and (16) (SBC-4 §5.16, §5.17). LBA and
// PMI are obsolete in SBC-4; SBC-3 requires LBA zero when PMI is zero.
type readCapCDB struct {
	LBA      uint64
	PMI      bool
	AllocLen uint32 // READ CAPACITY(16) only
}

func decodeReadCapacity(cdb []byte) readCapCDB {
	if OpCode(cdb[0]) == OpReadCapacity10 {
		return readCapCDB{LBA: uint64(be.Uint32(cdb[2:6])), PMI: cdb[8]&0x01 != 0}
	}
	return readCapCDB{LBA: be.Uint64(cdb[2:10]), AllocLen: be.Uint32(cdb[10:14]), PMI: cdb[14]&0x01 != 0}
}

// lbaStatusCDB is GET LBA STATUS (SBC-4 §5.7).
type lbaStatusCDB struct {
	LBA      uint64
	AllocLen uint32
}

func decodeLBAStatus(cdb []byte) lbaStatusCDB {
	return lbaStatusCDB{LBA: be.Uint64(cdb[2:10]), AllocLen: be.Uint32(cdb[10:14])}
}

// startStopCDB is START STOP UNIT (SBC-4 §5.25).
type startStopCDB struct {
	Immed     bool
	PCM       uint8 // POWER CONDITION MODIFIER
	PowerCond uint8 // POWER CONDITION
	NoFlush   bool
	LoEj      bool
	Start     bool
}

func decodeStartStop(cdb []byte) startStopCDB {
	return startStopCDB{
		Immed:     cdb[1]&0x01 != 0,
		PCM:       cdb[3] & 0x0F,
		PowerCond: cdb[4] >> 4,
		NoFlush:   cdb[4]&0x04 != 0,
		LoEj:      cdb[4]&0x02 != 0,
		Start:     cdb[4]&0x01 != 0,
	}
}

// preventCDB is PREVENT ALLOW MEDIUM REMOVAL (SBC-4 §5.11).
type preventCDB struct {
	Prevent uint8
}

func decodePrevent(cdb []byte) preventCDB { return preventCDB{Prevent: cdb[4] & 0x03} }

// requestSenseCDB is REQUEST SENSE (SPC-4 §6.39).
type requestSenseCDB struct {
	Desc     bool
	AllocLen uint8
}

func decodeRequestSense(cdb []byte) requestSenseCDB {
	return requestSenseCDB{Desc: cdb[1]&0x01 != 0, AllocLen: cdb[4]}
}

// unmapCDB is UNMAP (SBC-4 §5.30).
type unmapCDB struct {
	Anchor   bool
	ParamLen uint16
}

func decodeUnmap(cdb []byte) unmapCDB {
	return unmapCDB{Anchor: cdb[1]&0x01 != 0, ParamLen: be.Uint16(cdb[7:9])}
}

// defectCDB is READ DEFECT DATA(10) and (12) (SBC-4 §5.19, §5.20).
type defectCDB struct {
	Twelve   bool
	PList    bool
	GList    bool
	Format   uint8
	AllocLen uint32
}

func decodeDefect(cdb []byte) defectCDB {
	if OpCode(cdb[0]) == OpReadDefectData10 {
		return defectCDB{PList: cdb[2]&0x10 != 0, GList: cdb[2]&0x08 != 0, Format: cdb[2] & 0x07,
			AllocLen: uint32(be.Uint16(cdb[7:9]))}
	}
	return defectCDB{Twelve: true, PList: cdb[1]&0x10 != 0, GList: cdb[1]&0x08 != 0, Format: cdb[1] & 0x07,
		AllocLen: be.Uint32(cdb[6:10])}
}
