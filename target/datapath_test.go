package target_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// rawIO drives READ(10)/WRITE(10) through an in-process target with
// buffers prepared once, so that allocation counts measure the target's
// data path (the client itself does not allocate per command).
type rawIO struct {
	c       *targettest.Client
	size    int
	payload []byte
	in      []byte // Data-In payloads land here
	cmd     pdu.BHS
	hdr     [pdu.BHSLen]byte
	dout    pdu.BHS
	itt     uint32
	lba     uint32
	span    uint32
	maxRecv int
	lastSt  uint8
}

func newRawIO(tb testing.TB, size int) *rawIO {
	tb.Helper()
	tg := targettest.Start(tb, targettest.Options{LUNs: []targettest.LUN{{Size: 64 << 20}}, Quiet: true})
	c, err := targettest.Dial(tg.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN, Keys: pdu.Keys{
		{Key: "MaxBurstLength", Value: "1048576"}, {Key: "FirstBurstLength", Value: "65536"},
	}}); err != nil {
		tb.Fatal(err)
	}
	// The new nexus starts with a unit attention; clear it.
	for i := 0; i < 4; i++ {
		res, err := c.Command(make([]byte, 6), nil, 0, targettest.CommandOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		if res.Status == 0 {
			break
		}
	}
	_ = c.Conn.SetDeadline(time.Now().Add(10 * time.Minute))
	r := &rawIO{c: c, size: size, payload: make([]byte, size), in: make([]byte, 1<<20),
		itt: 0x10000, span: uint32((64<<20)/512 - size/512), maxRecv: c.TargetMaxRecv}
	for i := range r.payload {
		r.payload[i] = byte(i*31 + 7)
	}
	return r
}

// do runs one command to completion and returns its status.
func (r *rawIO) do(tb testing.TB, write bool) {
	c := r.c
	r.itt++
	blocks := uint32(r.size / 512)
	cmd := pdu.SCSICommand{Final: true, Read: !write, Write: write, Attr: pdu.AttrSimple,
		InitiatorTaskTag: r.itt, ExpectedDataTransferLn: uint32(r.size), CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	cmd.CDB[0] = 0x28
	if write {
		cmd.CDB[0] = 0x2a
	}
	binary.BigEndian.PutUint32(cmd.CDB[2:6], r.lba)
	binary.BigEndian.PutUint16(cmd.CDB[7:9], uint16(blocks))
	r.lba = (r.lba + blocks) % r.span
	c.CmdSN++
	var imm []byte
	if write {
		imm = r.payload[:min(r.size, 65536, r.maxRecv)]
	}
	cmd.Marshal(&r.cmd)
	r.cmd.SetLengths(0, len(imm))
	r.send(tb, r.cmd[:], imm)
	for {
		if _, err := io.ReadFull(c.Conn, r.hdr[:]); err != nil {
			tb.Fatal(err)
		}
		h := (*pdu.BHS)(&r.hdr)
		n := h.DataSegmentLength()
		n += pdu.Pad(n)
		if n > len(r.in) {
			tb.Fatalf("data segment of %d bytes", n)
		}
		if _, err := io.ReadFull(c.Conn, r.in[:n]); err != nil {
			tb.Fatal(err)
		}
		switch h.Opcode() {
		case pdu.OpR2T:
			ttt := binary.BigEndian.Uint32(h[20:24])
			off := binary.BigEndian.Uint32(h[40:44])
			length := binary.BigEndian.Uint32(h[44:48])
			var sn uint32
			for done := uint32(0); done < length; sn++ {
				l := min(uint32(r.maxRecv), length-done)
				d := pdu.DataOut{Final: done+l == length, InitiatorTaskTag: r.itt, TargetTransferTag: ttt,
					ExpStatSN: c.ExpStatSN, DataSN: sn, BufferOffset: off + done}
				d.Marshal(&r.dout)
				r.dout.SetLengths(0, int(l))
				r.send(tb, r.dout[:], r.payload[off+done:off+done+l])
				done += l
			}
		case pdu.OpDataIn:
			if h[1]&0x01 != 0 {
				c.ExpStatSN = binary.BigEndian.Uint32(h[24:28]) + 1
				r.lastSt = h[3]
				return
			}
		case pdu.OpSCSIResponse:
			c.ExpStatSN = binary.BigEndian.Uint32(h[24:28]) + 1
			r.lastSt = h[3]
			return
		case pdu.OpNOPIn:
		default:
			tb.Fatalf("unexpected %v", h.Opcode())
		}
	}
}

func (r *rawIO) send(tb testing.TB, hdr, data []byte) {
	if _, err := r.c.Conn.Write(hdr); err != nil {
		tb.Fatal(err)
	}
	if len(data) > 0 {
		if _, err := r.c.Conn.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
}

var dataPathCases = []struct {
	name  string
	write bool
	size  int
}{
	{"READ10_4KiB", false, 4 << 10},
	{"WRITE10_4KiB", true, 4 << 10},
	{"READ10_1MiB", false, 1 << 20},
	{"WRITE10_1MiB", true, 1 << 20},
}

// TestDataPathAllocations proves the steady-state iSCSI data path (PDU
// decode, task set, device server, memory backstore, Data-In/R2T/response
// encoding and the writev) allocates nothing per command.
//
// AllocsPerRun counts every allocation of the process, so goroutines of
// earlier tests that are still winding down count too, and on a starved
// machine a receiver held up for two watchdog ticks is handed over (a new
// goroutine). A measurement is therefore repeated up to three times: an
// allocation on the data path shows in every one of them.
func TestDataPathAllocations(t *testing.T) {
	for _, tc := range dataPathCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRawIO(t, tc.size)
			for i := 0; i < 50; i++ { // warm pools, workers and buffers
				r.do(t, tc.write)
			}
			var got []float64
			for len(got) < 3 {
				allocs := testing.AllocsPerRun(200, func() { r.do(t, tc.write) })
				if r.lastSt != 0 {
					t.Fatalf("status 0x%02x", r.lastSt)
				}
				if allocs == 0 {
					if len(got) > 0 {
						t.Logf("0 allocations per command after measurements of %v", got)
					}
					return
				}
				got = append(got, allocs)
			}
			t.Fatalf("allocations per command in three measurements: %v, want 0", got)
		})
	}
}

func BenchmarkDataPath(b *testing.B) {
	for _, tc := range dataPathCases {
		b.Run(tc.name, func(b *testing.B) {
			r := newRawIO(b, tc.size)
			for i := 0; i < 20; i++ {
				r.do(b, tc.write)
			}
			b.SetBytes(int64(tc.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.do(b, tc.write)
			}
			b.StopTimer()
			if r.lastSt != 0 {
				b.Fatal(fmt.Sprintf("status 0x%02x", r.lastSt))
			}
		})
	}
}
