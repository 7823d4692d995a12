package pdu

import (
	"encoding/hex"
	"fmt"
)

// The initiator-to-target PDUs (RFC 7143 §11.1-§11.16). Each type has
// Unmarshal, which decodes the 48-byte BHS without looking at the data
// segment, and Marshal, which encodes it (the target uses Marshal only in
// tests and in clients that play the initiator).

// TaskAttr is the SCSI task attribute of a SCSI Command (RFC 7143 §11.3.1).
type TaskAttr uint8

// Task attributes.
const (
	AttrUntagged    TaskAttr = 0
	AttrSimple      TaskAttr = 1
	AttrOrdered     TaskAttr = 2
	AttrHeadOfQueue TaskAttr = 3
	AttrACA         TaskAttr = 4
)

// Field masks and offsets private to the codec.
const (
	attrMask         = 0x07
	flagRead         = 0x40
	flagWrite        = 0x20
	maxBHSCDBLen     = 16
	bhsCDBOffset     = 32
	loginTransit     = 0x80
	loginContinue    = 0x40
	textContinue     = 0x40
	tmfFunctionMask  = 0x7f
	logoutReasonMask = 0x7f
	snackTypeMask    = 0x0f
	loginStageMask   = 0x03
	loginCSGShift    = 2
	isidLen          = 6
)

// ISID is the 6-byte initiator part of the session identifier (RFC 7143 §11.12.5).
type ISID [isidLen]byte

// String formats the ISID as 12 hex digits, the form open-iscsi and the
// kernel print.
func (i ISID) String() string { return hex.EncodeToString(i[:]) }

// SCSICommand is the SCSI Command PDU (RFC 7143 §11.3).
type SCSICommand struct {
	Immediate              bool
	Final                  bool // no unsolicited Data-Out follows
	Read                   bool
	Write                  bool
	Attr                   TaskAttr
	LUN                    uint64
	InitiatorTaskTag       uint32
	ExpectedDataTransferLn uint32
	CmdSN                  uint32
	ExpStatSN              uint32
	// CDB holds the first 16 CDB bytes from the BHS. Longer CDBs continue
	// in an Extended CDB AHS; see ParseAHS.
	CDB [maxBHSCDBLen]byte
}

// Unmarshal decodes h into c.
func (c *SCSICommand) Unmarshal(h *BHS) error {
	if h.Opcode() != OpSCSICommand {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	c.Immediate = h.Immediate()
	c.Final = h[1]&flagFinal != 0
	c.Read = h[1]&flagRead != 0
	c.Write = h[1]&flagWrite != 0
	c.Attr = TaskAttr(h[1] & attrMask)
	c.LUN = h.u64(8)
	c.InitiatorTaskTag = h.u32(16)
	c.ExpectedDataTransferLn = h.u32(20)
	c.CmdSN = h.u32(24)
	c.ExpStatSN = h.u32(28)
	copy(c.CDB[:], h[bhsCDBOffset:bhsCDBOffset+maxBHSCDBLen])
	return nil
}

// Marshal encodes c into h. Lengths are set by the framing code.
func (c *SCSICommand) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpSCSICommand, c.Immediate)
	h[1] = boolBit(c.Final, flagFinal) | boolBit(c.Read, flagRead) |
		boolBit(c.Write, flagWrite) | byte(c.Attr)&attrMask
	h.setU64(8, c.LUN)
	h.setU32(16, c.InitiatorTaskTag)
	h.setU32(20, c.ExpectedDataTransferLn)
	h.setU32(24, c.CmdSN)
	h.setU32(28, c.ExpStatSN)
	copy(h[bhsCDBOffset:], c.CDB[:])
}

// DataOut is the SCSI Data-Out PDU (RFC 7143 §11.7).
type DataOut struct {
	Final             bool
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	ExpStatSN         uint32
	DataSN            uint32
	BufferOffset      uint32
}

// Unmarshal decodes h into d.
func (d *DataOut) Unmarshal(h *BHS) error {
	if h.Opcode() != OpDataOut {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	d.Final = h.Final()
	d.LUN = h.u64(8)
	d.InitiatorTaskTag = h.u32(16)
	d.TargetTransferTag = h.u32(20)
	d.ExpStatSN = h.u32(28)
	d.DataSN = h.u32(36)
	d.BufferOffset = h.u32(40)
	return nil
}

// Marshal encodes d into h.
func (d *DataOut) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpDataOut, false)
	h[1] = boolBit(d.Final, flagFinal)
	h.setU64(8, d.LUN)
	h.setU32(16, d.InitiatorTaskTag)
	h.setU32(20, d.TargetTransferTag)
	h.setU32(28, d.ExpStatSN)
	h.setU32(36, d.DataSN)
	h.setU32(40, d.BufferOffset)
}

