package target

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Text requests (RFC 7143 §11.10, §11.11) and SendTargets discovery
// (§13.3, Appendix C). A response longer than the initiator's
// MaxRecvDataSegmentLength is sent in pieces: each but the last has the C
// bit and a TTT the initiator echoes in an empty Text Request to get more.

// maxTextRequest bounds the text an initiator may send across Text Requests
// with the C bit.
const maxTextRequest = 64 << 10

type textState struct {
	itt     uint32
	ttt     uint32
	pending []byte // request text accumulated across C-bit PDUs
	rest    []byte // response text not yet sent
}

func (c *conn) handleText() error {
	s := c.sess
	var r pdu.TextRequest
	if err := r.Unmarshal(&c.hdr.BHS); err != nil {
		return err
	}
	dsl := c.hdr.BHS.DataSegmentLength()
	data := make([]byte, dsl)
	if err := c.readData(data); err != nil {
		if isDigestError(err) {
			return c.digestError(err)
		}
		return err
	}
	if ok, err := c.acceptCmdSN(r.Immediate, r.CmdSN, "Text Request"); !ok {
		return err
	}
	ts := &s.text
	if r.TargetTransferTag != pdu.ReservedTag {
		// Continuation of our multi-PDU response.
		if r.TargetTransferTag != ts.ttt || r.InitiatorTaskTag != ts.itt {
			c.sendReject(pdu.RejectInvalidPDUField)
			return nil
		}
		c.sendTextPiece(&r)
		return nil
	}
	if ts.itt != r.InitiatorTaskTag {
		// A new exchange resets any earlier one (RFC 7143 §11.10.4).
		*ts = textState{itt: r.InitiatorTaskTag}
	}
	if len(ts.pending)+len(data) > maxTextRequest {
		*ts = textState{}
		return c.rejectPDU(pdu.RejectProtocolError, "text request too long", false)
	}
	ts.pending = append(ts.pending, data...)
	if r.Continue {
		// More request text follows: answer with an empty response.
		ts.ttt = s.allocTTT()
		c.sendText(&r, ts.ttt, false, nil)
		return nil
	}
	keys, err := pdu.ParseText(ts.pending, pdu.TextLimits{})
	ts.pending = nil
	if err != nil {
		c.log.WithError(err).Warn("iscsi: malformed text request")
		c.sendReject(pdu.RejectProtocolError)
		return nil
	}
	var out pdu.Keys
	for _, kv := range keys {
		if kv.Key == "SendTargets" {
			out = append(out, c.sendTargets(kv.Value)...)
			continue
		}
		// Operational keys cannot be renegotiated in full feature phase
		// by this target.
		out.Add(kv.Key, "NotUnderstood")
	}
	ts.rest = pdu.AppendText(nil, out)
	ts.ttt = 0
	c.sendTextPiece(&r)
	return nil
}

// sendTextPiece sends the next piece of the pending text response.
func (c *conn) sendTextPiece(r *pdu.TextRequest) {
	ts := &c.sess.text
	max := c.params.InitiatorMaxRecvDataSegmentLength
	piece := ts.rest
	more := len(piece) > max
	if more {
		piece = piece[:max]
		ts.rest = ts.rest[max:]
		ts.ttt = c.sess.allocTTT()
		c.sendText(r, ts.ttt, false, piece)
		return
	}
	ts.rest = nil
	c.sendText(r, pdu.ReservedTag, true, piece)
	*ts = textState{}
}

func (c *conn) sendText(r *pdu.TextRequest, ttt uint32, final bool, data []byte) {
	resp := pdu.TextResponse{
		Final:             final,
		Continue:          !final && len(data) > 0,
		LUN:               r.LUN,
		InitiatorTaskTag:  r.InitiatorTaskTag,
		TargetTransferTag: ttt,
	}
	var it txItem
	it.kind = txPDU
	it.advance = true
	resp.Marshal(&it.hdr)
	it.data = data
	c.tx.send(it)
}

// sendTargets answers SendTargets=value: "All" lists every target (in a
// normal session as well), a target name lists that target, and an empty
// value in a normal session lists the session's own target.
func (c *conn) sendTargets(value string) pdu.Keys {
	var nodes []*Node
	switch {
	case value == "All":
		nodes = c.srv.Nodes()
	case value == "":
		if c.sess.node != nil {
			nodes = []*Node{c.sess.node}
		}
	default:
		if n := c.srv.node(value); n != nil {
			nodes = []*Node{n}
		}
	}
	var out pdu.Keys
	for _, n := range nodes {
		if ok, _ := c.srv.aclFor(n).Allowed(n.Name, c.sess.initiatorName, c.remoteAddr()); !ok {
			// An initiator the ACL refuses does not learn of the target.
			continue
		}
		out.Add("TargetName", n.Name)
		for _, a := range c.portals() {
			out.Add("TargetAddress", a+","+strconv.Itoa(int(n.TPGT)))
		}
	}
	return out
}

// portals returns the addresses to advertise: the configured ones, or the
// local address of this connection (never a wildcard address).
func (c *conn) portals() []string {
	if len(c.srv.cfg.Advertise) > 0 {
		out := make([]string, 0, len(c.srv.cfg.Advertise))
		for _, a := range c.srv.cfg.Advertise {
			host, port, _ := net.SplitHostPort(a)
			out = append(out, joinHostPort(host, port))
		}
		return out
	}
	la, ok := c.nc.LocalAddr().(*net.TCPAddr)
	if !ok {
		return []string{c.nc.LocalAddr().String()}
	}
	ip := la.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return []string{joinHostPort(ip.String(), strconv.Itoa(la.Port))}
}

// joinHostPort formats an address for TargetAddress: IPv6 literals in
// brackets (RFC 7143 §13.8), without a zone.
func joinHostPort(host, port string) string {
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%s", host, port)
	}
	return host + ":" + port
}
