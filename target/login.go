package target

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// Login (RFC 7143 §6.3, §11.12, §11.13): the receiver reads Login Requests,
// negotiates security and operational keys and, on success, binds the
// connection to a new session in full feature phase.

// errLoginRejected ends a login after a Login Response with a failure status
// was sent.
var errLoginRejected = errors.New("iscsi: login rejected")

// maxLoginText bounds the text a login may accumulate across Login Requests
// with the C bit set.
const maxLoginText = 64 << 10

type loginState struct {
	c *conn

	started    bool
	isid       pdu.ISID
	tsih       uint16
	cid        uint16
	cmdSN      uint32
	statSN     uint32
	stage      uint8
	transitOK  bool // the current stage's work is done
	pending    []byte
	firstReply bool // the next response is the first of the login

	initiatorName  string
	initiatorAlias string
	targetName     string
	discovery      bool
	node           *Node
	authDone       bool
	neg            *negotiator
	answered       map[string]bool
	auth           loginAuth
}

// login runs the login phase under LoginTimeout. On success the connection
// is in full feature phase with c.sess set and the transmitter running.
func (c *conn) login() error {
	deadline := time.Now().Add(c.srv.cfg.LoginTimeout)
	_ = c.nc.SetDeadline(deadline)
	st := &loginState{
		c:          c,
		statSN:     rand.Uint32(),
		firstReply: true,
		neg:        newNegotiator(c.srv.cfg.Offer),
		answered:   make(map[string]bool),
	}
	defer st.authEnd()
	for {
		err := pdu.ReadHeader(c.br, &c.hdr, pdu.Digests{}, loginMaxSegment)
		// A segment over the login limit leaves a whole header: step
		// answers it without reading the segment.
		tooLong := errors.Is(err, pdu.ErrSegmentTooLong)
		if err != nil && !tooLong {
			return fmt.Errorf("iscsi: reading login request: %w", err)
		}
		c.lastRx.Store(time.Now().UnixNano())
		if op := c.hdr.BHS.Opcode(); op != pdu.OpLoginRequest {
			// Only Login Requests are allowed before full feature phase
			// (RFC 7143 §6.3); there is no session to reject within.
			return fmt.Errorf("iscsi: %v received during login", op)
		}
		done, err := st.step(tooLong)
		if err != nil || done {
			if err == nil {
				_ = c.nc.SetDeadline(time.Time{})
			}
			return err
		}
	}
}

