package pdu

import "fmt"

// The target-to-initiator PDUs (RFC 7143 §11.4-§11.17). StatSN, ExpCmdSN and
// MaxCmdSN are filled in by the connection's transmitter at send time; the
// other fields by whoever builds the response.

// SN carries the sequence numbers every target PDU reports.
type SN struct {
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

func (s *SN) marshal(h *BHS) {
	h.setU32(24, s.StatSN)
	h.setU32(28, s.ExpCmdSN)
	h.setU32(32, s.MaxCmdSN)
}

func (s *SN) unmarshal(h *BHS) {
	s.StatSN = h.u32(24)
	s.ExpCmdSN = h.u32(28)
	s.MaxCmdSN = h.u32(32)
}

// SetSN overwrites StatSN, ExpCmdSN and MaxCmdSN in an encoded target PDU. The
// transmitter uses it so sequence numbers are assigned in send order.
func (h *BHS) SetSN(statSN, expCmdSN, maxCmdSN uint32) {
	h.setU32(24, statSN)
	h.setU32(28, expCmdSN)
	h.setU32(32, maxCmdSN)
}

// SetWindow overwrites only ExpCmdSN and MaxCmdSN (for PDUs whose StatSN is
// not advanced, such as R2T or an unsolicited NOP-In).
func (h *BHS) SetWindow(expCmdSN, maxCmdSN uint32) {
	h.setU32(28, expCmdSN)
	h.setU32(32, maxCmdSN)
}

// Residual flags shared by SCSI Response and Data-In.
const (
	flagBidiOverflow  = 0x10
	flagBidiUnderflow = 0x08
	flagOverflow      = 0x04
	flagUnderflow     = 0x02
	flagDataInAck     = 0x40
	flagDataInStatus  = 0x01
)

// SCSI Response codes (RFC 7143 §11.4.3).
const (
	RespCommandCompleted = 0x00
	RespTargetFailure    = 0x01
)

// SCSIResponse is the SCSI Response PDU (RFC 7143 §11.4). Sense data travels
// in the data segment, preceded by its 2-byte length (§11.4.7).
type SCSIResponse struct {
	BidiOverflow     bool
	BidiUnderflow    bool
	Overflow         bool
	Underflow        bool
	Response         uint8
	Status           uint8
	InitiatorTaskTag uint32
	SNACKTag         uint32
	SN               SN
	ExpDataSN        uint32
	BidiReadResidual uint32
	ResidualCount    uint32
}

// Marshal encodes r into h.
func (r *SCSIResponse) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpSCSIResponse, false)
	h[1] = flagFinal | boolBit(r.BidiOverflow, flagBidiOverflow) |
		boolBit(r.BidiUnderflow, flagBidiUnderflow) |
		boolBit(r.Overflow, flagOverflow) | boolBit(r.Underflow, flagUnderflow)
	h[2] = r.Response
	h[3] = r.Status
	h.setU32(16, r.InitiatorTaskTag)
	h.setU32(20, r.SNACKTag)
	r.SN.marshal(h)
	h.setU32(36, r.ExpDataSN)
	h.setU32(40, r.BidiReadResidual)
	h.setU32(44, r.ResidualCount)
}

// Unmarshal decodes h into r.
func (r *SCSIResponse) Unmarshal(h *BHS) error {
	if h.Opcode() != OpSCSIResponse {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	r.BidiOverflow = h[1]&flagBidiOverflow != 0
	r.BidiUnderflow = h[1]&flagBidiUnderflow != 0
	r.Overflow = h[1]&flagOverflow != 0
	r.Underflow = h[1]&flagUnderflow != 0
	r.Response = h[2]
	r.Status = h[3]
	r.InitiatorTaskTag = h.u32(16)
	r.SNACKTag = h.u32(20)
	r.SN.unmarshal(h)
	r.ExpDataSN = h.u32(36)
	r.BidiReadResidual = h.u32(40)
	r.ResidualCount = h.u32(44)
	return nil
}

// DataIn is the SCSI Data-In PDU (RFC 7143 §11.7). With HasStatus set it
// carries the command's status as well (phase collapse, §11.7.4).
type DataIn struct {
	Final             bool
	Acknowledge       bool
	Overflow          bool
	Underflow         bool
	HasStatus         bool
	Status            uint8
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	SN                SN
	DataSN            uint32
	BufferOffset      uint32
	ResidualCount     uint32
}

// Marshal encodes d into h.
func (d *DataIn) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpDataIn, false)
	h[1] = boolBit(d.Final, flagFinal) | boolBit(d.Acknowledge, flagDataInAck) |
		boolBit(d.Overflow, flagOverflow) | boolBit(d.Underflow, flagUnderflow) |
		boolBit(d.HasStatus, flagDataInStatus)
	if d.HasStatus {
		h[3] = d.Status
	}
	h.setU64(8, d.LUN)
	h.setU32(16, d.InitiatorTaskTag)
	h.setU32(20, d.TargetTransferTag)
	d.SN.marshal(h)
	h.setU32(36, d.DataSN)
	h.setU32(40, d.BufferOffset)
	h.setU32(44, d.ResidualCount)
}

