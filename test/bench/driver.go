package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iscsi-target/iscsi-target/target/pdu"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// Driver is a small pipelined iSCSI initiator used for what the libiscsi
// tools do not report: per-command latency percentiles, and many sessions
// at once for the memory measurements. It logs in with the targettest raw
// client, then keeps up to a queue depth of READ(10)/WRITE(10) commands in
// flight, answering R2Ts with Data-Out and dropping Data-In payloads.
type Driver struct {
	c   *targettest.Client
	nc  net.Conn
	br  *bufio.Reader
	lun uint64

	maxRecv    int  // target's MaxRecvDataSegmentLength
	firstBurst int  // FirstBurstLength
	immediate  bool // ImmediateData=Yes

	wmu  sync.Mutex // serialises PDU writes
	wbuf net.Buffers

	mu       sync.Mutex
	cond     sync.Cond
	cmdSN    uint32
	maxCmdSN uint32
	expStat  uint32
	inflight map[uint32]*op
	nextITT  uint32
	err      error
	slots    chan struct{} // one token per free queue slot
}

type op struct {
	itt   uint32
	start time.Time
	write bool
	data  []byte // write payload
}

// DialFunc opens the TCP connection to the portal (in the right network
// namespace).
type DialFunc func() (net.Conn, error)

// NewDriver dials, logs in to target iqn with initiator port isid, and
// returns a driver for LUN lun.
func NewDriver(dial DialFunc, iqn string, lun uint64, isid pdu.ISID, initiator string) (*Driver, error) {
	nc, err := dial()
	if err != nil {
		return nil, err
	}
	c := targettest.NewClient(nc)
	c.ISID = isid
	if initiator != "" {
		c.InitiatorName = initiator
	}
	c.Timeout = 20 * time.Second
	if err := c.Login(targettest.LoginOptions{Target: iqn, Keys: pdu.Keys{
		{Key: "MaxBurstLength", Value: "1048576"}, {Key: "FirstBurstLength", Value: "65536"},
		{Key: "MaxRecvDataSegmentLength", Value: "262144"},
	}}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	// Clear the unit attentions a new I_T nexus starts with (power on,
	// reset) before commands are pipelined.
	for i := 0; ; i++ {
		res, err := c.Command(make([]byte, 6), nil, 0, targettest.CommandOptions{LUN: lun << 48})
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("TEST UNIT READY: %w", err)
		}
		if res.Status == 0 {
			break
		}
		if i == 8 {
			nc.Close()
			return nil, fmt.Errorf("TEST UNIT READY: status 0x%02x, sense % x", res.Status, res.Sense)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	d := &Driver{c: c, nc: nc, br: bufio.NewReaderSize(nc, 256<<10), lun: lun,
		cmdSN: c.CmdSN, maxCmdSN: c.MaxCmdSN, expStat: c.ExpStatSN, inflight: map[uint32]*op{}, nextITT: 1}
	d.cond.L = &d.mu
	d.maxRecv = c.TargetMaxRecv
	d.firstBurst, _ = strconv.Atoi(c.Params["FirstBurstLength"])
	if d.firstBurst == 0 {
		d.firstBurst = 65536
	}
	d.immediate = c.Params["ImmediateData"] != "No"
	return d, nil
}

// Close drops the connection (no logout: the measurements only need the
// target to tear the session down).
func (d *Driver) Close() error { return d.nc.Close() }

// Conn returns the connection.
func (d *Driver) Conn() net.Conn { return d.nc }

// IOSpec describes one latency run.
type IOSpec struct {
	Write      bool
	Size       int  // bytes per command, a multiple of 512
	Random     bool // random aligned offsets; else sequential
	Depth      int
	Duration   time.Duration
	LUNBlocks  uint64 // capacity in 512-byte blocks
	MaxOps     int    // stop after this many completions (0: no limit)
	RecordLats bool
}

// IOResult is the outcome of a run.
type IOResult struct {
	Ops     int
	Elapsed time.Duration
	Lat     []time.Duration // per command, when recorded
}

// Percentile returns the p-th percentile (0..100) of the recorded latencies.
func (r *IOResult) Percentile(p float64) time.Duration {
	return percentile(r.Lat, p)
}

func percentile(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// Run drives the workload and returns its latencies.
func (d *Driver) Run(spec IOSpec) (*IOResult, error) {
	if spec.Depth < 1 {
		spec.Depth = 1
	}
	blocks := uint64(spec.Size / 512)
	if blocks == 0 || spec.LUNBlocks < blocks {
		return nil, errors.New("bench: bad I/O size")
	}
	payload := make([]byte, spec.Size)
	for i := range payload {
		payload[i] = byte(i*7 + 1)
	}
	res := &IOResult{}
	lats := make(chan time.Duration, spec.Depth*2)
	readerErr := make(chan error, 1)
	go func() { readerErr <- d.readLoop(lats) }()
	var collected sync.WaitGroup
	collected.Add(1)
	go func() {
		defer collected.Done()
		for l := range lats {
			res.Ops++
			if spec.RecordLats {
				res.Lat = append(res.Lat, l)
			}
		}
	}()
	slots := make(chan struct{}, spec.Depth)
	for range spec.Depth {
		slots <- struct{}{}
	}
	d.mu.Lock()
	d.slots = slots
	d.mu.Unlock()
	start := time.Now()
	deadline := start.Add(spec.Duration)
	span := spec.LUNBlocks / blocks
	next := uint64(0)
	issued := 0
	var err error
	for time.Now().Before(deadline) && (spec.MaxOps == 0 || issued < spec.MaxOps) {
		select {
		case <-slots:
		case err = <-readerErr:
		}
		if err != nil {
			break
		}
		var lba uint64
		if spec.Random {
			lba = rand.Uint64N(span) * blocks
		} else {
			lba = (next % span) * blocks
			next++
		}
		if e := d.issue(spec.Write, lba, uint32(blocks), payload); e != nil {
			err = e
			break
		}
		issued++
	}
	// Wait for the commands in flight.
	for i := 0; err == nil && i < spec.Depth; i++ {
		select {
		case <-slots:
		case err = <-readerErr:
		case <-time.After(30 * time.Second):
			err = errors.New("bench: commands did not complete")
		}
	}
	res.Elapsed = time.Since(start)
	d.stopReader()
	if err == nil {
		if e := <-readerErr; e != nil && !errors.Is(e, errReaderStopped) {
			err = e
		}
	}
	close(lats)
	collected.Wait()
	return res, err
}

var errReaderStopped = errors.New("reader stopped")

func (d *Driver) stopReader() {
	// A NOP-Out with a reply wanted marks the end; the reader returns on
	// its NOP-In.
	d.mu.Lock()
	itt := d.nextITT
	d.nextITT++
	sn := d.cmdSN
	exp := d.expStat
	d.mu.Unlock()
	n := pdu.NOPOut{Immediate: true, InitiatorTaskTag: itt | 0x80000000, TargetTransferTag: pdu.ReservedTag,
		CmdSN: sn, ExpStatSN: exp}
	var h pdu.BHS
	n.Marshal(&h)
	_ = d.writePDU(&h, nil)
}

func (d *Driver) writePDU(h *pdu.BHS, data []byte) error {
	h.SetLengths(0, len(data))
	d.wmu.Lock()
	defer d.wmu.Unlock()
	var pad [3]byte
	d.wbuf = append(d.wbuf[:0], h[:])
	if len(data) > 0 {
		d.wbuf = append(d.wbuf, data)
		if p := pdu.Pad(len(data)); p > 0 {
			d.wbuf = append(d.wbuf, pad[:p])
		}
	}
	_ = d.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	b := d.wbuf
	_, err := b.WriteTo(d.nc)
	return err
}

func (d *Driver) issue(write bool, lba uint64, blocks uint32, payload []byte) error {
	d.mu.Lock()
	for d.err == nil && serialLess(d.maxCmdSN, d.cmdSN) {
		d.cond.Wait()
	}
	if d.err != nil {
		err := d.err
		d.mu.Unlock()
		return err
	}
	o := &op{itt: d.nextITT, write: write, data: payload, start: time.Now()}
	d.nextITT = (d.nextITT + 1) & 0x7fffffff
	d.inflight[o.itt] = o
	sn := d.cmdSN
	d.cmdSN++
	exp := d.expStat
	d.mu.Unlock()

	size := int(blocks) * 512
	cmd := pdu.SCSICommand{Final: true, Read: !write, Write: write, Attr: pdu.AttrSimple, LUN: d.lunField(),
		InitiatorTaskTag: o.itt, ExpectedDataTransferLn: uint32(size), CmdSN: sn, ExpStatSN: exp}
	op10 := byte(0x28)
	if write {
		op10 = 0x2a
	}
	cmd.CDB[0] = op10
	binary.BigEndian.PutUint32(cmd.CDB[2:6], uint32(lba))
	binary.BigEndian.PutUint16(cmd.CDB[7:9], uint16(blocks))
	var imm []byte
	if write && d.immediate {
		imm = payload[:min(size, d.firstBurst, d.maxRecv)]
	}
	var h pdu.BHS
	cmd.Marshal(&h)
	return d.writePDU(&h, imm)
}

// lunField encodes a LUN below 256 in the single-level format (SAM).
func (d *Driver) lunField() uint64 { return d.lun << 48 }

// readLoop receives responses until the closing NOP-In or an error.
func (d *Driver) readLoop(lats chan<- time.Duration) (err error) {
	defer func() {
		if err != nil && !errors.Is(err, errReaderStopped) {
			d.mu.Lock()
			d.err = err
			d.cond.Broadcast()
			d.mu.Unlock()
		}
	}()
	var hdr pdu.Header
	scratch := make([]byte, 1<<20)
	for {
		_ = d.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := pdu.ReadHeader(d.br, &hdr, pdu.Digests{}, 16<<20); err != nil {
			return err
		}
		h := &hdr.BHS
		if n := h.DataSegmentLength(); n > 0 {
			if err := pdu.DiscardData(d.br, n, scratch, pdu.Digests{}); err != nil {
				return err
			}
		}
		statSN := binary.BigEndian.Uint32(h[24:28])
		expCmd := binary.BigEndian.Uint32(h[28:32])
		maxCmd := binary.BigEndian.Uint32(h[32:36])
		itt := h.InitiatorTaskTag()
		done := false
		switch h.Opcode() {
		case pdu.OpDataIn:
			done = h[1]&0x01 != 0
			if done && h[3] != 0 {
				return fmt.Errorf("bench: command failed with status 0x%02x", h[3])
			}
		case pdu.OpSCSIResponse:
			if h[3] != 0 || h[2] != 0 {
				return fmt.Errorf("bench: command failed: response %d status 0x%02x", h[2], h[3])
			}
			done = true
		case pdu.OpR2T:
			var r pdu.R2T
			_ = r.Unmarshal(h)
			d.mu.Lock()
			o := d.inflight[r.InitiatorTaskTag]
			d.mu.Unlock()
			if o == nil {
				return fmt.Errorf("bench: R2T for unknown ITT 0x%x", r.InitiatorTaskTag)
			}
			if err := d.sendData(o, r.TargetTransferTag, r.BufferOffset, r.DesiredDataTransferLength); err != nil {
				return err
			}
		case pdu.OpNOPIn:
			if itt&0x80000000 != 0 && itt != pdu.ReservedTag {
				d.track(statSN+1, expCmd, maxCmd)
				return errReaderStopped
			}
			if ttt := binary.BigEndian.Uint32(h[20:24]); ttt != pdu.ReservedTag {
				d.mu.Lock()
				sn, exp := d.cmdSN, d.expStat
				d.mu.Unlock()
				out := pdu.NOPOut{Immediate: true, InitiatorTaskTag: pdu.ReservedTag, TargetTransferTag: ttt,
					CmdSN: sn, ExpStatSN: exp}
				var oh pdu.BHS
				out.Marshal(&oh)
				if err := d.writePDU(&oh, nil); err != nil {
					return err
				}
			}
			continue
		case pdu.OpReject:
			return fmt.Errorf("bench: PDU rejected, reason 0x%02x", h[2])
		case pdu.OpAsyncMessage:
		default:
			return fmt.Errorf("bench: unexpected %v", h.Opcode())
		}
		if done {
			d.track(statSN+1, expCmd, maxCmd)
			d.mu.Lock()
			o := d.inflight[itt]
			delete(d.inflight, itt)
			d.mu.Unlock()
			if o == nil {
				return fmt.Errorf("bench: response for unknown ITT 0x%x", itt)
			}
			lats <- time.Since(o.start)
			d.mu.Lock()
			slots := d.slots
			d.mu.Unlock()
			slots <- struct{}{}
		} else if h.Opcode() != pdu.OpDataIn {
			d.track(0, expCmd, maxCmd)
		}
	}
}

func (d *Driver) track(expStat, expCmd, maxCmd uint32) {
	d.mu.Lock()
	if expStat != 0 && serialLess(d.expStat, expStat) {
		d.expStat = expStat
	}
	if serialLess(d.maxCmdSN, maxCmd) {
		d.maxCmdSN = maxCmd
	}
	_ = expCmd
	d.cond.Broadcast()
	d.mu.Unlock()
}

func (d *Driver) sendData(o *op, ttt, off, length uint32) error {
	var sn uint32
	seg := uint32(d.maxRecv)
	for done := uint32(0); done < length; {
		l := min(seg, length-done)
		d.mu.Lock()
		exp := d.expStat
		d.mu.Unlock()
		out := pdu.DataOut{Final: done+l == length, InitiatorTaskTag: o.itt, TargetTransferTag: ttt,
			ExpStatSN: exp, DataSN: sn, BufferOffset: off + done}
		var h pdu.BHS
		out.Marshal(&h)
		if err := d.writePDU(&h, o.data[off+done:off+done+l]); err != nil {
			return err
		}
		sn++
		done += l
	}
	return nil
}

// serialLess is a < b in 32-bit serial arithmetic.
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }
