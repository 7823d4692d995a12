package targettest

import (
	"bufio"
	"net"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
)

// NewClient wraps an established connection (for example one dialled inside
// another network namespace) in a Client with Dial's defaults.
func NewClient(nc net.Conn) *Client {
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
	}
}