// NOPOut is the NOP-Out PDU (RFC 7143 §11.18).
type NOPOut struct {
	Immediate         bool
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	CmdSN             uint32
	ExpStatSN         uint32
}

// Unmarshal decodes h into n.
func (n *NOPOut) Unmarshal(h *BHS) error {
	if h.Opcode() != OpNOPOut {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	n.Immediate = h.Immediate()
	n.LUN = h.u64(8)
	n.InitiatorTaskTag = h.u32(16)
	n.TargetTransferTag = h.u32(20)
	n.CmdSN = h.u32(24)
	n.ExpStatSN = h.u32(28)
	return nil
}

// Marshal encodes n into h.
func (n *NOPOut) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpNOPOut, n.Immediate)
	h[1] = flagFinal
	h.setU64(8, n.LUN)
	h.setU32(16, n.InitiatorTaskTag)
	h.setU32(20, n.TargetTransferTag)
	h.setU32(24, n.CmdSN)
	h.setU32(28, n.ExpStatSN)
}

// TMFunction is a task management function code (RFC 7143 §11.5.1).
type TMFunction uint8

// Task management functions.
const (
	TMFAbortTask        TMFunction = 1
	TMFAbortTaskSet     TMFunction = 2
	TMFClearACA         TMFunction = 3
	TMFClearTaskSet     TMFunction = 4
	TMFLogicalUnitReset TMFunction = 5
	TMFTargetWarmReset  TMFunction = 6
	TMFTargetColdReset  TMFunction = 7
	TMFTaskReassign     TMFunction = 8
)

// String returns the SAM name of the function.
func (f TMFunction) String() string {
	switch f {
	case TMFAbortTask:
		return "ABORT TASK"
	case TMFAbortTaskSet:
		return "ABORT TASK SET"
	case TMFClearACA:
		return "CLEAR ACA"
	case TMFClearTaskSet:
		return "CLEAR TASK SET"
	case TMFLogicalUnitReset:
		return "LOGICAL UNIT RESET"
	case TMFTargetWarmReset:
		return "TARGET WARM RESET"
	case TMFTargetColdReset:
		return "TARGET COLD RESET"
	case TMFTaskReassign:
		return "TASK REASSIGN"
	}
	return fmt.Sprintf("function %d", uint8(f))
}

// TaskMgmtRequest is the Task Management Function Request PDU (RFC 7143 §11.5).
type TaskMgmtRequest struct {
	Immediate         bool
	Function          TMFunction
	LUN               uint64
	InitiatorTaskTag  uint32
	ReferencedTaskTag uint32
	CmdSN             uint32
	ExpStatSN         uint32
	RefCmdSN          uint32
	ExpDataSN         uint32
}

// Unmarshal decodes h into t.
func (t *TaskMgmtRequest) Unmarshal(h *BHS) error {
	if h.Opcode() != OpTaskMgmtRequest {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	t.Immediate = h.Immediate()
	t.Function = TMFunction(h[1] & tmfFunctionMask)
	t.LUN = h.u64(8)
	t.InitiatorTaskTag = h.u32(16)
	t.ReferencedTaskTag = h.u32(20)
	t.CmdSN = h.u32(24)
	t.ExpStatSN = h.u32(28)
	t.RefCmdSN = h.u32(32)
	t.ExpDataSN = h.u32(36)
	return nil
}

// Marshal encodes t into h.
func (t *TaskMgmtRequest) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpTaskMgmtRequest, t.Immediate)
	h[1] = flagFinal | byte(t.Function)&tmfFunctionMask
	h.setU64(8, t.LUN)
	h.setU32(16, t.InitiatorTaskTag)
	h.setU32(20, t.ReferencedTaskTag)
	h.setU32(24, t.CmdSN)
	h.setU32(28, t.ExpStatSN)
	h.setU32(32, t.RefCmdSN)
	h.setU32(36, t.ExpDataSN)
}

// Login stages (RFC 7143 §11.12.3).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginRequest is the Login Request PDU (RFC 7143 §11.12).
type LoginRequest struct {
	Transit          bool
	Continue         bool
	CSG              uint8
	NSG              uint8
	VersionMax       uint8
	VersionMin       uint8
	ISID             ISID
	TSIH             uint16
	InitiatorTaskTag uint32
	CID              uint16
	CmdSN            uint32
	ExpStatSN        uint32
}

