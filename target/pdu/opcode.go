package pdu

import "fmt"

// Opcode is the 6-bit operation code in byte 0 of the BHS (RFC 7143 §11.2.1.2).
type Opcode uint8

// Initiator opcodes (RFC 7143 §11.2.1.2).
const (
	OpNOPOut          Opcode = 0x00
	OpSCSICommand     Opcode = 0x01
	OpTaskMgmtRequest Opcode = 0x02
	OpLoginRequest    Opcode = 0x03
	OpTextRequest     Opcode = 0x04
	OpDataOut         Opcode = 0x05
	OpLogoutRequest   Opcode = 0x06
	OpSNACKRequest    Opcode = 0x10
)

// Target opcodes (RFC 7143 §11.2.1.2).
const (
	OpNOPIn            Opcode = 0x20
	OpSCSIResponse     Opcode = 0x21
	OpTaskMgmtResponse Opcode = 0x22
	OpLoginResponse    Opcode = 0x23
	OpTextResponse     Opcode = 0x24
	OpDataIn           Opcode = 0x25
	OpLogoutResponse   Opcode = 0x26
	OpR2T              Opcode = 0x31
	OpAsyncMessage     Opcode = 0x32
	OpReject           Opcode = 0x3f
)

var opcodeNames = [64]string{
	OpNOPOut:           "NOP-Out",
	OpSCSICommand:      "SCSI Command",
	OpTaskMgmtRequest:  "Task Management Function Request",
	OpLoginRequest:     "Login Request",
	OpTextRequest:      "Text Request",
	OpDataOut:          "SCSI Data-Out",
	OpLogoutRequest:    "Logout Request",
	OpSNACKRequest:     "SNACK Request",
	OpNOPIn:            "NOP-In",
	OpSCSIResponse:     "SCSI Response",
	OpTaskMgmtResponse: "Task Management Function Response",
	OpLoginResponse:    "Login Response",
	OpTextResponse:     "Text Response",
	OpDataIn:           "SCSI Data-In",
	OpLogoutResponse:   "Logout Response",
	OpR2T:              "Ready To Transfer",
	OpAsyncMessage:     "Asynchronous Message",
	OpReject:           "Reject",
}

// String returns the RFC 7143 name of the opcode.
func (o Opcode) String() string {
	if int(o) < len(opcodeNames) && opcodeNames[o] != "" {
		return opcodeNames[o]
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// Label is a short, bounded identifier for metrics and logs: one of a closed
// set, with every unknown opcode mapped to "other".
func (o Opcode) Label() string {
	switch o {
	case OpNOPOut:
		return "nop_out"
	case OpSCSICommand:
		return "scsi_command"
	case OpTaskMgmtRequest:
		return "task_mgmt"
	case OpLoginRequest:
		return "login"
	case OpTextRequest:
		return "text"
	case OpDataOut:
		return "data_out"
	case OpLogoutRequest:
		return "logout"
	case OpSNACKRequest:
		return "snack"
	}
	return "other"
}

// IsInitiatorOpcode reports whether an initiator may send o (RFC 7143 §11.2.1.2).
// Vendor-specific codes 0x1c-0x1e are not accepted by this target.
func (o Opcode) IsInitiatorOpcode() bool {
	switch o {
	case OpNOPOut, OpSCSICommand, OpTaskMgmtRequest, OpLoginRequest,
		OpTextRequest, OpDataOut, OpLogoutRequest, OpSNACKRequest:
		return true
	}
	return false
}
