//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// TestPeersRobustnessTable sends the same hostile inputs to our daemon, tgt
// and gotgt v0.2.2 over the network, one probe at a time, while a
// bystander session of another initiator writes and verifies data, and
// prints what each target answered, whether it survived, whether the
// bystander's I/O went on and whether a fresh login works afterwards.
// The probes are those of the gotgt assessment (docs/design.md §1) and of
// the hardening issue. Our row must match the expected answers exactly;
// the peers' rows are reported, not judged.
func TestPeersRobustnessTable(t *testing.T) {
	peersEnabled(t)
	var rows []robustRow
	for _, name := range peersTargets() {
		set := harness.StartPeers(t, name)
		p := set.Get(name)
		for i, pr := range robustProbes {
			row := runRobustProbe(t, p, pr, byte(0x21+i))
			rows = append(rows, row)
			if name != harness.PeerOurs {
				continue
			}
			if row.answer != pr.want || !row.alive || !row.bystander || !row.fresh {
				t.Errorf("ours, %s: answer %q (want %q), alive %v, bystander continued %v (%s), fresh login %v (%s)",
					pr.name, row.answer, pr.want, row.alive, row.bystander, row.bystanderNote, row.fresh, row.freshNote)
			}
		}
		if name == harness.PeerOurs {
			if log := p.Log(); strings.Contains(log, "panic") {
				t.Errorf("ours logged a panic during the probes:\n%s", p.LogTail(40))
			}
		}
		if err := set.Close(); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
	}
	table := robustTable(rows)
	t.Logf("hostile inputs side by side:\n%s", table)
	if path := os.Getenv("E2E_ROBUSTNESS_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// robustProbe is one hostile input. run gets the connection conn asks
// for, does its damage and returns the target's answer in the words of
// robustAnswer.
type robustProbe struct {
	name string
	// want is our daemon's expected answer.
	want string
	conn probeConn
	run  func(e *probeEnv, c *targettest.Client) string
}

// probeConn is what a probe starts from.
type probeConn int

const (
	probeNone    probeConn = iota // the probe makes its own connections
	probeDial                     // a TCP connection to the portal
	probeSession                  // a session on the plain LU (see probeEnv.login)
)

type probeEnv struct {
	p  *harness.Peer
	lu harness.LU
}

func (e *probeEnv) dial() (*targettest.Client, error) {
	nc, err := harness.DialNetns(e.p.Netns, e.p.Portal, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := targettest.NewClient(nc)
	c.InitiatorName = "iqn.2026-11.test:prober"
	c.Timeout = 3 * time.Second
	return c, nil
}

// login opens a prober's session to the plain LU with InitialR2T=Yes and
// no immediate data, so that writes wait for an R2T.
func (e *probeEnv) login(isid byte) (*targettest.Client, error) {
	return e.session("iqn.2026-11.test:prober", isid, pdu.Keys{
		{Key: "InitialR2T", Value: "Yes"}, {Key: "ImmediateData", Value: "No"}})
}

// session opens a normal session of initiator name on the plain LU, with
// keys replacing the client's defaults, and clears its unit attention.
func (e *probeEnv) session(name string, isid byte, keys pdu.Keys) (*targettest.Client, error) {
	c, err := e.dial()
	if err != nil {
		return nil, err
	}
	c.InitiatorName = name
	c.ISID[5] = isid
	if err := c.Login(targettest.LoginOptions{Target: e.lu.IQN, Keys: keys}); err != nil {
		c.Close()
		return nil, err
	}
	// Clear the power-on / nexus unit attention.
	for i := 0; i < 3; i++ {
		r, err := c.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, e.opts())
		if err != nil {
			c.Close()
			return nil, err
		}
		if r.Status == 0 {
			return c, nil
		}
	}
	c.Close()
	return nil, errors.New("TEST UNIT READY never GOOD")
}

func (e *probeEnv) opts() targettest.CommandOptions {
	return targettest.CommandOptions{LUN: uint64(e.lu.LUN) << 48}
}

// noData is opts for a write whose data must wait for an R2T, whatever
// the target answered to ImmediateData=No.
func (e *probeEnv) noData() targettest.CommandOptions {
	o := e.opts()
	o.NoImmediate = true
	return o
}

// robustAnswer reads what the target sends after a probe, up to wait, and
// describes the first PDU that is not a target ping, and whether the
// connection was closed after it.
func robustAnswer(c *targettest.Client, wait time.Duration) string {
	c.Timeout = wait
	for {
		rh, data, err := c.ReadPDU()
		if err != nil {
			return describeReadErr(err)
		}
		h := &rh.BHS
		if h.Opcode() == pdu.OpNOPIn && h.InitiatorTaskTag() == pdu.ReservedTag {
			continue
		}
		if h.Opcode() == pdu.OpR2T || (h.Opcode() == pdu.OpDataIn && h[1]&0x01 == 0) {
			continue
		}
		s := describePDU(h, data)
		c.Timeout = 500 * time.Millisecond
		if _, _, err := c.ReadPDU(); err != nil && !isTimeout(err) {
			s += ", then closed"
		}
		return s
	}
}

// answer is the target's answer to what a probe just wrote (robustAnswer
// with the probes' 3 s wait), or what went wrong writing it.
func answer(c *targettest.Client, werr error) string {
	if werr != nil {
		return "write: " + werr.Error()
	}
	return robustAnswer(c, 3*time.Second)
}

// header returns the encoded BHS of an initiator PDU.
func header(m interface{ Marshal(*pdu.BHS) }) *pdu.BHS {
	var h pdu.BHS
	m.Marshal(&h)
	return &h
}

func describeReadErr(err error) string {
	switch {
	case isTimeout(err):
		return "no answer"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		strings.Contains(err.Error(), "connection reset"):
		return "closed"
	}
	return "error: " + err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func describePDU(h *pdu.BHS, data []byte) string {
	switch h.Opcode() {
	case pdu.OpReject:
		return fmt.Sprintf("Reject %#02x", h[2])
	case pdu.OpLoginResponse:
		return fmt.Sprintf("Login Response %#04x", binary.BigEndian.Uint16(h[36:38]))
	case pdu.OpSCSIResponse, pdu.OpDataIn:
		status := h[3]
		if h.Opcode() == pdu.OpSCSIResponse && h[2] != 0 {
			return fmt.Sprintf("SCSI Response, iSCSI response %#02x", h[2])
		}
		if status == 0 {
			return "GOOD"
		}
		if status == 2 && len(data) > 2 {
			r := targettest.Result{Status: status, Sense: data[2:]}
			k, asc, ascq := r.SenseKey()
			return fmt.Sprintf("CHECK CONDITION %x/%02x/%02x", k, asc, ascq)
		}
		return fmt.Sprintf("status %#02x", status)
	case pdu.OpNOPIn:
		return "NOP-In"
	case pdu.OpTextResponse:
		return "Text Response"
	}
	return h.Opcode().String()
}

var robustProbes = []robustProbe{
	{
		name: "login naming a session that does not exist (TSIH 0x4242; crashed gotgt)",
		want: "Login Response 0x020a, then closed",
		conn: probeDial,
		run: func(e *probeEnv, c *targettest.Client) string {
			h := header(&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID, TSIH: 0x4242, InitiatorTaskTag: 7})
			keys := pdu.Keys{{Key: "InitiatorName", Value: c.InitiatorName}, {Key: "TargetName", Value: e.lu.IQN},
				{Key: "SessionType", Value: "Normal"}}
			return answer(c, c.WritePDU(h, nil, pdu.AppendText(nil, keys)))
		},
	},
	{
		name: "Data-Out beyond the expected transfer length (crashed gotgt)",
		// ABORTED COMMAND, TOO MUCH WRITE DATA; the session goes on.
		want: "CHECK CONDITION b/0c/0d",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			// WRITE(10) of 2 blocks announcing 1024 bytes, then 2048 bytes of Data-Out.
			itt, err := c.Send([]byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0}, make([]byte, 1024), 0, e.noData())
			if err != nil {
				return "write: " + err.Error()
			}
			rh, _, err := c.Expect(pdu.OpR2T)
			if err != nil {
				return "no R2T: " + describeReadErr(err)
			}
			ttt := binary.BigEndian.Uint32(rh.BHS[20:24])
			for i, seg := range []struct{ off, n uint32 }{{0, 1024}, {1024, 512}, {1536, 512}} {
				d := pdu.DataOut{Final: i == 2, InitiatorTaskTag: itt, TargetTransferTag: ttt, DataSN: uint32(i), BufferOffset: seg.off}
				if err := c.WritePDU(header(&d), nil, make([]byte, seg.n)); err != nil {
					break
				}
			}
			return robustAnswer(c, 3*time.Second)
		},
	},
	{
		name: "200 logins and logouts, 4 at a time, during I/O (crashed gotgt)",
		want: "200 of 200 logged in",
		run: func(e *probeEnv, _ *targettest.Client) string {
			var ok atomic.Int64
			var mu sync.Mutex
			var first error
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						c, err := e.dial()
						if err == nil {
							c.ISID = pdu.ISID{0x80, 0, 0x42, byte(w), byte(i), 0}
							if err = c.Login(targettest.LoginOptions{Target: e.lu.IQN}); err == nil {
								ok.Add(1)
								_, err = c.Logout()
							}
							c.Close()
						}
						if err != nil {
							mu.Lock()
							if first == nil {
								first = err
							}
							mu.Unlock()
						}
					}
				}(w)
			}
			wg.Wait()
			s := fmt.Sprintf("%d of 200 logged in", ok.Load())
			if first != nil {
				s += " (first error: " + first.Error() + ")"
			}
			return s
		},
	},
	{
		name: "data segment of 16 MiB announced in the first login PDU",
		want: "Login Response 0x0200, then closed",
		conn: probeDial,
		run: func(e *probeEnv, c *targettest.Client) string {
			h := header(&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID, InitiatorTaskTag: 7})
			h.SetLengths(0, 16<<20-1)
			return answer(c, c.WriteRaw(append(h[:], "InitiatorName=iqn.2026-11.test:prober\x00"...)))
		},
	},
	{
		name: "48 bytes of garbage instead of a login",
		want: "closed",
		conn: probeDial,
		run: func(e *probeEnv, c *targettest.Client) string {
			return answer(c, c.WriteRaw(bytes.Repeat([]byte{0x5a, 0xa5, 0xff, 0x00}, 12)))
		},
	},
	{
		name: "half a header, then the connection closed",
		want: "(the prober closed first)",
		conn: probeDial,
		run: func(e *probeEnv, c *targettest.Client) string {
			h := header(&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: c.ISID})
			_ = c.WriteRaw(h[:20])
			c.Close()
			return "(the prober closed first)"
		},
	},
	{
		name: "data segment longer than MaxRecvDataSegmentLength (NOP-Out, 1 MiB)",
		want: "Reject 0x04, then closed",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			h := header(&pdu.NOPOut{Immediate: true, InitiatorTaskTag: 5, TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN})
			h.SetLengths(0, 1<<20)
			if err := c.WriteRaw(h[:]); err != nil {
				return "write: " + err.Error()
			}
			// Send the announced data too, so a target that reads it does
			// not merely wait for it.
			_ = c.WriteRaw(make([]byte, 1<<20))
			return robustAnswer(c, 3*time.Second)
		},
	},
	{
		name: "unknown opcode 0x1c with data",
		want: "Reject 0x05",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			var h pdu.BHS
			h[0] = 0x1c
			h[1] = 0x80
			return answer(c, c.WritePDU(&h, nil, []byte("junk")))
		},
	},
	{
		name: "SNACK at ErrorRecoveryLevel 0",
		want: "Reject 0x04",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			return answer(c, c.WritePDU(header(&pdu.SNACKRequest{Type: 0, InitiatorTaskTag: 1}), nil, nil))
		},
	},
	{
		name: "a second command with the task tag of one in progress",
		want: "Reject 0x07",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			itt, err := c.Send([]byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, make([]byte, 512), 0, e.noData())
			if err != nil {
				return "write: " + err.Error()
			}
			if _, _, err := c.Expect(pdu.OpR2T); err != nil {
				return "no R2T: " + describeReadErr(err)
			}
			o := e.opts()
			o.ITT = itt
			_, err = c.Send([]byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, 512, o)
			return answer(c, err)
		},
	},
	{
		name: "READ(16) of 2^32-1 blocks, EDTL 4 GiB - 1",
		want: "CHECK CONDITION 5/21/00",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			cdb := []byte{0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}
			_, err := c.Send(cdb, nil, 0xffffffff, e.opts())
			return answer(c, err)
		},
	},
	{
		name: "ORWRITE(16) of one block (crashed gotgt)",
		want: "GOOD",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			cdb := []byte{0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 0, 0}
			r, err := c.Command(cdb, bytes.Repeat([]byte{1}, 512), 0, e.opts())
			if err != nil {
				return describeReadErr(err)
			}
			if r.Status == 0 {
				return "GOOD"
			}
			k, asc, ascq := r.SenseKey()
			return fmt.Sprintf("CHECK CONDITION %x/%02x/%02x", k, asc, ascq)
		},
	},
	{
		name: "non-immediate NOP-Out, then a command 6 s later (hung gotgt's session)",
		want: "NOP-In; GOOD",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			h := header(&pdu.NOPOut{InitiatorTaskTag: 0x11, TargetTransferTag: pdu.ReservedTag, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN})
			c.CmdSN++
			first := answer(c, c.WritePDU(h, nil, []byte("ping")))
			time.Sleep(6 * time.Second)
			_, err := c.Send([]byte{0, 0, 0, 0, 0, 0}, nil, 0, e.opts())
			return first + "; " + answer(c, err)
		},
	},
	{
		name: "CmdSN far outside the window, then one in it",
		want: "GOOD",
		conn: probeSession,
		run: func(e *probeEnv, c *targettest.Client) string {
			good := c.CmdSN
			c.CmdSN += 1 << 30
			if _, err := c.Send([]byte{0, 0, 0, 0, 0, 0}, nil, 0, e.opts()); err != nil {
				return "write: " + err.Error()
			}
			c.CmdSN = good
			_, err := c.Send([]byte{0, 0, 0, 0, 0, 0}, nil, 0, e.opts())
			return answer(c, err)
		},
	},
}

