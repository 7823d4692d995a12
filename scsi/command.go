// Package scsi is the SCSI device server (SPC-4, SBC-4): it decodes CDBs,
// executes them against a backstore.Device, and produces status and sense
// data. It knows nothing about iSCSI: the target package hands it Commands
// and I_T nexus events, and turns its results into PDUs.
package scsi

import (
	"fmt"
	"sync/atomic"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Status is a SCSI status code (SAM-5 §5.3).
type Status uint8

// SCSI status codes.
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

func (s Status) String() string {
	switch s {
	case StatusGood:
		return "GOOD"
	case StatusCheckCondition:
		return "CHECK CONDITION"
	case StatusConditionMet:
		return "CONDITION MET"
	case StatusBusy:
		return "BUSY"
	case StatusReservationConflict:
		return "RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "TASK SET FULL"
	case StatusACAActive:
		return "ACA ACTIVE"
	case StatusTaskAborted:
		return "TASK ABORTED"
	}
	return fmt.Sprintf("status 0x%02x", uint8(s))
}

// DataDir is the direction of a command's data transfer.
type DataDir uint8

// Data directions.
const (
	DirNone DataDir = iota
	DirIn           // device to initiator (Data-In)
	DirOut          // initiator to device (Data-Out)
)

// TaskAttr is the SAM task attribute.
type TaskAttr uint8

// Task attributes (same values as the iSCSI ATTR field).
const (
	AttrUntagged    TaskAttr = 0
	AttrSimple      TaskAttr = 1
	AttrOrdered     TaskAttr = 2
	AttrHeadOfQueue TaskAttr = 3
	AttrACA         TaskAttr = 4
)

// MaxSenseLen is the largest sense data this device server returns.
const MaxSenseLen = 252

// MaxCDBLen is the longest CDB accepted (SPC-4 variable length CDBs).
const MaxCDBLen = 260

// NexusKey identifies an I_T nexus: the initiator port (iSCSI initiator
// name + ISID) and the target port (target name + portal group tag). It is
// comparable, so it can key maps; unit attentions and reservations hang off
// it (SAM-5 §4.7, RFC 7143 §4.4.1).
type NexusKey struct {
	InitiatorName string
	ISID          [6]byte
	TargetName    string
	TPGT          uint16
}

// InitiatorPortName is the SCSI initiator port name, "<name>,i,0x<isid>"
// (RFC 7143 §4.4.1).
func (k NexusKey) InitiatorPortName() string {
	return fmt.Sprintf("%s,i,0x%x", k.InitiatorName, k.ISID[:])
}

// TargetPortName is the SCSI target port name, "<name>,t,0x<tpgt>".
func (k NexusKey) TargetPortName() string {
	return fmt.Sprintf("%s,t,0x%04x", k.TargetName, k.TPGT)
}

// Nexus is one live I_T nexus (an iSCSI session). The target creates it at
// login and reports its end with Router.NexusLost.
type Nexus struct {
	Key NexusKey
	// RelativeTargetPortID is the relative target port identifier (1-based)
	// reported in VPD page 83h.
	RelativeTargetPortID uint16

	// readOnly is set while the nexus does not hold the single-writer
	// lease: write-class commands then get DATA PROTECT / WRITE PROTECTED.
	readOnly atomic.Bool
}

// SetReadOnly write-protects every LU for this nexus (true) or lifts it
// (false). The target calls it when the single-writer lease changes; it
// takes effect for commands planned afterwards.
func (n *Nexus) SetReadOnly(ro bool) { n.readOnly.Store(ro) }

// ReadOnly reports whether write-class commands are refused on this nexus.
func (n *Nexus) ReadOnly() bool { return n.readOnly.Load() }

// Command is one SCSI task as the transport hands it to the device server.
// The transport owns the struct and reuses it (no allocation per command);
// Reset clears it.
//
// The life cycle:
//
//  1. The transport fills Nexus, LUN, CDB, Attr, Tag and ExpectedLength and
//     calls Router.Plan. Plan resolves the LU, decodes the CDB and checks
//     everything that can be checked before data moves (opcode, CDB
//     fields, LBA range, unit attentions, reservations). If it completes
//     the command (Done() true) the transport sends the status without
//     moving data (any unsolicited data is discarded).
//  2. Otherwise Plan sets Dir and XferLen. For DirOut the transport
//     collects min(XferLen, ExpectedLength) bytes into DataOut; for DirIn
//     it provides DataIn with len >= min(XferLen, ExpectedLength).
//  3. The transport calls Router.Execute. Execute fills Status, Sense and,
//     for DirIn, the final XferLen (the bytes the command transfers by
//     SCSI rules, which may be less than planned, for example INQUIRY
//     data shorter than the allocation length). Data-In is DataIn[:min(
//     XferLen, len(DataIn))].
//  4. The transport computes the iSCSI residual from XferLen and
//     ExpectedLength (RFC 7143 §11.4.5.1): XferLen > ExpectedLength is an
//     overflow, XferLen < ExpectedLength an underflow.
type Command struct {
	// Input from the transport.
	Nexus          *Nexus
	LUN            uint64 // raw 8-byte SAM LUN field
	CDB            []byte // 6 to MaxCDBLen bytes
	Attr           TaskAttr
	Tag            uint32 // initiator task tag, for logs
	ExpectedLength uint32 // the transport's expected data transfer length

	// Output of Plan.
	Dir     DataDir
	XferLen uint32

	// Buffers provided by the transport.
	DataOut []byte
	DataIn  []byte

	// Output of Plan or Execute.
	Status Status
	Sense  [MaxSenseLen]byte
	// SenseLen is the number of valid bytes in Sense (0 without sense).
	SenseLen int

	done  bool
	state cmdState // decoded CDB and resolved LU, private to the device server
}

// Done reports whether the command has completed (Status is final).
func (c *Command) Done() bool { return c.done }

// Quick reports, once Plan has left the command to execute, whether it is
// an ordinary read or write (no FUA, write cache on) that is usually done
// as soon as the backing store's page cache has answered. The transport
// may run such a command on the goroutine that received it; it must still
// cope with the rare one that blocks (target/inline.go).
func (c *Command) Quick() bool {
	st := &c.state
	if c.done || st.op == nil || st.op.flags&flagQuick == 0 || st.blk.FUA || st.lu == nil {
		return false
	}
	if st.op.flags&flagWrite != 0 {
		return st.lu.wce.Load()
	}
	if nw, ok := st.lu.dev.(backstore.NoWaitReader); ok {
		return nw.ReadsNoWait() // O_DIRECT reads always wait for the disk
	}
	return true
}

// SenseData returns the sense bytes.
func (c *Command) SenseData() []byte { return c.Sense[:c.SenseLen] }

// Reset clears the command for reuse.
func (c *Command) Reset() { *c = Command{} }
