package targettest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// CHAP is the initiator side of a CHAP login for the raw client.
type CHAP struct {
	User   string
	Secret string
	// Algorithms is the CHAP_A offer; default "5".
	Algorithms string
	// TargetUser and TargetSecret, when TargetSecret is set, ask the target
	// to authenticate itself (mutual CHAP) and check its answer.
	TargetUser, TargetSecret string
	// Challenge is the challenge sent to the target in mutual CHAP;
	// default 32 random bytes.
	Challenge []byte
	// Identifier is CHAP_I for mutual CHAP (a string, so tests can send
	// malformed ones); default "7".
	Identifier string
	// ReflectChallenge sends the target's own challenge back as CHAP_C.
	ReflectChallenge bool
	// Response, when set, replaces the computed CHAP_R value.
	Response func(alg chap.Algorithm, id byte, challenge []byte) string

	// Filled in by the exchange.
	Selected          chap.Algorithm
	TargetChallenge   []byte
	TargetIdentifier  byte
	InitiatorResponse string
}

// ErrTargetAuth is returned when the target's mutual CHAP answer is wrong.
var ErrTargetAuth = errors.New("target failed mutual CHAP")

// chapSecurity runs the security stage with CHAP: AuthMethod, CHAP_A,
// then CHAP_N/CHAP_R (and CHAP_I/CHAP_C for mutual CHAP) with T=1.
func (c *Client) chapSecurity(itt uint32, first pdu.Keys, a *CHAP) error {
	keys := append(first, pdu.KV{Key: "AuthMethod", Value: "CHAP,None"})
	_, out, err := c.loginStep(itt, pdu.StageSecurity, pdu.StageOperational, false, keys)
	if err != nil {
		return err
	}
	if v, _ := out.Get("AuthMethod"); v != "CHAP" {
		return fmt.Errorf("target chose AuthMethod=%q", v)
	}
	offer := a.Algorithms
	if offer == "" {
		offer = "5"
	}
	_, out, err = c.loginStep(itt, pdu.StageSecurity, pdu.StageOperational, false, pdu.Keys{{Key: "CHAP_A", Value: offer}})
	if err != nil {
		return err
	}
	av, _ := out.Get("CHAP_A")
	n, err := strconv.Atoi(av)
	if err != nil {
		return fmt.Errorf("CHAP_A=%q from the target", av)
	}
	a.Selected = chap.Algorithm(n)
	iv, _ := out.Get("CHAP_I")
	id, err := chap.ParseIdentifier(iv)
	if err != nil {
		return err
	}
	cv, _ := out.Get("CHAP_C")
	ch, err := chap.DecodeBinary(cv, chap.MaxChallenge)
	if err != nil {
		return err
	}
	a.TargetChallenge, a.TargetIdentifier = ch, id
	resp := chap.EncodeHex(chap.Response(a.Selected, id, []byte(a.Secret), ch))
	if a.Response != nil {
		resp = a.Response(a.Selected, id, ch)
	}
	a.InitiatorResponse = resp
	keys = pdu.Keys{{Key: "CHAP_N", Value: a.User}, {Key: "CHAP_R", Value: resp}}
	mutual := a.TargetSecret != ""
	var myC []byte
	myI := a.Identifier
	if mutual {
		myC = a.Challenge
		if a.ReflectChallenge {
			myC = ch
		}
		if myC == nil {
			myC = make([]byte, 32)
			_, _ = rand.Read(myC)
		}
		if myI == "" {
			myI = "7"
		}
		keys = append(keys, pdu.KV{Key: "CHAP_I", Value: myI}, pdu.KV{Key: "CHAP_C", Value: chap.EncodeHex(myC)})
	}
	resp2, out, err := c.loginStep(itt, pdu.StageSecurity, pdu.StageOperational, true, keys)
	if err != nil {
		return err
	}
	if mutual {
		id, err := chap.ParseIdentifier(myI)
		if err != nil {
			return err
		}
		n, _ := out.Get("CHAP_N")
		r, _ := out.Get("CHAP_R")
		got, err := chap.DecodeBinary(r, 64)
		if n != a.TargetUser || err != nil || !bytes.Equal(got, chap.Response(a.Selected, id, []byte(a.TargetSecret), myC)) {
			return ErrTargetAuth
		}
	}
	if !resp2.Transit {
		return errors.New("target did not leave the security stage after CHAP")
	}
	return nil
}