type robustRow struct {
	target, probe, answer    string
	alive, bystander, fresh  bool
	bystanderNote, freshNote string
}

// runRobustProbe runs one probe against p with a bystander session doing
// verified I/O on another part of the LU.
func runRobustProbe(t *testing.T, p *harness.Peer, pr robustProbe, isid byte) robustRow {
	row := robustRow{target: p.Name, probe: pr.name}
	// A peer starts every probe afresh, so that damage done by one probe
	// (tgt's heap corruption shows up a probe later) is charged to it. Ours
	// takes every probe in a row from one process.
	if p.Name != harness.PeerOurs || !p.Alive() || p.Probe(2*time.Second) != nil {
		if err := p.Restart(t.Context()); err != nil {
			row.answer = "restart before the probe failed: " + err.Error()
			return row
		}
	}
	e := &probeEnv{p: p, lu: p.LUs[harness.KindPlain]}
	by := startBystander(e)
	if err := by.waitOps(1, 10*time.Second); err != nil {
		row.answer = "bystander could not start: " + err.Error()
		by.stop()
		return row
	}
	row.answer = runProbe(e, pr, isid)
	before := by.ops.Load()
	// Let the target react, then require the bystander to make progress.
	err := by.waitOps(before+20, 10*time.Second)
	// A dying process may still exist for a moment: alive means it is
	// there and its portal accepts connections a second later.
	time.Sleep(time.Second)
	row.alive = p.Alive() && p.Probe(2*time.Second) == nil
	if !row.alive {
		t.Logf("%s died during %q (%v); log tail:\n%s", p.Name, pr.name, p.ExitError(), p.LogTail(15))
	}
	berr := by.stop()
	row.bystander = err == nil && berr == nil
	row.bystanderNote = fmt.Sprintf("%d verified I/Os", by.ops.Load())
	if err != nil || berr != nil {
		row.bystanderNote += fmt.Sprintf(", %v %v", err, berr)
	}
	if c, err := e.login(0x30); err != nil {
		row.freshNote = err.Error()
	} else {
		row.fresh = true
		c.Close()
	}
	return row
}

