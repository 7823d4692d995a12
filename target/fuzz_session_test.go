package target_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/target"
	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// FuzzSession is the stateful fuzzer: each input is decoded into a
// sequence of PDUs — well-formed ones with fuzzed fields (SCSI commands with
// fuzzed CDBs and lengths, Data-Out for live and dead tasks, NOP-Out, task
// management, Text, Logout) and raw headers — sent on a logged-in session of
// a live in-process target over loopback. Afterwards a fresh session must
// log in and work, and the target must not have logged a panic (a recovered
// panic is still a bug).
func FuzzSession(f *testing.F) {
	panics := &panicLog{}
	tg := targettest.Start(f, targettest.Options{
		LUNs: []targettest.LUN{{Size: 1 << 20}, {Size: 1 << 20, BlockSize: 4096, Thin: true}},
		Configure: func(c *target.Config) {
			l := logrus.New()
			l.Out = panics
			l.SetLevel(logrus.DebugLevel)
			c.Log = logrus.NewEntry(l)
			c.NOPInterval = 200 * time.Millisecond
			c.NOPTimeout = 2 * time.Second
		},
	})
	seeds := [][]byte{
		{0, 0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 16, 0, 0, 0},
		{0, 0x2a, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xa0, 0, 0, 4, 0, 2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 2, 0},
		{2, 1, 0, 4, 'p', 'i', 'n', 'g'},
		{3, 1, 0, 0, 0, 0, 3, 5},
		{4, 'S', 'e', 'n', 'd', 'T', 'a', 'r', 'g', 'e', 't', 's', '=', 'A', 'l', 'l'},
		{5, 0x01, 0x80, 0, 0, 0, 0, 0xff, 0xff, 0xff},
		{6},
		{0, 0x12, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 1, 0, 0, 0, 3, 1, 0, 0, 0, 1},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	var isid sync.Mutex
	next := byte(0)
	f.Fuzz(func(t *testing.T, in []byte) {
		isid.Lock()
		next++
		id := next
		isid.Unlock()
		c, err := targettest.Dial(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.ISID[4], c.ISID[5] = 0x5a, id
		// The target closes a connection whose pings go unanswered
		// within NOPTimeout, so no write may block for long.
		_ = c.Conn.SetDeadline(time.Now().Add(15 * time.Second))
		if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			c.Close()
			t.Fatalf("login: %v", err)
		}
		go drain(c)
		if err := play(c, in); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			buf := make([]byte, 1<<20)
			t.Fatalf("the target stopped reading a connection that does not answer its pings:\n%s",
				buf[:runtime.Stack(buf, true)])
		}
		c.Close()

		fresh, err := targettest.Dial(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer fresh.Close()
		_ = fresh.Conn.SetDeadline(time.Now().Add(20 * time.Second))
		fresh.ISID[4], fresh.ISID[5] = 0xa5, id
		if err := fresh.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
			t.Fatalf("fresh login after the sequence: %v", err)
		}
		for i := 0; ; i++ {
			r, err := fresh.Command(cdbTUR, nil, 0, targettest.CommandOptions{})
			if err != nil {
				t.Fatalf("fresh session: %v", err)
			}
			if r.Status == 0 {
				break
			}
			if i == 3 {
				t.Fatalf("fresh session: TEST UNIT READY status %#x", r.Status)
			}
		}
		if p := panics.String(); p != "" {
			t.Fatalf("the target panicked (and recovered):\n%s", p)
		}
	})
}

// drain reads and discards whatever the target sends until the connection
// closes, so that the target never blocks on a full socket.
func drain(c *targettest.Client) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			return
		}
	}
}

