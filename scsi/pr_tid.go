package scsi

import (
	"bytes"
	"encoding/hex"
	"strings"
)

// iSCSI TransportIDs (SPC-4 §7.6.4.6, RFC 7143 §4.4.1) and the PERSISTENT
// RESERVE OUT parameter lists (SPC-4 §6.17.3, §6.17.4). Both come from the
// network: every length is checked against the bytes present before it is
// used, and errors carry the field pointer of the offending byte.

// TransportID constants.
const (
	tidProtoISCSI     = 0x5  // PROTOCOL IDENTIFIER of iSCSI
	tidFormatName     = 0x00 // FORMAT CODE 00b: iSCSI name (the SCSI device)
	tidFormatPort     = 0x40 // FORMAT CODE 01b: name, ",i,0x", ISID (an initiator port)
	tidMinLen         = 24   // header plus the minimum ADDITIONAL LENGTH of 20
	maxISCSINameLen   = 223  // RFC 7143 §4.2.7.1
	tidPortSeparator  = ",i,0x"
	isidHexLen        = 12
	proutBasicLen     = 24       // the basic parameter list (SPC-4 table 176)
	maxPROUTParamLen  = 64 << 10 // our bound on the parameter list length
	proutTIDLenOffset = 24       // TRANSPORTID PARAMETER DATA LENGTH with SPEC_I_PT
)

// transportID is one decoded iSCSI TransportID.
type transportID struct {
	Name    string
	ISID    [6]byte
	AnyISID bool // format 00b: every initiator port of Name
}

// parseTransportID decodes the TransportID at b[0:] and returns it and
// its length. base is b's offset in the parameter list, for the sense
// field pointer.
func parseTransportID(b []byte, base int) (transportID, int, error) {
	var t transportID
	if len(b) < 4 {
		return t, 0, invalidParam(base, -1)
	}
	if b[0]&0x0F != tidProtoISCSI {
		return t, 0, invalidParam(base, 3)
	}
	format := b[0] & 0xC0
	if format != tidFormatName && format != tidFormatPort || b[0]&0x30 != 0 {
		return t, 0, invalidParam(base, 7)
	}
	addl := int(be.Uint16(b[2:4]))
	if addl < tidMinLen-4 || addl%4 != 0 || 4+addl > len(b) {
		return t, 0, invalidParam(base+2, -1)
	}
	body := b[4 : 4+addl]
	end := bytes.IndexByte(body, 0)
	if end < 0 {
		return t, 0, invalidParam(base+4, -1) // no terminating NUL
	}
	for _, c := range body[end:] {
		if c != 0 {
			return t, 0, invalidParam(base+4, -1) // padding must be NUL
		}
	}
	s := string(body[:end])
	if format == tidFormatPort {
		// NAME ",i,0x" ISID: the separator sits at a fixed distance
		// from the end, in any letter case.
		i := len(s) - isidHexLen - len(tidPortSeparator)
		if i < 0 || !strings.EqualFold(s[i:i+len(tidPortSeparator)], tidPortSeparator) {
			return t, 0, invalidParam(base+4, -1)
		}
		if _, err := hex.Decode(t.ISID[:], []byte(s[i+len(tidPortSeparator):])); err != nil {
			return t, 0, invalidParam(base+4, -1)
		}
		s = s[:i]
	} else {
		t.AnyISID = true
	}
	if !validISCSIName(s) {
		return t, 0, invalidParam(base+4, -1)
	}
	t.Name = s
	return t, 4 + addl, nil
}

// validISCSIName accepts a non-empty name of printable ASCII or UTF-8
// without the characters RFC 7143 §4.2.7.2 excludes from names here
// (space, comma, control characters).
func validISCSIName(s string) bool {
	if s == "" || len(s) > maxISCSINameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c == ',' || c == 0x7F {
			return false
		}
	}
	return true
}

// encodeTransportID builds the TransportID of an initiator port (format
// 01b) or, for a registration made by name only, of the device (00b).
func encodeTransportID(name string, isid [6]byte, anyISID bool) []byte {
	v := name
	format := byte(tidFormatName)
	if !anyISID {
		v += tidPortSeparator + hex.EncodeToString(isid[:])
		format = tidFormatPort
	}
	n := max((len(v)+1+3)&^3, tidMinLen-4)
	out := make([]byte, 4+n)
	out[0] = format | tidProtoISCSI
	be.PutUint16(out[2:4], uint16(n))
	copy(out[4:], v)
	return out
}

// proutParams is the decoded parameter list of PERSISTENT RESERVE OUT.
type proutParams struct {
	Key     uint64 // RESERVATION KEY
	SAKey   uint64 // SERVICE ACTION RESERVATION KEY
	SpecIPT bool
	AllTgPt bool
	APTPL   bool
	TIDs    []transportID // SPEC_I_PT, or the REGISTER AND MOVE destination
	// REGISTER AND MOVE only.
	Unreg   bool
	RelPort uint16
}

// parsePROUTParams decodes and checks the parameter list of service
// action sa (SPC-4 §6.17.3 basic, §6.17.4 REGISTER AND MOVE).
func parsePROUTParams(sa uint8, b []byte) (proutParams, error) {
	var p proutParams
	if len(b) < proutBasicLen {
		return p, ErrParamListLength
	}
	p.Key = be.Uint64(b[0:8])
	p.SAKey = be.Uint64(b[8:16])
	if sa == SARegisterAndMove {
		if b[16] != 0 {
			return p, invalidParam(16, -1)
		}
		if b[17]&^0x03 != 0 {
			return p, invalidParam(17, -1)
		}
		p.Unreg = b[17]&0x02 != 0
		p.APTPL = b[17]&0x01 != 0
		p.RelPort = be.Uint16(b[18:20])
		n := be.Uint32(b[20:24])
		if uint64(n) != uint64(len(b)-proutBasicLen) {
			return p, ErrParamListLength
		}
		t, used, err := parseTransportID(b[24:], 24)
		if err != nil {
			return p, err
		}
		if used != len(b)-24 {
			return p, invalidParam(20, -1)
		}
		p.TIDs = []transportID{t}
		return p, nil
	}
	// Bytes 16-19 are the obsolete SCOPE-SPECIFIC ADDRESS, 21 is
	// reserved, 22-23 obsolete: they must be zero.
	for _, i := range []int{16, 17, 18, 19, 21, 22, 23} {
		if b[i] != 0 {
			return p, invalidParam(i, -1)
		}
	}
	if b[20]&^0x0D != 0 {
		return p, invalidParam(20, -1)
	}
	p.SpecIPT = b[20]&0x08 != 0
	p.AllTgPt = b[20]&0x04 != 0
	p.APTPL = b[20]&0x01 != 0
	if !p.SpecIPT {
		if len(b) != proutBasicLen {
			return p, ErrParamListLength
		}
		return p, nil
	}
	if sa != SARegister {
		return p, invalidParam(20, 3)
	}
	if len(b) < proutBasicLen+4 {
		return p, ErrParamListLength
	}
	n := be.Uint32(b[24:28])
	if uint64(n) != uint64(len(b)-proutBasicLen-4) {
		return p, ErrParamListLength
	}
	for off := proutBasicLen + 4; off < len(b); {
		t, used, err := parseTransportID(b[off:], off)
		if err != nil {
			return p, err
		}
		p.TIDs = append(p.TIDs, t)
		off += used
	}
	return p, nil
}
