package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// SenseKey is the SENSE KEY field of sense data (SPC-4 §4.5.6, table 48).
type SenseKey uint8

// Sense keys.
const (
	KeyNoSense        SenseKey = 0x0 // NO SENSE
	KeyRecoveredError SenseKey = 0x1 // RECOVERED ERROR
	KeyNotReady       SenseKey = 0x2 // NOT READY
	KeyMediumError    SenseKey = 0x3 // MEDIUM ERROR
	KeyHardwareError  SenseKey = 0x4 // HARDWARE ERROR
	KeyIllegalRequest SenseKey = 0x5 // ILLEGAL REQUEST
	KeyUnitAttention  SenseKey = 0x6 // UNIT ATTENTION
	KeyDataProtect    SenseKey = 0x7 // DATA PROTECT
	KeyCopyAborted    SenseKey = 0xA // COPY ABORTED
	KeyAbortedCommand SenseKey = 0xB // ABORTED COMMAND
	KeyMiscompare     SenseKey = 0xE // MISCOMPARE
)

var senseKeyNames = [16]string{
	KeyNoSense: "NO SENSE", KeyRecoveredError: "RECOVERED ERROR", KeyNotReady: "NOT READY",
	KeyMediumError: "MEDIUM ERROR", KeyHardwareError: "HARDWARE ERROR",
	KeyIllegalRequest: "ILLEGAL REQUEST", KeyUnitAttention: "UNIT ATTENTION",
	KeyDataProtect: "DATA PROTECT", 0x8: "BLANK CHECK", 0x9: "VENDOR SPECIFIC",
	KeyCopyAborted: "COPY ABORTED", KeyAbortedCommand: "ABORTED COMMAND", 0xD: "VOLUME OVERFLOW",
	KeyMiscompare: "MISCOMPARE", 0xF: "COMPLETED",
}

func (k SenseKey) String() string {
	if int(k) < len(senseKeyNames) && senseKeyNames[k] != "" {
		return senseKeyNames[k]
	}
	return fmt.Sprintf("sense key 0x%x", uint8(k))
}

// ASC is an additional sense code and its qualifier, ASC<<8 | ASCQ
// (SPC-4 §4.5.6, table 49).
type ASC uint16

// Additional sense codes used by this device server.
const (
	ASCNoAdditionalSense          ASC = 0x0000 // NO ADDITIONAL SENSE INFORMATION
	ASCWriteError                 ASC = 0x0C00 // WRITE ERROR
	ASCInvalidFieldInIU           ASC = 0x0E03 // INVALID FIELD IN INFORMATION UNIT
	ASCUnrecoveredReadError       ASC = 0x1100 // UNRECOVERED READ ERROR
	ASCParamListLengthError       ASC = 0x1A00 // PARAMETER LIST LENGTH ERROR
	ASCMiscompareDuringVerify     ASC = 0x1D00 // MISCOMPARE DURING VERIFY OPERATION
	ASCInvalidOpcode              ASC = 0x2000 // INVALID COMMAND OPERATION CODE
	ASCLBAOutOfRange              ASC = 0x2100 // LOGICAL BLOCK ADDRESS OUT OF RANGE
	ASCInvalidFieldInCDB          ASC = 0x2400 // INVALID FIELD IN CDB
	ASCLUNotSupported             ASC = 0x2500 // LOGICAL UNIT NOT SUPPORTED
	ASCInvalidFieldInParamList    ASC = 0x2600 // INVALID FIELD IN PARAMETER LIST
	ASCWriteProtected             ASC = 0x2700 // WRITE PROTECTED
	ASCSoftwareWriteProtected     ASC = 0x2702 // SOFTWARE WRITE PROTECTED
	ASCSpaceAllocFailedWP         ASC = 0x2707 // SPACE ALLOCATION FAILED WRITE PROTECT
	ASCNotReadyToReadyChange      ASC = 0x2800 // NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED
	ASCPowerOnResetOccurred       ASC = 0x2900 // POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
	ASCPowerOnOccurred            ASC = 0x2901 // POWER ON OCCURRED
	ASCSCSIBusResetOccurred       ASC = 0x2902 // SCSI BUS RESET OCCURRED
	ASCBusDeviceResetOccurred     ASC = 0x2903 // BUS DEVICE RESET FUNCTION OCCURRED
	ASCModeParametersChanged      ASC = 0x2A01 // MODE PARAMETERS CHANGED
	ASCCapacityDataChanged        ASC = 0x2A09 // CAPACITY DATA HAS CHANGED
	ASCSavingParamsNotSupported   ASC = 0x3900 // SAVING PARAMETERS NOT SUPPORTED
	ASCMediumNotPresent           ASC = 0x3A00 // MEDIUM NOT PRESENT
	ASCInternalTargetFailure      ASC = 0x4400 // INTERNAL TARGET FAILURE
	ASCMediumRemovalPrevented     ASC = 0x5302 // MEDIUM REMOVAL PREVENTED
	ASCReportedLUNsDataChanged    ASC = 0x3F0E // REPORTED LUNS DATA HAS CHANGED
	ASCCommandsClearedByAnotherIT ASC = 0x2F00 // COMMANDS CLEARED BY ANOTHER INITIATOR
	ASCOperationInProgress        ASC = 0x0016 // OPERATION IN PROGRESS
	ASCSanitizeInProgress         ASC = 0x041B // LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS
	ASCCopyTargetNotReachable     ASC = 0x0D02 // COPY TARGET DEVICE NOT REACHABLE
	ASCTooManyTargetDescs         ASC = 0x2606 // TOO MANY TARGET DESCRIPTORS
	ASCUnsupportedTargetDesc      ASC = 0x2607 // UNSUPPORTED TARGET DESCRIPTOR TYPE CODE
	ASCTooManySegmentDescs        ASC = 0x2608 // TOO MANY SEGMENT DESCRIPTORS
	ASCUnsupportedSegmentDesc     ASC = 0x2609 // UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
	ASCSanitizeCommandFailed      ASC = 0x3103 // SANITIZE COMMAND FAILED
	ASCSoftThresholdReached       ASC = 0x3807 // THIN PROVISIONING SOFT THRESHOLD REACHED
)

