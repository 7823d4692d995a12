package targettest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Client is a minimal raw-PDU iSCSI initiator for tests: it sends exactly
// the PDUs a test builds and exposes every received header, so tests can
// probe protocol corner cases a real initiator never produces.
type Client struct {
	Conn          net.Conn
	br            *bufio.Reader
	InitiatorName string
	ISID          pdu.ISID
	TSIH          uint16
	CmdSN         uint32
	ExpStatSN     uint32
	MaxCmdSN      uint32
	Digests       pdu.Digests
	// TargetMaxRecv is the MaxRecvDataSegmentLength the target declared.
	TargetMaxRecv int
	// MaxRecv is what this client declares (default 262144).
	MaxRecv int
	// Negotiated keys from the login.
	Params map[string]string
	// Timeout for each receive; default 5 s.
	Timeout time.Duration
	itt     uint32
}

// Dial connects to addr.
func Dial(addr string) (*Client, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &Client{
		Conn:          nc,
		br:            bufio.NewReader(nc),
		InitiatorName: "iqn.2026-11.test:initiator",
		ISID:          pdu.ISID{0x80, 0x12, 0x34, 0x56, 0, 1},
		TargetMaxRecv: 8192,
		MaxRecv:       262144,
		Params:        map[string]string{},
		Timeout:       5 * time.Second,
		itt:           0x1000,
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// NextITT returns a fresh initiator task tag.
func (c *Client) NextITT() uint32 {
	c.itt++
	return c.itt
}

// WritePDU sends a header with optional AHS and data, applying the
// negotiated digests.
func (c *Client) WritePDU(h *pdu.BHS, ahs, data []byte) error {
	h.SetLengths(len(ahs), len(data))
	out := append([]byte(nil), h[:]...)
	out = append(out, ahs...)
	if c.Digests.Header {
		var d [4]byte
		pdu.PutDigest(d[:], pdu.HeaderDigest(h, ahs))
		out = append(out, d[:]...)
	}
	if len(data) > 0 {
		out = append(out, data...)
		var tail pdu.Tail
		tail.Compute(c.Digests, data)
		out = append(out, tail.Bytes()...)
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	_, err := c.Conn.Write(out)
	return err
}

// WriteRaw sends bytes as they are.
func (c *Client) WriteRaw(b []byte) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	_, err := c.Conn.Write(b)
	return err
}

// ReadPDU receives one PDU, updating ExpStatSN and MaxCmdSN from it.
func (c *Client) ReadPDU() (*pdu.Header, []byte, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.Timeout))
	h := new(pdu.Header)
	if err := pdu.ReadHeader(c.br, h, c.Digests, 1<<24); err != nil {
		return nil, nil, err
	}
	data := make([]byte, h.BHS.DataSegmentLength())
	if err := pdu.ReadData(c.br, data, c.Digests); err != nil {
		return nil, nil, err
	}
	c.track(&h.BHS)
	return h, data, nil
}

// track updates the client's view of the target's sequence numbers.
func (c *Client) track(h *pdu.BHS) {
	statSN := binary.BigEndian.Uint32(h[24:28])
	switch h.Opcode() {
	case pdu.OpSCSIResponse, pdu.OpTaskMgmtResponse, pdu.OpLoginResponse, pdu.OpTextResponse,
		pdu.OpLogoutResponse, pdu.OpAsyncMessage, pdu.OpReject:
		c.ExpStatSN = statSN + 1
	case pdu.OpNOPIn:
		if h.InitiatorTaskTag() != pdu.ReservedTag {
			c.ExpStatSN = statSN + 1
		}
	case pdu.OpDataIn:
		if h[1]&0x01 != 0 {
			c.ExpStatSN = statSN + 1
		}
	}
	if h.Opcode() != pdu.OpLoginResponse || h[1]&0x80 != 0 {
		c.MaxCmdSN = binary.BigEndian.Uint32(h[32:36])
	}
}

// LoginOptions configures Login.
type LoginOptions struct {
	Target       string // TargetName; empty means a discovery session
	Keys         pdu.Keys
	SkipSecurity bool // start in the operational stage
	HeaderDigest string
	DataDigest   string
	// CHAP, when set, authenticates with CHAP in the security stage
	// instead of AuthMethod=None.
	CHAP *CHAP
}

// ErrLoginFailed is returned when the target answers with a non-zero status.
type ErrLoginFailed struct{ Status uint16 }

func (e *ErrLoginFailed) Error() string {
	return fmt.Sprintf("login failed with status 0x%04x", e.Status)
}