// step handles one Login Request; tooLong: its data segment is over the
// 8192 bytes allowed during login (RFC 7143 §13.12) and is not read. It
// returns done when the connection has entered full feature phase.
func (st *loginState) step(tooLong bool) (bool, error) {
	c := st.c
	var req pdu.LoginRequest
	if err := req.Unmarshal(&c.hdr.BHS); err != nil {
		return false, err
	}
	if len(c.hdr.AHS) != 0 {
		return false, st.reject(&req, pdu.LoginInitiatorError, "login request with AHS")
	}
	var data []byte
	if !tooLong {
		data = make([]byte, c.hdr.BHS.DataSegmentLength())
		if err := c.readData(data); err != nil {
			return false, err
		}
	}
	if !st.started {
		st.started = true
		st.isid, st.tsih, st.cid, st.cmdSN = req.ISID, req.TSIH, req.CID, req.CmdSN
		c.cid = req.CID
		st.stage = req.CSG
		if req.VersionMin > 0 || req.VersionMax < req.VersionMin {
			return false, st.reject(&req, pdu.LoginUnsupportedVersion,
				fmt.Sprintf("version range %d-%d not supported", req.VersionMin, req.VersionMax))
		}
	} else if req.ISID != st.isid || req.TSIH != st.tsih || req.CID != st.cid {
		return false, st.reject(&req, pdu.LoginInitiatorError, "ISID, TSIH or CID changed during login")
	}
	if tooLong {
		return false, st.reject(&req, pdu.LoginInitiatorError,
			fmt.Sprintf("login data segment of %d bytes, more than %d", c.hdr.BHS.DataSegmentLength(), loginMaxSegment))
	}
	if req.CSG != st.stage || req.CSG == 2 || req.CSG == pdu.StageFullFeature {
		return false, st.reject(&req, pdu.LoginInitiatorError,
			fmt.Sprintf("login stage %d, expected %d", req.CSG, st.stage))
	}
	if req.Transit && req.Continue {
		return false, st.reject(&req, pdu.LoginInitiatorError, "T and C bits both set")
	}
	if len(st.pending)+len(data) > maxLoginText {
		return false, st.reject(&req, pdu.LoginInitiatorError, "login text too long")
	}
	st.pending = append(st.pending, data...)
	if req.Continue {
		// More text follows: acknowledge with an empty response (§11.12.2).
		return false, st.respond(&req, false, nil, pdu.LoginSuccess)
	}
	keys, err := pdu.ParseText(st.pending, pdu.TextLimits{})
	st.pending = st.pending[:0]
	if err != nil {
		return false, st.reject(&req, pdu.LoginInitiatorError, err.Error())
	}
	var out pdu.Keys
	if st.firstReply {
		if status, msg := st.identify(keys); status != pdu.LoginSuccess {
			return false, st.reject(&req, status, msg)
		}
		if !st.discovery {
			// The target portal group tag is returned in the first
			// response of a normal session (RFC 7143 §13.9).
			out.Add("TargetPortalGroupTag", fmt.Sprint(st.node.TPGT))
			if st.node.Alias != "" {
				out.Add("TargetAlias", st.node.Alias)
			}
		}
	}
	status, msg, err := st.negotiate(keys, &out)
	if err != nil {
		return false, err
	}
	if status != pdu.LoginSuccess {
		return false, st.reject(&req, status, msg)
	}
	transit := false
	if req.Transit {
		if req.NSG <= st.stage || req.NSG == 2 {
			return false, st.reject(&req, pdu.LoginInitiatorError,
				fmt.Sprintf("invalid next stage %d from %d", req.NSG, st.stage))
		}
		if st.stage == pdu.StageSecurity && !st.authDone {
			// Authentication needs another round trip; stay.
			transit = false
		} else {
			transit = true
		}
	}
	if transit && req.NSG == pdu.StageFullFeature {
		if !st.neg.declared {
			// MaxRecvDataSegmentLength is declarative and must reach the
			// initiator (RFC 7143 §13.12).
			out.Add("MaxRecvDataSegmentLength", fmt.Sprint(st.neg.offer.MaxRecvDataSegmentLength))
			st.neg.declared = true
		}
		return st.finish(&req, out)
	}
	if err := st.respond(&req, transit, out, pdu.LoginSuccess); err != nil {
		return false, err
	}
	if transit {
		st.stage = req.NSG
	}
	return false, nil
}

// identify checks the keys of the first Login Request: InitiatorName,
// SessionType and TargetName (RFC 7143 §6.3.1, §13.4).
func (st *loginState) identify(keys pdu.Keys) (uint16, string) {
	name, ok := keys.Get("InitiatorName")
	if !ok || name == "" {
		return pdu.LoginMissingParameter, "InitiatorName missing in the first login request"
	}
	if !validISCSIName(name) {
		return pdu.LoginInitiatorError, fmt.Sprintf("invalid InitiatorName %q", name)
	}
	st.initiatorName = name
	st.initiatorAlias, _ = keys.Get("InitiatorAlias")
	typ, ok := keys.Get("SessionType")
	if !ok {
		typ = "Normal"
	}
	switch typ {
	case "Discovery":
		st.discovery = true
	case "Normal":
		t, ok := keys.Get("TargetName")
		if !ok || t == "" {
			return pdu.LoginMissingParameter, "TargetName missing for a normal session"
		}
		st.targetName = t
		st.node = st.c.srv.node(t)
		if st.node == nil {
			return pdu.LoginNotFound, fmt.Sprintf("target %q not found", t)
		}
	default:
		return pdu.LoginSessionTypeNotSupp, fmt.Sprintf("session type %q not supported", typ)
	}
	if st.tsih != 0 {
		// This target runs one connection per session: a non-zero TSIH
		// names a session to add a connection to (RFC 7143 §6.3.5).
		if st.c.srv.sessions.byTSIH(st.tsih) == nil {
			return pdu.LoginSessionNotExist, fmt.Sprintf("TSIH %d does not exist", st.tsih)
		}
		return pdu.LoginTooManyConnections, "MaxConnections is 1"
	}
	st.c.log = st.c.log.WithFields(logrus.Fields{"initiator": st.initiatorName, "target": st.targetName})
	return st.authorize()
}