// runProbe opens the connection pr asks for and runs it.
func runProbe(e *probeEnv, pr robustProbe, isid byte) string {
	var c *targettest.Client
	var err error
	switch pr.conn {
	case probeDial:
		if c, err = e.dial(); err != nil {
			return "dial: " + err.Error()
		}
	case probeSession:
		if c, err = e.login(isid); err != nil {
			return "login: " + err.Error()
		}
	}
	if c != nil {
		defer c.Close()
	}
	return pr.run(e, c)
}

type bystander struct {
	ops  atomic.Int64
	quit atomic.Bool
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

// startBystander logs in a session of another initiator name and writes
// and reads back 4 KiB blocks near the end of the first MiB until stopped
// (at most 100,000 I/Os).
func startBystander(e *probeEnv) *bystander {
	b := &bystander{}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		c, err := e.session("iqn.2026-11.test:bystander", 1, nil)
		if err != nil {
			b.fail(fmt.Errorf("login: %w", err))
			return
		}
		defer c.Close()
		o := e.opts()
		buf := make([]byte, 4096)
		for i := 0; i < 100000 && !b.quit.Load(); i++ {
			lba := uint32(1024 + i%64*8)
			binary.BigEndian.PutUint64(buf, uint64(i))
			wr := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0}
			rd := []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0}
			binary.BigEndian.PutUint32(wr[2:], lba)
			binary.BigEndian.PutUint32(rd[2:], lba)
			if r, err := c.Command(wr, buf, 0, o); err != nil || r.Status != 0 {
				b.fail(fmt.Errorf("write %d: %v %v", i, statusOf(r), err))
				return
			}
			r, err := c.Command(rd, nil, 4096, o)
			if err != nil || r.Status != 0 || !bytes.Equal(r.Data, buf) {
				b.fail(fmt.Errorf("read %d: %v %v", i, statusOf(r), err))
				return
			}
			b.ops.Add(2)
		}
	}()
	return b
}

func statusOf(r *targettest.Result) string {
	if r == nil {
		return "no result"
	}
	return fmt.Sprintf("status %#x", r.Status)
}

func (b *bystander) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

func (b *bystander) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// waitOps waits until the bystander has done n I/Os.
func (b *bystander) waitOps(n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for b.ops.Load() < n {
		if err := b.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stalled at %d I/Os", b.ops.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func (b *bystander) stop() error {
	b.quit.Store(true)
	b.wg.Wait()
	return b.failed()
}

func robustTable(rows []robustRow) string {
	var b strings.Builder
	b.WriteString("| probe | target | answer | daemon alive | bystander's I/O continued | fresh login |\n|---|---|---|---|---|---|\n")
	yes := func(v bool, note string) string {
		if v {
			return "yes"
		}
		if note != "" {
			return "**no** (" + note + ")"
		}
		return "**no**"
	}
	// One probe's rows together, in the order of robustProbes.
	for _, pr := range robustProbes {
		for _, r := range rows {
			if r.probe != pr.name {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.probe, r.target, r.answer,
				yes(r.alive, ""), yes(r.bystander, r.bystanderNote), yes(r.fresh, r.freshNote))
		}
	}
	return b.String()
}