// Unmarshal decodes h into d.
func (d *DataIn) Unmarshal(h *BHS) error {
	if h.Opcode() != OpDataIn {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	d.Final = h[1]&flagFinal != 0
	d.Acknowledge = h[1]&flagDataInAck != 0
	d.Overflow = h[1]&flagOverflow != 0
	d.Underflow = h[1]&flagUnderflow != 0
	d.HasStatus = h[1]&flagDataInStatus != 0
	d.Status = h[3]
	d.LUN = h.u64(8)
	d.InitiatorTaskTag = h.u32(16)
	d.TargetTransferTag = h.u32(20)
	d.SN.unmarshal(h)
	d.DataSN = h.u32(36)
	d.BufferOffset = h.u32(40)
	d.ResidualCount = h.u32(44)
	return nil
}

// R2T is the Ready To Transfer PDU (RFC 7143 §11.8).
type R2T struct {
	LUN                       uint64
	InitiatorTaskTag          uint32
	TargetTransferTag         uint32
	SN                        SN
	R2TSN                     uint32
	BufferOffset              uint32
	DesiredDataTransferLength uint32
}

// Marshal encodes r into h.
func (r *R2T) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpR2T, false)
	h[1] = flagFinal
	h.setU64(8, r.LUN)
	h.setU32(16, r.InitiatorTaskTag)
	h.setU32(20, r.TargetTransferTag)
	r.SN.marshal(h)
	h.setU32(36, r.R2TSN)
	h.setU32(40, r.BufferOffset)
	h.setU32(44, r.DesiredDataTransferLength)
}

// Unmarshal decodes h into r.
func (r *R2T) Unmarshal(h *BHS) error {
	if h.Opcode() != OpR2T {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	r.LUN = h.u64(8)
	r.InitiatorTaskTag = h.u32(16)
	r.TargetTransferTag = h.u32(20)
	r.SN.unmarshal(h)
	r.R2TSN = h.u32(36)
	r.BufferOffset = h.u32(40)
	r.DesiredDataTransferLength = h.u32(44)
	return nil
}

// NOPIn is the NOP-In PDU (RFC 7143 §11.19).
type NOPIn struct {
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	SN                SN
}

// Marshal encodes n into h.
func (n *NOPIn) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpNOPIn, false)
	h[1] = flagFinal
	h.setU64(8, n.LUN)
	h.setU32(16, n.InitiatorTaskTag)
	h.setU32(20, n.TargetTransferTag)
	n.SN.marshal(h)
}

// Unmarshal decodes h into n.
func (n *NOPIn) Unmarshal(h *BHS) error {
	if h.Opcode() != OpNOPIn {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	n.LUN = h.u64(8)
	n.InitiatorTaskTag = h.u32(16)
	n.TargetTransferTag = h.u32(20)
	n.SN.unmarshal(h)
	return nil
}

// TMF response codes (RFC 7143 §11.6.1).
const (
	TMFRespComplete          = 0
	TMFRespNoTask            = 1
	TMFRespNoLUN             = 2
	TMFRespTaskAllegiant     = 3
	TMFRespReassignNotSupp   = 4
	TMFRespNotSupported      = 5
	TMFRespAuthorizationFail = 6
	TMFRespRejected          = 255
)

// TaskMgmtResponse is the Task Management Function Response PDU (RFC 7143 §11.6).
type TaskMgmtResponse struct {
	Response         uint8
	InitiatorTaskTag uint32
	SN               SN
}

// Marshal encodes t into h.
func (t *TaskMgmtResponse) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpTaskMgmtResponse, false)
	h[1] = flagFinal
	h[2] = t.Response
	h.setU32(16, t.InitiatorTaskTag)
	t.SN.marshal(h)
}