// Login performs a login: a security stage with AuthMethod=None (unless
// SkipSecurity), then the operational stage with the given keys, ending in
// full feature phase.
func (c *Client) Login(o LoginOptions) error {
	first := pdu.Keys{{Key: "InitiatorName", Value: c.InitiatorName}}
	if o.Target == "" {
		first.Add("SessionType", "Discovery")
	} else {
		first.Add("SessionType", "Normal")
		first.Add("TargetName", o.Target)
	}
	itt := c.NextITT()
	stage := uint8(pdu.StageSecurity)
	if !o.SkipSecurity && o.CHAP != nil {
		if err := c.chapSecurity(itt, first, o.CHAP); err != nil {
			return err
		}
		first = nil
	} else if !o.SkipSecurity {
		keys := append(first, pdu.KV{Key: "AuthMethod", Value: "None"})
		resp, _, err := c.loginStep(itt, pdu.StageSecurity, pdu.StageOperational, true, keys)
		if err != nil {
			return err
		}
		if !resp.Transit {
			return errors.New("target did not leave the security stage")
		}
		first = nil
	}
	stage = pdu.StageOperational
	ops := pdu.Keys{
		{Key: "HeaderDigest", Value: orDefault(o.HeaderDigest, "None")},
		{Key: "DataDigest", Value: orDefault(o.DataDigest, "None")},
		{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(c.MaxRecv)},
	}
	if o.Target != "" {
		ops = append(ops, pdu.Keys{
			{Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "Yes"},
			{Key: "MaxBurstLength", Value: "262144"}, {Key: "FirstBurstLength", Value: "65536"},
			{Key: "MaxOutstandingR2T", Value: "1"},
		}...)
	}
	// Keys given by the test replace the defaults of the same name.
	for _, kv := range o.Keys {
		replaced := false
		for i := range ops {
			if ops[i].Key == kv.Key {
				ops[i].Value, replaced = kv.Value, true
			}
		}
		if !replaced {
			ops = append(ops, kv)
		}
	}
	keys := append(first, ops...)
	resp, out, err := c.loginStep(itt, stage, pdu.StageFullFeature, true, keys)
	if err != nil {
		return err
	}
	if !resp.Transit || resp.NSG != pdu.StageFullFeature {
		return errors.New("target did not enter full feature phase")
	}
	for _, kv := range out {
		c.Params[kv.Key] = kv.Value
	}
	if v, ok := c.Params["MaxRecvDataSegmentLength"]; ok {
		c.TargetMaxRecv, _ = strconv.Atoi(v)
	}
	c.Digests = pdu.Digests{Header: c.Params["HeaderDigest"] == "CRC32C", Data: c.Params["DataDigest"] == "CRC32C"}
	c.TSIH = resp.TSIH
	return nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// LoginPDU sends one Login Request and returns the response; the caller
// decides stages and keys. A failure status is returned as ErrLoginFailed
// along with the response.
func (c *Client) LoginPDU(req pdu.LoginRequest, keys pdu.Keys) (*pdu.LoginResponse, pdu.Keys, error) {
	var h pdu.BHS
	req.Marshal(&h)
	if err := c.WritePDU(&h, nil, pdu.AppendText(nil, keys)); err != nil {
		return nil, nil, err
	}
	rh, data, err := c.ReadPDU()
	if err != nil {
		return nil, nil, err
	}
	var resp pdu.LoginResponse
	if err := resp.Unmarshal(&rh.BHS); err != nil {
		return nil, nil, err
	}
	out, err := pdu.ParseText(data, pdu.TextLimits{})
	if err != nil {
		return &resp, nil, err
	}
	if resp.Status != 0 {
		return &resp, out, &ErrLoginFailed{Status: resp.Status}
	}
	return &resp, out, nil
}

func (c *Client) loginStep(itt uint32, csg, nsg uint8, transit bool, keys pdu.Keys) (*pdu.LoginResponse, pdu.Keys, error) {
	req := pdu.LoginRequest{
		Transit: transit, CSG: csg, NSG: nsg, ISID: c.ISID, TSIH: c.TSIH,
		InitiatorTaskTag: itt, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN,
	}
	return c.LoginPDU(req, keys)
}

// Result is the outcome of a SCSI command.
type Result struct {
	Status    uint8
	Sense     []byte
	Data      []byte
	Overflow  bool
	Underflow bool
	Residual  uint32
	// PDUs counts the Data-In PDUs, R2Ts the R2Ts received.
	PDUs int
	R2Ts int
}

// SenseKey returns the sense key, ASC and ASCQ of fixed or descriptor sense.
func (r *Result) SenseKey() (key, asc, ascq byte) {
	s := r.Sense
	if len(s) < 4 {
		return 0, 0, 0
	}
	if s[0]&0x7f >= 0x72 {
		return s[1] & 0x0f, s[2], s[3]
	}
	if len(s) < 14 {
		return s[2] & 0x0f, 0, 0
	}
	return s[2] & 0x0f, s[12], s[13]
}

// CommandOptions adjust Command.
type CommandOptions struct {
	LUN       uint64
	EDTL      *uint32 // default: len(dataOut) or readLen
	Immediate bool
	Attr      pdu.TaskAttr
	// Unsolicited sends the first burst as immediate data plus
	// unsolicited Data-Out (when negotiated); default: immediate data only.
	NoImmediate bool
	// ITT, when not 0, is the task tag to use instead of a fresh one
	// (to probe a tag already in use).
	ITT uint32
}

// Command sends a SCSI command and collects its data and status, answering
// R2Ts with Data-Out. Asynchronous PDUs that arrive meanwhile (NOP-In pings)
// are answered or skipped.
func (c *Client) Command(cdb []byte, dataOut []byte, readLen uint32, o CommandOptions) (*Result, error) {
	itt, err := c.Send(cdb, dataOut, readLen, o)
	if err != nil {
		return nil, err
	}
	return c.collect(itt, dataOut, readLen)
}

// Send sends the SCSI Command PDU of Command, with the immediate data
// negotiated, and returns its task tag without waiting for anything.
func (c *Client) Send(cdb []byte, dataOut []byte, readLen uint32, o CommandOptions) (itt uint32, err error) {
	edtl := readLen
	if dataOut != nil {
		edtl = uint32(len(dataOut))
	}
	if o.EDTL != nil {
		edtl = *o.EDTL
	}
	itt = o.ITT
	if itt == 0 {
		itt = c.NextITT()
	}
	cmd := pdu.SCSICommand{
		Immediate: o.Immediate, Final: true, Read: readLen > 0, Write: dataOut != nil && edtl > 0,
		Attr: o.Attr, LUN: o.LUN, InitiatorTaskTag: itt, ExpectedDataTransferLn: edtl,
		CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN,
	}
	if o.Attr == 0 {
		cmd.Attr = pdu.AttrSimple
	}
	var ahs []byte
	n := copy(cmd.CDB[:], cdb)
	if len(cdb) > 16 {
		ext := cdb[16:]
		l := len(ext) + 1
		ahs = make([]byte, 4+len(ext)+pdu.Pad(3+l))
		ahs[0], ahs[1], ahs[2] = byte(l>>8), byte(l), 1
		copy(ahs[4:], ext)
	}
	_ = n
	var imm []byte
	if cmd.Write && !o.NoImmediate && c.Params["ImmediateData"] != "No" {
		first := 65536
		if v, err := strconv.Atoi(c.Params["FirstBurstLength"]); err == nil {
			first = v
		}
		imm = dataOut[:min(len(dataOut), int(edtl), first, c.TargetMaxRecv)]
	}
	if !o.Immediate {
		c.CmdSN++
	}
	var h pdu.BHS
	cmd.Marshal(&h)
	return itt, c.WritePDU(&h, ahs, imm)
}

// collect reads the answer to the command itt sent by Send.
func (c *Client) collect(itt uint32, dataOut []byte, readLen uint32) (*Result, error) {
	res := &Result{}
	data := make([]byte, 0, readLen)
	for {
		rh, seg, err := c.ReadPDU()
		if err != nil {
			return res, err
		}
		switch rh.BHS.Opcode() {
		case pdu.OpNOPIn:
			if err := c.answerPing(&rh.BHS); err != nil {
				return res, err
			}
		case pdu.OpR2T:
			var r pdu.R2T
			_ = r.Unmarshal(&rh.BHS)
			if r.InitiatorTaskTag != itt {
				return res, fmt.Errorf("R2T for ITT %x", r.InitiatorTaskTag)
			}
			res.R2Ts++
			if err := c.sendData(itt, r.TargetTransferTag, dataOut, r.BufferOffset, r.DesiredDataTransferLength); err != nil {
				return res, err
			}
		case pdu.OpDataIn:
			var d pdu.DataIn
			_ = d.Unmarshal(&rh.BHS)
			if int(d.BufferOffset) != len(data) {
				return res, fmt.Errorf("Data-In at offset %d, expected %d", d.BufferOffset, len(data))
			}
			data = append(data, seg...)
			res.PDUs++
			if d.HasStatus {
				res.Status, res.Data = d.Status, data
				res.Overflow, res.Underflow, res.Residual = d.Overflow, d.Underflow, d.ResidualCount
				return res, nil
			}
		case pdu.OpSCSIResponse:
			var r pdu.SCSIResponse
			_ = r.Unmarshal(&rh.BHS)
			res.Status, res.Data = r.Status, data
			res.Overflow, res.Underflow, res.Residual = r.Overflow, r.Underflow, r.ResidualCount
			if len(seg) >= 2 {
				l := int(binary.BigEndian.Uint16(seg))
				if 2+l <= len(seg) {
					res.Sense = seg[2 : 2+l]
				}
			}
			return res, nil
		case pdu.OpReject:
			return res, fmt.Errorf("command rejected: reason 0x%02x", rh.BHS[2])
		default:
			return res, fmt.Errorf("unexpected %v", rh.BHS.Opcode())
		}
	}
}

func (c *Client) sendData(itt, ttt uint32, data []byte, off, length uint32) error {
	seg := uint32(c.TargetMaxRecv)
	var sn uint32
	for done := uint32(0); done < length; {
		l := min(seg, length-done)
		d := pdu.DataOut{Final: done+l == length, InitiatorTaskTag: itt, TargetTransferTag: ttt,
			ExpStatSN: c.ExpStatSN, DataSN: sn, BufferOffset: off + done}
		var h pdu.BHS
		d.Marshal(&h)
		var payload []byte
		if int(off+done+l) <= len(data) {
			payload = data[off+done : off+done+l]
		} else {
			payload = make([]byte, l)
		}
		if err := c.WritePDU(&h, nil, payload); err != nil {
			return err
		}
		sn++
		done += l
	}
	return nil
}

// answerPing answers a target NOP-In ping.
func (c *Client) answerPing(h *pdu.BHS) error {
	var in pdu.NOPIn
	_ = in.Unmarshal(h)
	if in.TargetTransferTag == pdu.ReservedTag {
		return nil
	}
	out := pdu.NOPOut{Immediate: true, InitiatorTaskTag: pdu.ReservedTag, TargetTransferTag: in.TargetTransferTag,
		CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	var oh pdu.BHS
	out.Marshal(&oh)
	return c.WritePDU(&oh, nil, nil)
}

// Logout sends a Logout Request (close session) and waits for the response.
func (c *Client) Logout() (*pdu.LogoutResponse, error) {
	l := pdu.LogoutRequest{Immediate: true, Reason: pdu.LogoutCloseSession, InitiatorTaskTag: c.NextITT(),
		CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	var h pdu.BHS
	l.Marshal(&h)
	if err := c.WritePDU(&h, nil, nil); err != nil {
		return nil, err
	}
	for {
		rh, _, err := c.ReadPDU()
		if err != nil {
			return nil, err
		}
		if rh.BHS.Opcode() == pdu.OpLogoutResponse {
			var r pdu.LogoutResponse
			_ = r.Unmarshal(&rh.BHS)
			return &r, nil
		}
	}
}

// Expect reads PDUs until one with opcode op arrives (skipping target
// pings), and returns it.
func (c *Client) Expect(op pdu.Opcode) (*pdu.Header, []byte, error) {
	for {
		rh, data, err := c.ReadPDU()
		if err != nil {
			return nil, nil, err
		}
		if rh.BHS.Opcode() == op {
			return rh, data, nil
		}
		if rh.BHS.Opcode() == pdu.OpNOPIn && rh.BHS.InitiatorTaskTag() == pdu.ReservedTag {
			if err := c.answerPing(&rh.BHS); err != nil {
				return nil, nil, err
			}
			continue
		}
		return rh, data, fmt.Errorf("got %v, want %v", rh.BHS.Opcode(), op)
	}
}

// SendTargets asks for SendTargets=value with a Text Request (immediate) and
// returns the keys of the whole answer, following the target's continuation
// (C bit and TTT) when the answer spans several Text Responses.
func (c *Client) SendTargets(value string) (pdu.Keys, error) {
	itt := c.NextITT()
	req := pdu.TextRequest{Immediate: true, Final: true, InitiatorTaskTag: itt,
		TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	var h pdu.BHS
	req.Marshal(&h)
	if err := c.WritePDU(&h, nil, []byte("SendTargets="+value+"\x00")); err != nil {
		return nil, err
	}
	var text []byte
	for pieces := 0; ; pieces++ {
		rh, data, err := c.Expect(pdu.OpTextResponse)
		if err != nil {
			return nil, err
		}
		if len(data) > c.MaxRecv {
			return nil, fmt.Errorf("text response of %d bytes exceeds MaxRecvDataSegmentLength %d", len(data), c.MaxRecv)
		}
		var resp pdu.TextResponse
		_ = resp.Unmarshal(&rh.BHS)
		text = append(text, data...)
		if resp.Final {
			break
		}
		if !resp.Continue || resp.TargetTransferTag == pdu.ReservedTag || pieces > 1000 {
			return nil, fmt.Errorf("non-final text response without C bit or TTT: %+v", resp)
		}
		// Ask for the next piece with an empty request echoing the TTT.
		req.TargetTransferTag = resp.TargetTransferTag
		req.ExpStatSN = c.ExpStatSN
		req.Marshal(&h)
		if err := c.WritePDU(&h, nil, nil); err != nil {
			return nil, err
		}
	}
	return pdu.ParseText(text, pdu.TextLimits{})
}