// negotiate processes the security and operational keys of one request.
func (st *loginState) negotiate(keys pdu.Keys, out *pdu.Keys) (uint16, string, error) {
	for _, kv := range keys {
		switch kv.Key {
		case "InitiatorName", "InitiatorAlias", "TargetName", "SessionType":
			// Declarative, handled by identify; they come first. libiscsi
			// repeats InitiatorName in later security-stage requests when
			// the target answers AuthMethod=None; the same value is harmless.
			if !st.firstReply && kv.Key != "InitiatorAlias" && !st.sameIdentity(kv) {
				return pdu.LoginInitiatorError, kv.Key + " changed after the first login request", nil
			}
			continue
		case "AuthMethod":
			if st.stage != pdu.StageSecurity {
				return pdu.LoginInitiatorError, "AuthMethod outside the security stage", nil
			}
			if st.answered[kv.Key] {
				return pdu.LoginInitiatorError, "AuthMethod negotiated twice", nil
			}
			st.answered[kv.Key] = true
			if status, msg := st.authMethod(kv.Value, out); status != pdu.LoginSuccess {
				return status, msg, nil
			}
			continue
		case "TargetPortalGroupTag", "TargetAddress", "TargetAlias":
			// Target-declared keys sent by an initiator.
			return pdu.LoginInitiatorError, kv.Key + " sent by the initiator", nil
		}
		if strings.HasPrefix(kv.Key, "CHAP_") {
			if status, msg := st.chapKey(kv.Key, kv.Value); status != pdu.LoginSuccess {
				return status, msg, nil
			}
			continue
		}
		val, err := st.neg.operationalKey(kv.Key, kv.Value, st.discovery)
		if err != nil {
			var ne *errNegotiation
			if errors.As(err, &ne) {
				return ne.status, ne.msg, nil
			}
			return 0, "", err
		}
		if val != "" {
			out.Add(kv.Key, val)
		}
	}
	if st.auth.keys != nil {
		if status, msg := st.chapStep(out); status != pdu.LoginSuccess {
			return status, msg, nil
		}
	}
	if st.stage == pdu.StageSecurity && !st.authDone && !st.answered["AuthMethod"] {
		// A security stage without AuthMethod: RFC 7143 §6.3 requires it.
		return pdu.LoginMissingParameter, "AuthMethod missing in the security stage", nil
	}
	if st.stage == pdu.StageOperational && !st.authDone {
		if st.authConfig() != nil {
			// The initiator skipped the security stage (RFC 7143 §6.3).
			return pdu.LoginAuthFailure, "CHAP required, but the initiator skipped the security stage", nil
		}
		st.authDone = true
	}
	return pdu.LoginSuccess, "", nil
}

// respond sends a Login Response for req.
func (st *loginState) respond(req *pdu.LoginRequest, transit bool, keys pdu.Keys, status uint16) error {
	st.firstReply = false
	resp := pdu.LoginResponse{
		Transit:          transit,
		CSG:              st.stage,
		ISID:             st.isid,
		TSIH:             0,
		InitiatorTaskTag: req.InitiatorTaskTag,
		Status:           status,
		SN: pdu.SN{
			StatSN:   st.statSN,
			ExpCmdSN: st.cmdSN,
			MaxCmdSN: st.cmdSN + uint32(st.c.srv.cfg.CmdWindow) - 1,
		},
	}
	if transit {
		resp.NSG = req.NSG
	}
	st.statSN++
	var h pdu.BHS
	resp.Marshal(&h)
	return st.c.writeDirect(&h, pdu.AppendText(nil, keys))
}

