package target

import (
	"fmt"
	"strconv"
	"strings"
)

// Params are the operational parameters of one session and its connection,
// as negotiated at login (RFC 7143 §13). The zero value is not useful; start
// from defaultParams.
type Params struct {
	HeaderDigest bool
	DataDigest   bool
	// MaxRecvDataSegmentLength declared by the initiator: the largest data
	// segment this target may send it (RFC 7143 §13.12).
	InitiatorMaxRecvDataSegmentLength int
	// TargetMaxRecvDataSegmentLength is what this target declared: the largest
	// data segment the initiator may send.
	TargetMaxRecvDataSegmentLength int
	MaxBurstLength                 int
	FirstBurstLength               int
	InitialR2T                     bool
	ImmediateData                  bool
	MaxOutstandingR2T              int
	DataPDUInOrder                 bool
	DataSequenceInOrder            bool
	DefaultTime2Wait               int
	DefaultTime2Retain             int
	ErrorRecoveryLevel             int
	MaxConnections                 int
}

// defaultParams are the RFC 7143 defaults that apply to any key the two sides
// do not negotiate.
func defaultParams() Params {
	return Params{
		InitiatorMaxRecvDataSegmentLength: 8192,
		TargetMaxRecvDataSegmentLength:    8192,
		MaxBurstLength:                    262144,
		FirstBurstLength:                  65536,
		InitialR2T:                        true,
		ImmediateData:                     true,
		MaxOutstandingR2T:                 1,
		DataPDUInOrder:                    true,
		DataSequenceInOrder:               true,
		DefaultTime2Wait:                  2,
		DefaultTime2Retain:                20,
		ErrorRecoveryLevel:                0,
		MaxConnections:                    1,
	}
}

// Offer is what this target proposes or accepts for each negotiable key.
// It is built from the server configuration.
type Offer struct {
	// Digests this target accepts, in preference order ("CRC32C", "None").
	HeaderDigests []string
	DataDigests   []string
	// MaxRecvDataSegmentLength this target declares.
	MaxRecvDataSegmentLength int
	MaxBurstLength           int
	FirstBurstLength         int
	// InitialR2T=Yes forbids unsolicited Data-Out; the default (false)
	// offers No.
	InitialR2T bool
	// DisableImmediateData offers ImmediateData=No; the default offers Yes.
	DisableImmediateData bool
	MaxOutstandingR2T    int
	DefaultTime2Wait     int
	DefaultTime2Retain   int
}

// Limits of numeric keys (RFC 7143 §13).
const (
	minSegmentLength = 512
	maxSegmentLength = 1<<24 - 1
	maxTime2         = 3600
	maxR2T           = 65535
)

// negotiator applies the RFC 7143 §6.2 rules to the keys of one login or
// text exchange. It remembers which keys were negotiated so a key offered
// twice is detected.
type negotiator struct {
	offer    Offer
	params   Params
	seen     map[string]bool
	declared bool // our MaxRecvDataSegmentLength was sent
}

func newNegotiator(o Offer) *negotiator {
	p := defaultParams()
	p.TargetMaxRecvDataSegmentLength = o.MaxRecvDataSegmentLength
	return &negotiator{offer: o, params: p, seen: make(map[string]bool)}
}

// errNegotiation is a key exchange the target cannot accept; it ends the
// login with an initiator-error status.
type errNegotiation struct {
	status uint16
	msg    string
}

func (e *errNegotiation) Error() string { return "iscsi: login negotiation: " + e.msg }