// play decodes in into PDUs and writes them; it stops at the first write
// error (the target closed the connection) or when in is used up.
func play(c *targettest.Client, in []byte) error {
	r := &fuzzReader{b: in}
	var itts []uint32
	for r.more() {
		var h pdu.BHS
		var data, ahs []byte
		cmdSN := c.CmdSN
		if r.byte()&0x7 == 7 {
			cmdSN += uint32(int8(r.byte()))
		}
		switch r.byte() % 7 {
		case 0: // SCSI command
			cdb := r.bytes(16)
			flags := r.byte()
			edtl := r.u32() % (1 << 20)
			dl := int(r.u16()) % 8192
			itt := c.NextITT()
			itts = append(itts, itt)
			cmd := pdu.SCSICommand{Final: flags&0x80 != 0, Read: flags&0x40 != 0, Write: flags&0x20 != 0,
				Immediate: flags&0x10 != 0, Attr: pdu.TaskAttr(flags & 7), LUN: uint64(flags>>3&1) << 48,
				InitiatorTaskTag: itt, ExpectedDataTransferLn: edtl, CmdSN: cmdSN, ExpStatSN: c.ExpStatSN}
			copy(cmd.CDB[:], cdb)
			if !cmd.Immediate {
				c.CmdSN++
			}
			cmd.Marshal(&h)
			if cmd.Write {
				data = bytes.Repeat([]byte{flags}, dl)
			}
			if flags&0x08 != 0 {
				ext := r.bytes(16)
				ahs = make([]byte, 4+len(ext))
				binary.BigEndian.PutUint16(ahs, uint16(len(ext)+1))
				ahs[2] = 1
				copy(ahs[4:], ext)
			}
		case 1: // Data-Out, for a live task or a made-up one
			itt := r.u32()
			if len(itts) > 0 && itt&1 == 0 {
				itt = itts[int(itt>>1)%len(itts)]
			}
			d := pdu.DataOut{Final: r.byte()&1 == 1, InitiatorTaskTag: itt, TargetTransferTag: r.u32(),
				DataSN: r.u32() % 4, BufferOffset: r.u32() % (1 << 20), ExpStatSN: c.ExpStatSN}
			d.Marshal(&h)
			data = make([]byte, int(r.u16())%8192)
		case 2: // NOP-Out, ping or reply
			n := pdu.NOPOut{Immediate: r.byte()&1 == 1, InitiatorTaskTag: c.NextITT(), TargetTransferTag: pdu.ReservedTag,
				CmdSN: cmdSN, ExpStatSN: c.ExpStatSN}
			if r.byte()&1 == 1 {
				n.InitiatorTaskTag, n.TargetTransferTag = pdu.ReservedTag, r.u32()
			}
			n.Marshal(&h)
			data = r.bytes(int(r.byte()))
		case 3: // task management
			ref := r.u32()
			if len(itts) > 0 && ref&1 == 0 {
				ref = itts[int(ref>>1)%len(itts)]
			}
			fn := pdu.TMFunction(r.byte() % 16)
			if fn == pdu.TMFTargetColdReset {
				// A cold reset closes every connection of the target,
				// the check's fresh session included (as it should).
				fn = pdu.TMFTargetWarmReset
			}
			tm := pdu.TaskMgmtRequest{Immediate: true, Function: fn, InitiatorTaskTag: c.NextITT(),
				ReferencedTaskTag: ref, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: c.CmdSN - uint32(r.byte()%4),
				LUN: uint64(r.byte()&1) << 48}
			tm.Marshal(&h)
		case 4: // Text request
			tr := pdu.TextRequest{Immediate: true, Final: r.byte()&1 == 1, InitiatorTaskTag: c.NextITT(),
				TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
			tr.Marshal(&h)
			data = r.bytes(int(r.u16() % 1024))
		case 5: // raw header
			copy(h[:], r.bytes(48))
			dl := int(r.u16()) % 4096
			h.SetLengths(0, dl)
			data = make([]byte, dl)
		case 6: // logout
			lo := pdu.LogoutRequest{Immediate: true, Reason: pdu.LogoutReason(r.byte() % 3), InitiatorTaskTag: c.NextITT(),
				CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
			lo.Marshal(&h)
		}
		if err := c.WritePDU(&h, ahs, data); err != nil {
			return err
		}
	}
	return nil
}

type fuzzReader struct {
	b []byte
}

func (r *fuzzReader) more() bool { return len(r.b) > 0 }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *fuzzReader) u16() uint16 {
	return uint16(r.byte())<<8 | uint16(r.byte())
}

func (r *fuzzReader) u32() uint32 {
	return uint32(r.u16())<<16 | uint32(r.u16())
}

// panicLog keeps the log lines that mention a panic and drops the rest.
type panicLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (p *panicLog) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic")) {
		p.mu.Lock()
		p.buf.Write(b)
		p.mu.Unlock()
	}
	return len(b), nil
}

func (p *panicLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}
