package target

import (
	"net"
	"testing"
)

func TestPeerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	c, s := pair()
	if peerClosed(s) {
		t.Fatal("idle open connection reported closed")
	}
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Data before the FIN: the receiver still has to read it.
	if peerClosed(s) {
		t.Fatal("connection with unread data reported closed")
	}
	var b [1]byte
	if _, err := s.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// On loopback the FIN is queued when Close returns.
	if !peerClosed(s) {
		t.Fatal("closed connection not detected")
	}
	s.Close()
	if peerClosed(&net.UnixConn{}) {
		t.Fatal("a connection without a descriptor reported closed")
	}
}