var ascNames = map[ASC]string{
	ASCNoAdditionalSense: "NO ADDITIONAL SENSE INFORMATION", ASCWriteError: "WRITE ERROR",
	ASCInvalidFieldInIU: "INVALID FIELD IN INFORMATION UNIT", ASCUnrecoveredReadError: "UNRECOVERED READ ERROR",
	ASCParamListLengthError: "PARAMETER LIST LENGTH ERROR", ASCMiscompareDuringVerify: "MISCOMPARE DURING VERIFY OPERATION",
	ASCInvalidOpcode: "INVALID COMMAND OPERATION CODE", ASCLBAOutOfRange: "LOGICAL BLOCK ADDRESS OUT OF RANGE",
	ASCInvalidFieldInCDB: "INVALID FIELD IN CDB", ASCLUNotSupported: "LOGICAL UNIT NOT SUPPORTED",
	ASCInvalidFieldInParamList: "INVALID FIELD IN PARAMETER LIST", ASCWriteProtected: "WRITE PROTECTED",
	ASCSoftwareWriteProtected: "SOFTWARE WRITE PROTECTED", ASCSpaceAllocFailedWP: "SPACE ALLOCATION FAILED WRITE PROTECT",
	ASCNotReadyToReadyChange: "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
	ASCPowerOnResetOccurred:  "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED", ASCPowerOnOccurred: "POWER ON OCCURRED",
	ASCSCSIBusResetOccurred: "SCSI BUS RESET OCCURRED", ASCBusDeviceResetOccurred: "BUS DEVICE RESET FUNCTION OCCURRED",
	ASCModeParametersChanged: "MODE PARAMETERS CHANGED", ASCCapacityDataChanged: "CAPACITY DATA HAS CHANGED",
	ASCSavingParamsNotSupported: "SAVING PARAMETERS NOT SUPPORTED", ASCMediumNotPresent: "MEDIUM NOT PRESENT",
	ASCInternalTargetFailure: "INTERNAL TARGET FAILURE", ASCMediumRemovalPrevented: "MEDIUM REMOVAL PREVENTED",
	ASCReportedLUNsDataChanged: "REPORTED LUNS DATA HAS CHANGED", ASCCommandsClearedByAnotherIT: "COMMANDS CLEARED BY ANOTHER INITIATOR",
	ASCOperationInProgress: "OPERATION IN PROGRESS", ASCSanitizeInProgress: "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS",
	ASCCopyTargetNotReachable: "COPY TARGET DEVICE NOT REACHABLE", ASCTooManyTargetDescs: "TOO MANY TARGET DESCRIPTORS",
	ASCUnsupportedTargetDesc: "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE", ASCTooManySegmentDescs: "TOO MANY SEGMENT DESCRIPTORS",
	ASCUnsupportedSegmentDesc: "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE", ASCSanitizeCommandFailed: "SANITIZE COMMAND FAILED",
	ASCSoftThresholdReached: "THIN PROVISIONING SOFT THRESHOLD REACHED",
	ASCInvalidReleaseOfPR:   "INVALID RELEASE OF PERSISTENT RESERVATION", ASCReservationsPreempted: "RESERVATIONS PREEMPTED",
	ASCReservationsReleased: "RESERVATIONS RELEASED", ASCRegistrationsPreempted: "REGISTRATIONS PREEMPTED",
}