// Unmarshal decodes h into t.
func (t *TaskMgmtResponse) Unmarshal(h *BHS) error {
	if h.Opcode() != OpTaskMgmtResponse {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	t.Response = h[2]
	t.InitiatorTaskTag = h.u32(16)
	t.SN.unmarshal(h)
	return nil
}

// Login status classes and details (RFC 7143 §11.13.5).
const (
	LoginSuccess              uint16 = 0x0000
	LoginTargetMovedTemp      uint16 = 0x0101
	LoginTargetMovedPerm      uint16 = 0x0102
	LoginInitiatorError       uint16 = 0x0200
	LoginAuthFailure          uint16 = 0x0201
	LoginAuthorizationFailure uint16 = 0x0202
	LoginNotFound             uint16 = 0x0203
	LoginTargetRemoved        uint16 = 0x0204
	LoginUnsupportedVersion   uint16 = 0x0205
	LoginTooManyConnections   uint16 = 0x0206
	LoginMissingParameter     uint16 = 0x0207
	LoginCantIncludeInSession uint16 = 0x0208
	LoginSessionTypeNotSupp   uint16 = 0x0209
	LoginSessionNotExist      uint16 = 0x020a
	LoginInvalidDuringLogin   uint16 = 0x020b
	LoginTargetError          uint16 = 0x0300
	LoginServiceUnavailable   uint16 = 0x0301
	LoginOutOfResources       uint16 = 0x0302
)

// LoginResponse is the Login Response PDU (RFC 7143 §11.13).
type LoginResponse struct {
	Transit          bool
	Continue         bool
	CSG              uint8
	NSG              uint8
	VersionMax       uint8
	VersionActive    uint8
	ISID             ISID
	TSIH             uint16
	InitiatorTaskTag uint32
	SN               SN
	// Status is StatusClass<<8 | StatusDetail.
	Status uint16
}

// Marshal encodes l into h.
func (l *LoginResponse) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpLoginResponse, false)
	h[1] = boolBit(l.Transit, loginTransit) | boolBit(l.Continue, loginContinue) |
		(l.CSG&loginStageMask)<<loginCSGShift | l.NSG&loginStageMask
	h[2] = l.VersionMax
	h[3] = l.VersionActive
	copy(h[8:14], l.ISID[:])
	h.setU16(14, l.TSIH)
	h.setU32(16, l.InitiatorTaskTag)
	l.SN.marshal(h)
	h[36] = byte(l.Status >> 8)
	h[37] = byte(l.Status)
}

// Unmarshal decodes h into l.
func (l *LoginResponse) Unmarshal(h *BHS) error {
	if h.Opcode() != OpLoginResponse {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	l.Transit = h[1]&loginTransit != 0
	l.Continue = h[1]&loginContinue != 0
	l.CSG = (h[1] >> loginCSGShift) & loginStageMask
	l.NSG = h[1] & loginStageMask
	l.VersionMax = h[2]
	l.VersionActive = h[3]
	copy(l.ISID[:], h[8:14])
	l.TSIH = h.u16(14)
	l.InitiatorTaskTag = h.u32(16)
	l.SN.unmarshal(h)
	l.Status = uint16(h[36])<<8 | uint16(h[37])
	return nil
}

// TextResponse is the Text Response PDU (RFC 7143 §11.11).
type TextResponse struct {
	Final             bool
	Continue          bool
	LUN               uint64
	InitiatorTaskTag  uint32
	TargetTransferTag uint32
	SN                SN
}

// Marshal encodes t into h.
func (t *TextResponse) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpTextResponse, false)
	h[1] = boolBit(t.Final, flagFinal) | boolBit(t.Continue, textContinue)
	h.setU64(8, t.LUN)
	h.setU32(16, t.InitiatorTaskTag)
	h.setU32(20, t.TargetTransferTag)
	t.SN.marshal(h)
}

// Unmarshal decodes h into t.
func (t *TextResponse) Unmarshal(h *BHS) error {
	if h.Opcode() != OpTextResponse {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	t.Final = h[1]&flagFinal != 0
	t.Continue = h[1]&textContinue != 0
	t.LUN = h.u64(8)
	t.InitiatorTaskTag = h.u32(16)
	t.TargetTransferTag = h.u32(20)
	t.SN.unmarshal(h)
	return nil
}

// Logout response codes (RFC 7143 §11.15.1).
const (
	LogoutRespClosed          = 0
	LogoutRespCIDNotFound     = 1
	LogoutRespRecoveryNotSupp = 2
	LogoutRespCleanupFailed   = 3
)

// LogoutResponse is the Logout Response PDU (RFC 7143 §11.15).
type LogoutResponse struct {
	Response         uint8
	InitiatorTaskTag uint32
	SN               SN
	Time2Wait        uint16
	Time2Retain      uint16
}

// Marshal encodes l into h.
func (l *LogoutResponse) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpLogoutResponse, false)
	h[1] = flagFinal
	h[2] = l.Response
	h.setU32(16, l.InitiatorTaskTag)
	l.SN.marshal(h)
	h.setU16(40, l.Time2Wait)
	h.setU16(42, l.Time2Retain)
}