// operationalKey handles one operational key from the initiator and returns
// the value to answer with ("" for keys that need no answer, such as
// declarative ones the target does not echo). discovery limits the keys
// that make sense.
func (n *negotiator) operationalKey(key, value string, discovery bool) (string, error) {
	if n.seen[key] {
		return "", &errNegotiation{status: 0x0200, msg: "key " + key + " negotiated twice"}
	}
	n.seen[key] = true
	if value == "" {
		return "Reject", nil
	}
	switch key {
	case "HeaderDigest", "DataDigest":
		offered := n.offer.HeaderDigests
		if key == "DataDigest" {
			offered = n.offer.DataDigests
		}
		choice := selectFromList(value, offered)
		if choice == "" {
			return "Reject", nil
		}
		if key == "HeaderDigest" {
			n.params.HeaderDigest = choice == "CRC32C"
		} else {
			n.params.DataDigest = choice == "CRC32C"
		}
		return choice, nil
	case "MaxRecvDataSegmentLength":
		v, ok := parseNumber(value, minSegmentLength, maxSegmentLength)
		if !ok {
			return "Reject", nil
		}
		n.params.InitiatorMaxRecvDataSegmentLength = v
		// Declarative: answered with our own value, once.
		n.declared = true
		return strconv.Itoa(n.offer.MaxRecvDataSegmentLength), nil
	case "MaxConnections":
		if _, ok := parseNumber(value, 1, 65535); !ok {
			return "Reject", nil
		}
		n.params.MaxConnections = 1
		return "1", nil
	case "ErrorRecoveryLevel":
		if _, ok := parseNumber(value, 0, 2); !ok {
			return "Reject", nil
		}
		n.params.ErrorRecoveryLevel = 0
		return "0", nil
	case "DefaultTime2Wait":
		v, ok := parseNumber(value, 0, maxTime2)
		if !ok {
			return "Reject", nil
		}
		n.params.DefaultTime2Wait = max(v, n.offer.DefaultTime2Wait)
		return strconv.Itoa(n.params.DefaultTime2Wait), nil
	case "DefaultTime2Retain":
		return minNumber(value, 0, maxTime2, n.offer.DefaultTime2Retain, &n.params.DefaultTime2Retain), nil
	}
	if discovery {
		// Session-wide data keys are irrelevant in a discovery session
		// (RFC 7143 §13: they are "Normal" session keys).
		switch key {
		case "MaxBurstLength", "FirstBurstLength", "InitialR2T", "ImmediateData",
			"MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder":
			return "Irrelevant", nil
		}
	}
	switch key {
	case "MaxBurstLength":
		return minNumber(value, minSegmentLength, maxSegmentLength, n.offer.MaxBurstLength, &n.params.MaxBurstLength), nil
	case "FirstBurstLength":
		return minNumber(value, minSegmentLength, maxSegmentLength, n.offer.FirstBurstLength, &n.params.FirstBurstLength), nil
	case "MaxOutstandingR2T":
		return minNumber(value, 1, maxR2T, n.offer.MaxOutstandingR2T, &n.params.MaxOutstandingR2T), nil
	case "InitialR2T":
		v, ok := parseBool(value)
		if !ok {
			return "Reject", nil
		}
		// OR function: Yes if either side says Yes.
		n.params.InitialR2T = v || n.offer.InitialR2T
		return yesNo(n.params.InitialR2T), nil
	case "ImmediateData":
		v, ok := parseBool(value)
		if !ok {
			return "Reject", nil
		}
		// AND function.
		n.params.ImmediateData = v && !n.offer.DisableImmediateData
		return yesNo(n.params.ImmediateData), nil
	case "DataPDUInOrder", "DataSequenceInOrder":
		if _, ok := parseBool(value); !ok {
			return "Reject", nil
		}
		// OR function; this target always answers Yes, so the result is Yes.
		return "Yes", nil
	case "IFMarker", "OFMarker":
		// Markers were removed by RFC 7143 (§13.25): answer No.
		if _, ok := parseBool(value); !ok {
			return "Reject", nil
		}
		return "No", nil
	case "IFMarkInt", "OFMarkInt":
		return "Reject", nil
	case "iSCSIProtocolLevel":
		// RFC 7144 §2.1: this target implements RFC 7143 (level 1).
		v, ok := parseNumber(value, 0, 31)
		if !ok {
			return "Reject", nil
		}
		return strconv.Itoa(min(v, 1)), nil
	}
	return "NotUnderstood", nil
}

// finish applies cross-key rules once negotiation is complete.
func (n *negotiator) finish() Params {
	p := n.params
	if p.FirstBurstLength > p.MaxBurstLength {
		p.FirstBurstLength = p.MaxBurstLength
	}
	return p
}

// minNumber negotiates a numeric key whose result is the minimum of both
// sides (RFC 7143 §6.2.2): it stores the result in *dst and returns the
// answer, or "Reject" for a value outside [lo, hi].
func minNumber(value string, lo, hi, ours int, dst *int) string {
	v, ok := parseNumber(value, lo, hi)
	if !ok {
		return "Reject"
	}
	*dst = min(v, ours)
	return strconv.Itoa(*dst)
}

// selectFromList returns the first value of the initiator's comma-separated
// list that appears in ours (RFC 7143 §6.2.1: the responder picks the first
// value it supports from the offerer's list).
func selectFromList(theirs string, ours []string) string {
	for _, v := range strings.Split(theirs, ",") {
		v = strings.TrimSpace(v)
		for _, o := range ours {
			if strings.EqualFold(v, o) {
				return o
			}
		}
	}
	return ""
}

// parseNumber parses a decimal (or 0x-prefixed hex) number and checks its range.
func parseNumber(s string, lo, hi int) (int, bool) {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < int64(lo) || v > int64(hi) {
		return 0, false
	}
	return int(v), true
}

func parseBool(s string) (bool, bool) {
	switch s {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// String formats the parameters for logs.
func (p Params) String() string {
	return fmt.Sprintf("HeaderDigest=%s DataDigest=%s MaxRecvDataSegmentLength=%d/%d "+
		"MaxBurstLength=%d FirstBurstLength=%d InitialR2T=%s ImmediateData=%s MaxOutstandingR2T=%d",
		digestName(p.HeaderDigest), digestName(p.DataDigest),
		p.InitiatorMaxRecvDataSegmentLength, p.TargetMaxRecvDataSegmentLength,
		p.MaxBurstLength, p.FirstBurstLength, yesNo(p.InitialR2T), yesNo(p.ImmediateData),
		p.MaxOutstandingR2T)
}

func digestName(b bool) string {
	if b {
		return "CRC32C"
	}
	return "None"
}