// Unmarshal decodes h into l.
func (l *LoginRequest) Unmarshal(h *BHS) error {
	if h.Opcode() != OpLoginRequest {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	l.Transit = h[1]&loginTransit != 0
	l.Continue = h[1]&loginContinue != 0
	l.CSG = (h[1] >> loginCSGShift) & loginStageMask
	l.NSG = h[1] & loginStageMask
	l.VersionMax = h[2]
	l.VersionMin = h[3]
	copy(l.ISID[:], h[8:14])
	l.TSIH = h.u16(14)
	l.InitiatorTaskTag = h.u32(16)
	l.CID = h.u16(20)
	l.CmdSN = h.u32(24)
	l.ExpStatSN = h.u32(28)
	return nil
}

// Marshal encodes l into h. Login Requests always carry the I bit.
func (l *LoginRequest) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpLoginRequest, true)
	h[1] = boolBit(l.Transit, loginTransit) | boolBit(l.Continue, loginContinue) |
		(l.CSG&loginStageMask)<<loginCSGShift | l.NSG&loginStageMask
	h[2] = l.VersionMax
	h[3] = l.VersionMin
	copy(h[8:14], l.ISID[:])
	h.setU16(14, l.TSIH)
	h.setU32(16, l.InitiatorTaskTag)
	h.setU16(20, l.CID)
	h.setU32(24, l.CmdSN)
	h.setU32(28, l.ExpStatSN)
}

// TextRequest is the Text Request PDU (RFC 7143 §11.10).
type TextRequest struct {
	Immediate         bool
	Final             bool
	Continue          bool
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	CmdSN             uint32
	ExpStatSN         uint32
}

// Unmarshal decodes h into t.
func (t *TextRequest) Unmarshal(h *BHS) error {
	if h.Opcode() != OpTextRequest {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	t.Immediate = h.Immediate()
	t.Final = h[1]&flagFinal != 0
	t.Continue = h[1]&textContinue != 0
	t.LUN = h.u64(8)
	t.InitiatorTaskTag = h.u32(16)
	t.TargetTransferTag = h.u32(20)
	t.CmdSN = h.u32(24)
	t.ExpStatSN = h.u32(28)
	return nil
}

// Marshal encodes t into h.
func (t *TextRequest) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpTextRequest, t.Immediate)
	h[1] = boolBit(t.Final, flagFinal) | boolBit(t.Continue, textContinue)
	h.setU64(8, t.LUN)
	h.setU32(16, t.InitiatorTaskTag)
	h.setU32(20, t.TargetTransferTag)
	h.setU32(24, t.CmdSN)
	h.setU32(28, t.ExpStatSN)
}

// LogoutReason is the reason code of a Logout Request (RFC 7143 §11.14.1).
type LogoutReason uint8

// Logout reasons.
const (
	LogoutCloseSession    LogoutReason = 0
	LogoutCloseConnection LogoutReason = 1
	LogoutRemoveForRecov  LogoutReason = 2
)

// LogoutRequest is the Logout Request PDU (RFC 7143 §11.14).
type LogoutRequest struct {
	Immediate        bool
	Reason           LogoutReason
	InitiatorTaskTag uint32
	CID              uint16
	CmdSN            uint32
	ExpStatSN        uint32
}

// Unmarshal decodes h into l.
func (l *LogoutRequest) Unmarshal(h *BHS) error {
	if h.Opcode() != OpLogoutRequest {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	l.Immediate = h.Immediate()
	l.Reason = LogoutReason(h[1] & logoutReasonMask)
	l.InitiatorTaskTag = h.u32(16)
	l.CID = h.u16(20)
	l.CmdSN = h.u32(24)
	l.ExpStatSN = h.u32(28)
	return nil
}

// Marshal encodes l into h.
func (l *LogoutRequest) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpLogoutRequest, l.Immediate)
	h[1] = flagFinal | byte(l.Reason)&logoutReasonMask
	h.setU32(16, l.InitiatorTaskTag)
	h.setU16(20, l.CID)
	h.setU32(24, l.CmdSN)
	h.setU32(28, l.ExpStatSN)
}

// SNACKRequest is the SNACK Request PDU (RFC 7143 §11.16). This target runs
// at ErrorRecoveryLevel 0 and answers every SNACK with a Reject; the type is
// decoded so the Reject can be precise.
type SNACKRequest struct {
	Type              uint8
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	ExpStatSN         uint32
	BegRun            uint32
	RunLength         uint32
}

// Unmarshal decodes h into s.
func (s *SNACKRequest) Unmarshal(h *BHS) error {
	if h.Opcode() != OpSNACKRequest {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	s.Type = h[1] & snackTypeMask
	s.LUN = h.u64(8)
	s.InitiatorTaskTag = h.u32(16)
	s.TargetTransferTag = h.u32(20)
	s.ExpStatSN = h.u32(28)
	s.BegRun = h.u32(40)
	s.RunLength = h.u32(44)
	return nil
}

// Marshal encodes s into h.
func (s *SNACKRequest) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpSNACKRequest, false)
	h[1] = flagFinal | s.Type&snackTypeMask
	h.setU64(8, s.LUN)
	h.setU32(16, s.InitiatorTaskTag)
	h.setU32(20, s.TargetTransferTag)
	h.setU32(28, s.ExpStatSN)
	h.setU32(40, s.BegRun)
	h.setU32(44, s.RunLength)
}