// reject sends a Login Response with a failure status and ends the login.
func (st *loginState) reject(req *pdu.LoginRequest, status uint16, msg string) error {
	st.c.log.WithFields(logrus.Fields{
		"status": fmt.Sprintf("0x%04x", status), "isid": st.isid.String(),
	}).Warnf("iscsi: login refused: %s", msg)
	st.penalize(status)
	if err := st.respond(req, false, nil, status); err != nil {
		return err
	}
	st.c.srv.stats.login(status)
	return fmt.Errorf("%w: %s", errLoginRejected, msg)
}

// finish moves the connection to full feature phase: it creates the session
// (reinstating an older one with the same InitiatorName and ISID), sends
// the final Login Response with the TSIH, and starts the transmitter.
func (st *loginState) finish(req *pdu.LoginRequest, out pdu.Keys) (bool, error) {
	c := st.c
	params := st.neg.finish()
	admitted := func() {}
	if !st.discovery {
		// The single-writer lease (lease.go) decides before the session
		// exists; a takeover returns after the old holder's sessions ended.
		var status uint16
		var msg string
		if admitted, status, msg = c.srv.admitLogin(st.node, st.initiatorName, st.isid, c.log); status != pdu.LoginSuccess {
			return false, st.reject(req, status, msg)
		}
	}
	sess, status, msg := c.srv.sessions.create(c, sessionSpec{
		node:           st.node,
		discovery:      st.discovery,
		initiatorName:  st.initiatorName,
		initiatorAlias: st.initiatorAlias,
		isid:           st.isid,
		cmdSN:          st.cmdSN,
		params:         params,
	})
	admitted()
	if status != pdu.LoginSuccess {
		return false, st.reject(req, status, msg)
	}
	resp := pdu.LoginResponse{
		Transit:          true,
		CSG:              st.stage,
		NSG:              pdu.StageFullFeature,
		ISID:             st.isid,
		TSIH:             sess.tsih,
		InitiatorTaskTag: req.InitiatorTaskTag,
		SN: pdu.SN{
			StatSN:   st.statSN,
			ExpCmdSN: sess.expCmdSN.Load(),
			MaxCmdSN: sess.maxCmdSN.Load(),
		},
	}
	st.statSN++
	var h pdu.BHS
	resp.Marshal(&h)
	if err := c.writeDirect(&h, pdu.AppendText(nil, out)); err != nil {
		sess.connLost(c)
		return false, err
	}
	_ = c.nc.SetWriteDeadline(time.Time{})
	c.params = params
	c.digests = pdu.Digests{Header: params.HeaderDigest, Data: params.DataDigest}
	c.sess = sess
	c.sio.poll = connPoll{srv: c.srv.poll, started: &sess.sched.started}
	c.log = sess.log.WithField("conn", c.id)
	c.tx = newTransmitter(c, st.statSN)
	c.inFFP.Store(true)
	c.tx.start()
	c.srv.stats.login(pdu.LoginSuccess)
	sess.log.WithFields(logrus.Fields{"params": params.String()}).Info("iscsi: login")
	return true, nil
}

// validISCSIName accepts iqn., eui. and naa. names (RFC 7143 §4.2.7) of a
// sane length; the check is deliberately tolerant of case, which some
// initiators get wrong.
func validISCSIName(n string) bool {
	if len(n) < 5 || len(n) > 223 {
		return false
	}
	l := strings.ToLower(n)
	if !strings.HasPrefix(l, "iqn.") && !strings.HasPrefix(l, "eui.") && !strings.HasPrefix(l, "naa.") {
		return false
	}
	for _, r := range n {
		if r <= ' ' || r == 0x7f || r == ',' {
			return false
		}
	}
	return true
}
