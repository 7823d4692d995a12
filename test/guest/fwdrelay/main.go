// Command fwdrelay is the program QEMU's slirp runs for each guest
// connection to a guestfwd address, in place of socat: it connects to the
// target named by its argument and copies bytes both ways.
//
//	guestfwd=tcp:10.0.2.100:3260-cmd:/path/fwdrelay [-wait 5s] 127.0.0.1:3260
//
// libslirp hands the program one end of a loopback TCP connection as
// stdin, stdout and stderr. slirp writes each guest segment to it as it
// arrives and has Nagle on, so the data that follows a 48-byte iSCSI
// header waits for the ACK of the header, which a receiver with delayed
// ACKs (socat) sends only after about 40 ms. With socat every guest write
// takes 40-100 ms (measured: 4 KiB O_DSYNC writes 48-76 ms each; with
// fwdrelay 4-7 ms). fwdrelay re-arms TCP_QUICKACK around every read.
//
// stdout and stderr are the guest's socket: fwdrelay points both at
// /dev/null first, so nothing (not even a Go runtime crash) can write
// stray bytes into the iSCSI stream. For debugging, FWDRELAY_LOG names a
// file to append connection events to (QEMU passes its environment on).
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// logf appends a line to $FWDRELAY_LOG, if set (never to stdout/stderr).
var logf = func(string, ...any) {}

const bufSize = 8192

func main() {
	flags := flag.NewFlagSet("fwdrelay", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	wait := flags.Duration("wait", 5*time.Second, "keep retrying the target this long before closing the guest's connection")
	if flags.Parse(os.Args[1:]) != nil || flags.NArg() != 1 {
		os.Exit(2)
	}
	target := flags.Arg(0)
	const guestFD = 0
	if null, err := syscall.Open("/dev/null", syscall.O_WRONLY, 0); err == nil {
		_ = syscall.Dup2(null, 1)
		_ = syscall.Dup2(null, 2)
		_ = syscall.Close(null)
	}
	if p := os.Getenv("FWDRELAY_LOG"); p != "" {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			start := time.Now()
			logf = func(format string, args ...any) {
				fmt.Fprintf(f, "%s pid %d +%.3fs: %s\n", start.Format("15:04:05.000"), os.Getpid(),
					time.Since(start).Seconds(), fmt.Sprintf(format, args...))
			}
		}
	}
	_ = syscall.SetNonblock(guestFD, false)
	c, err := dial(target, *wait)
	if err != nil {
		logf("connect %s: %v", target, err)
		os.Exit(1)
	}
	logf("connected %s -> %s", c.LocalAddr(), c.RemoteAddr())
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	done := make(chan struct{}, 2)
	go func() { // guest -> target
		buf := make([]byte, bufSize)
		total := 0
		for {
			quickACK(guestFD)
			n, err := syscall.Read(guestFD, buf)
			if err == syscall.EINTR {
				continue
			}
			if n <= 0 || err != nil {
				logf("guest side ended after %d bytes: n=%d err=%v", total, n, err)
				break
			}
			total += n
			quickACK(guestFD)
			if _, err := tc.Write(buf[:n]); err != nil {
				logf("write to target after %d bytes: %v", total, err)
				break
			}
		}
		_ = tc.CloseWrite()
		done <- struct{}{}
	}()
	go func() { // target -> guest
		buf := make([]byte, bufSize)
		total := 0
		for {
			n, err := tc.Read(buf)
			if n > 0 {
				if werr := writeAll(guestFD, buf[:n]); werr != nil {
					logf("write to guest after %d bytes: %v", total, werr)
					break
				}
				total += n
			}
			if err != nil {
				logf("target side ended after %d bytes: %v", total, err)
				break
			}
		}
		_ = syscall.Shutdown(guestFD, syscall.SHUT_WR)
		done <- struct{}{}
	}()
	// The first direction to end ends the relay, after a moment for the
	// other direction's last bytes; exiting closes the guest's socket.
	<-done
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	logf("exit")
}

// dial connects to the target, retrying for up to wait. slirp has already
// accepted the guest's connection when it starts us, so the guest cannot
// see "connection refused"; closing the accepted connection at once
// instead hits open-iscsi 2.1.8 between binding the socket and setting
// the connection parameters ("can't set operational parameter ... -107"),
// after which iscsid fails every reconnect with "can't bind conn ... -107"
// until replacement_timeout. Holding the connection while the target
// restarts looks to the initiator like a slow login.
func dial(target string, wait time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", target, 10*time.Second)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// quickACK makes the kernel acknowledge the next segments at once. The
// flag does not stick, so it is set again around every read.
func quickACK(fd int) {
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