func (a ASC) String() string {
	if s, ok := ascNames[a]; ok {
		return s
	}
	return fmt.Sprintf("ASC 0x%02x/0x%02x", uint8(a>>8), uint8(a))
}

// Sense is a CHECK CONDITION outcome: it is returned as an error by command
// handlers and encoded once, by the dispatcher, in fixed or descriptor
// format depending on the logical unit's D_SENSE bit (SPC-4 §4.5).
type Sense struct {
	Key SenseKey
	ASC ASC
	// Info is the INFORMATION field (an LBA, or a byte offset for a
	// miscompare); it is reported only when InfoValid is set.
	Info      uint64
	InfoValid bool
	// Field pointer (sense-key specific data, SPC-4 §4.5.2.4.2) for
	// ILLEGAL REQUEST: the byte (and optionally bit) in the CDB or the
	// parameter list that is invalid.
	FieldValid bool
	InCDB      bool // C/D bit: the field is in the CDB, not the parameter list
	FieldByte  uint16
	BitValid   bool
	Bit        uint8
	// Segment makes the field pointer a segment pointer of COPY ABORTED
	// (SD bit): FieldByte is the offset of the segment descriptor in the
	// EXTENDED COPY parameter list (SPC-4 §4.5.2.4.5).
	Segment bool
	// Progress makes the sense key specific data a progress indication
	// (SPC-4 §4.5.2.4.4): FieldByte holds the fraction done out of 65536.
	Progress bool
}

func (s Sense) Error() string {
	msg := fmt.Sprintf("scsi: %s: %s (%02x/%02x)", s.Key, s.ASC, uint8(s.ASC>>8), uint8(s.ASC))
	if s.InfoValid {
		msg += fmt.Sprintf(" info 0x%x", s.Info)
	}
	if s.FieldValid {
		where := "parameter list"
		if s.InCDB {
			where = "CDB"
		}
		msg += fmt.Sprintf(" at %s byte %d", where, s.FieldByte)
		if s.BitValid {
			msg += fmt.Sprintf(" bit %d", s.Bit)
		}
	}
	return msg
}

// withInfo returns s with the INFORMATION field set.
func (s Sense) withInfo(v uint64) Sense {
	s.Info, s.InfoValid = v, true
	return s
}

// Sentinel sense values returned by handlers. They are errors of type Sense
// (use errors.As to inspect them).
var (
	ErrInvalidOpcode          error = Sense{Key: KeyIllegalRequest, ASC: ASCInvalidOpcode}
	ErrLBAOutOfRange          error = Sense{Key: KeyIllegalRequest, ASC: ASCLBAOutOfRange}
	ErrInvalidFieldInCDB      error = Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInCDB}
	ErrInvalidFieldInParams   error = Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInParamList}
	ErrParamListLength        error = Sense{Key: KeyIllegalRequest, ASC: ASCParamListLengthError}
	ErrInvalidFieldInIU       error = Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInIU}
	ErrLUNotSupported         error = Sense{Key: KeyIllegalRequest, ASC: ASCLUNotSupported}
	ErrWriteProtected         error = Sense{Key: KeyDataProtect, ASC: ASCWriteProtected}
	ErrSoftwareWriteProtected error = Sense{Key: KeyDataProtect, ASC: ASCSoftwareWriteProtected}
	ErrSpaceAllocationFailed  error = Sense{Key: KeyDataProtect, ASC: ASCSpaceAllocFailedWP}
	ErrMediumNotPresent       error = Sense{Key: KeyNotReady, ASC: ASCMediumNotPresent}
	ErrMediumRemovalPrevented error = Sense{Key: KeyIllegalRequest, ASC: ASCMediumRemovalPrevented}
	ErrSavingNotSupported     error = Sense{Key: KeyIllegalRequest, ASC: ASCSavingParamsNotSupported}
	ErrInternalTargetFailure  error = Sense{Key: KeyHardwareError, ASC: ASCInternalTargetFailure}
	ErrCommandAborted         error = Sense{Key: KeyAbortedCommand, ASC: ASCNoAdditionalSense}
)

// invalidCDB reports an invalid CDB field with its byte and bit position
// (SPC-4 §4.5.2.4.2). bit < 0 means no bit pointer.
func invalidCDB(byteIdx, bit int) error {
	s := Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInCDB, FieldValid: true, InCDB: true, FieldByte: uint16(byteIdx)}
	if bit >= 0 {
		s.BitValid, s.Bit = true, uint8(bit)
	}
	return s
}

