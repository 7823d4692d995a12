package target

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestSockIOWritevWaitsAndResumes: writev of more than the socket buffer
// holds waits in the poller whenever the socket is full and resumes
// mid-buffer; the peer receives every byte in order.
func TestSockIOWritevWaitsAndResumes(t *testing.T) {
	client, server := tcpPair(t)
	_ = server.(*net.TCPConn).SetWriteBuffer(16 << 10)
	s := newSockIO(server)
	if s.rc == nil {
		t.Fatal("a TCP connection got no raw connection")
	}
	var bufs [][]byte
	var want []byte
	for i := 0; i < 200; i++ {
		b := bytes.Repeat([]byte{byte(i)}, 1000+i*97) // odd sizes: partial writes end mid-buffer
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	got := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 3000)
		for len(all) < len(want) {
			time.Sleep(time.Millisecond) // a slow reader keeps the socket full
			n, err := client.Read(buf)
			if err != nil {
				break
			}
			all = append(all, buf[:n]...)
		}
		got <- all
	}()
	if err := s.writev(bufs); err != nil {
		t.Fatalf("writev: %v", err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer received %d bytes, want %d (equal: %v)", len(b), len(want), bytes.Equal(b, want))
	}
	for i, v := range s.iov[:cap(s.iov)] {
		if v.Base != nil {
			t.Fatalf("iovec %d still points at data after writev", i)
		}
	}
}

func TestSockIOReadEOFAndDeadline(t *testing.T) {
	client, server := tcpPair(t)
	s := newSockIO(server)
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(s, buf[:5]); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	_ = server.SetReadDeadline(time.Time{})
	client.Close()
	if _, err := s.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
	server.Close()
	if _, err := s.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
}

func TestConsumeIovec(t *testing.T) {
	a, b, c := []byte("abc"), []byte("defgh"), []byte("ij")
	iov := func() []unix.Iovec {
		var v []unix.Iovec
		for _, x := range [][]byte{a, b, c} {
			e := unix.Iovec{Base: &x[0]}
			e.SetLen(len(x))
			v = append(v, e)
		}
		return v
	}
	rest := func(v []unix.Iovec) string {
		var s []byte
		for _, e := range v {
			s = append(s, unsafe.Slice(e.Base, int(e.Len))...)
		}
		return string(s)
	}
	for n, want := range map[int]string{0: "abcdefghij", 2: "cdefghij", 3: "defghij", 5: "fghij", 8: "ij", 9: "j", 10: ""} {
		if got := rest(consumeIovec(iov(), n)); got != want {
			t.Errorf("consume %d: %q, want %q", n, got, want)
		}
	}
}