// Unmarshal decodes h into l.
func (l *LogoutResponse) Unmarshal(h *BHS) error {
	if h.Opcode() != OpLogoutResponse {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	l.Response = h[2]
	l.InitiatorTaskTag = h.u32(16)
	l.SN.unmarshal(h)
	l.Time2Wait = h.u16(40)
	l.Time2Retain = h.u16(42)
	return nil
}

// Asynchronous event codes (RFC 7143 §11.9.1).
const (
	AsyncSCSIEvent          = 0
	AsyncRequestLogout      = 1
	AsyncDropConnection     = 2
	AsyncDropAllConnections = 3
	AsyncRequestNegotiation = 4
)

// AsyncMessage is the Asynchronous Message PDU (RFC 7143 §11.9).
type AsyncMessage struct {
	LUN        uint64
	SN         SN
	AsyncEvent uint8
	AsyncVCode uint8
	Parameter1 uint16
	Parameter2 uint16
	Parameter3 uint16
}

// Marshal encodes a into h.
func (a *AsyncMessage) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpAsyncMessage, false)
	h[1] = flagFinal
	h.setU64(8, a.LUN)
	h.setU32(16, ReservedTag)
	a.SN.marshal(h)
	h[36] = a.AsyncEvent
	h[37] = a.AsyncVCode
	h.setU16(38, a.Parameter1)
	h.setU16(40, a.Parameter2)
	h.setU16(42, a.Parameter3)
}

// Unmarshal decodes h into a.
func (a *AsyncMessage) Unmarshal(h *BHS) error {
	if h.Opcode() != OpAsyncMessage {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	a.LUN = h.u64(8)
	a.SN.unmarshal(h)
	a.AsyncEvent = h[36]
	a.AsyncVCode = h[37]
	a.Parameter1 = h.u16(38)
	a.Parameter2 = h.u16(40)
	a.Parameter3 = h.u16(42)
	return nil
}

// RejectReason is the reason code of a Reject PDU (RFC 7143 §11.17.1).
type RejectReason uint8

// Reject reasons.
const (
	RejectDataDigestError     RejectReason = 0x02
	RejectSNACKReject         RejectReason = 0x03
	RejectProtocolError       RejectReason = 0x04
	RejectCommandNotSupported RejectReason = 0x05
	RejectImmediateCmdReject  RejectReason = 0x06
	RejectTaskInProgress      RejectReason = 0x07
	RejectInvalidDataAck      RejectReason = 0x08
	RejectInvalidPDUField     RejectReason = 0x09
	RejectOutOfResources      RejectReason = 0x0a
	RejectWaitingForLogout    RejectReason = 0x0c
)

// String returns the RFC 7143 text for the reason.
func (r RejectReason) String() string {
	switch r {
	case RejectDataDigestError:
		return "data digest error"
	case RejectSNACKReject:
		return "SNACK reject"
	case RejectProtocolError:
		return "protocol error"
	case RejectCommandNotSupported:
		return "command not supported"
	case RejectImmediateCmdReject:
		return "immediate command reject"
	case RejectTaskInProgress:
		return "task in progress"
	case RejectInvalidDataAck:
		return "invalid data ack"
	case RejectInvalidPDUField:
		return "invalid PDU field"
	case RejectOutOfResources:
		return "long operation reject: out of resources"
	case RejectWaitingForLogout:
		return "waiting for logout"
	}
	return fmt.Sprintf("reason 0x%02x", uint8(r))
}

// Reject is the Reject PDU (RFC 7143 §11.17). Its data segment is the
// complete header of the rejected PDU.
type Reject struct {
	Reason RejectReason
	SN     SN
	DataSN uint32
}

// Marshal encodes r into h.
func (r *Reject) Marshal(h *BHS) {
	h.Reset()
	h.setOpcode(OpReject, false)
	h[1] = flagFinal
	h[2] = byte(r.Reason)
	h.setU32(16, ReservedTag)
	r.SN.marshal(h)
	h.setU32(36, r.DataSN)
}

// Unmarshal decodes h into r.
func (r *Reject) Unmarshal(h *BHS) error {
	if h.Opcode() != OpReject {
		return fmt.Errorf("%w: %v", ErrWrongOpcode, h.Opcode())
	}
	r.Reason = RejectReason(h[2])
	r.SN.unmarshal(h)
	r.DataSN = h.u32(36)
	return nil
}