// invalidParam reports an invalid parameter list field.
func invalidParam(byteIdx, bit int) error {
	s := Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInParamList, FieldValid: true, FieldByte: uint16(byteIdx)}
	if bit >= 0 {
		s.BitValid, s.Bit = true, uint8(bit)
	}
	return s
}

// Sense data sizes produced by encode.
const (
	fixedSenseLen = 18 // SPC-4 §4.5.3: additional sense length 10
	descHeaderLen = 8  // SPC-4 §4.5.2.1
	infoDescLen   = 12 // information descriptor, SPC-4 §4.5.2.2
	sksDescLen    = 8  // sense key specific descriptor, SPC-4 §4.5.2.4
)

// encode writes the sense data into dst (at least 32 bytes) and returns
// its length: descriptor format (72h) when desc is set, else fixed (70h).
func (s Sense) encode(dst []byte, desc bool) int {
	var sks [3]byte
	switch {
	case s.Progress:
		sks[0] = 0x80 // SKSV
		binary.BigEndian.PutUint16(sks[1:], s.FieldByte)
	case s.FieldValid && s.Segment:
		sks[0] = 0x80 | 0x20 // SKSV, SD
		if s.BitValid {
			sks[0] |= 0x08 | s.Bit&0x07
		}
		binary.BigEndian.PutUint16(sks[1:], s.FieldByte)
	case s.FieldValid:
		sks[0] = 0x80 // SKSV
		if s.InCDB {
			sks[0] |= 0x40 // C/D
		}
		if s.BitValid {
			sks[0] |= 0x08 | s.Bit&0x07 // BPV + BIT POINTER
		}
		binary.BigEndian.PutUint16(sks[1:], s.FieldByte)
	}
	hasSKS := sks[0] != 0
	if !desc {
		b := dst[:fixedSenseLen]
		clear(b)
		b[0] = 0x70 // current error, fixed format
		if s.InfoValid && s.Info <= 0xFFFFFFFF {
			b[0] |= 0x80 // VALID: INFORMATION holds a value
			binary.BigEndian.PutUint32(b[3:7], uint32(s.Info))
		}
		b[2] = byte(s.Key) & 0x0F
		b[7] = fixedSenseLen - 8
		b[12], b[13] = byte(s.ASC>>8), byte(s.ASC)
		copy(b[15:18], sks[:])
		return fixedSenseLen
	}
	n := descHeaderLen
	clear(dst[:descHeaderLen+infoDescLen+sksDescLen])
	dst[0] = 0x72 // current error, descriptor format
	dst[1] = byte(s.Key) & 0x0F
	dst[2], dst[3] = byte(s.ASC>>8), byte(s.ASC)
	if s.InfoValid {
		d := dst[n : n+infoDescLen]
		d[0], d[1], d[2] = 0x00, infoDescLen-2, 0x80 // type 00h, VALID
		binary.BigEndian.PutUint64(d[4:12], s.Info)
		n += infoDescLen
	}
	if hasSKS {
		d := dst[n : n+sksDescLen]
		d[0], d[1] = 0x02, sksDescLen-2 // type 02h
		copy(d[4:7], sks[:])
		n += sksDescLen
	}
	dst[7] = byte(n - descHeaderLen)
	return n
}

// ioOp says what a backstore call was doing, for the error mapping.
type ioOp uint8

const (
	ioRead ioOp = iota
	ioWrite
	ioFlush
)

// senseFromDevice maps a backstore (or context) error to sense data. It is
// the only place where backstore errors become SCSI outcomes (SBC-4
// §4.15, SPC-4 §4.5.6). lba is reported in INFORMATION for medium errors
// when hasLBA is set. The second result is true for errors that are our
// failure and must be logged at Error level.
func senseFromDevice(err error, op ioOp, lba uint64, hasLBA bool) (Sense, bool) {
	var s Sense
	switch {
	case errors.As(err, &s):
		return s, false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Sense{Key: KeyAbortedCommand, ASC: ASCNoAdditionalSense}, false
	case errors.Is(err, backstore.ErrIO):
		s = Sense{Key: KeyMediumError, ASC: ASCWriteError}
		if op == ioRead {
			s.ASC = ASCUnrecoveredReadError
		}
		if hasLBA {
			s = s.withInfo(lba)
		}
		return s, true
	case errors.Is(err, backstore.ErrNoSpace):
		return Sense{Key: KeyDataProtect, ASC: ASCSpaceAllocFailedWP}, true
	case errors.Is(err, backstore.ErrOutOfRange):
		return Sense{Key: KeyIllegalRequest, ASC: ASCLBAOutOfRange}, false
	case errors.Is(err, backstore.ErrReadOnly):
		return Sense{Key: KeyDataProtect, ASC: ASCWriteProtected}, false
	}
	return Sense{Key: KeyHardwareError, ASC: ASCInternalTargetFailure}, true
}
