package scsi

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// recDevice wraps a Memory device, records write flags and flushes, and
// can inject errors.
type recDevice struct {
	*backstore.Memory
	mu        sync.Mutex
	flags     []backstore.WriteFlags
	flushes   int
	unmaps    [][2]int64
	readErr   error
	writeErr  error
	flushErr  error
	noZeroer  bool
	zeroCalls int
}

func (d *recDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	if d.readErr != nil {
		return d.readErr
	}
	return d.Memory.ReadAt(ctx, p, off)
}

func (d *recDevice) WriteAt(ctx context.Context, p []byte, off int64, f backstore.WriteFlags) error {
	d.mu.Lock()
	d.flags = append(d.flags, f)
	err := d.writeErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.Memory.WriteAt(ctx, p, off, f)
}

func (d *recDevice) Flush(ctx context.Context) error {
	d.mu.Lock()
	d.flushes++
	err := d.flushErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.Memory.Flush(ctx)
}

func (d *recDevice) Unmap(ctx context.Context, off, n int64) error {
	d.mu.Lock()
	d.unmaps = append(d.unmaps, [2]int64{off, n})
	d.mu.Unlock()
	return d.Memory.Unmap(ctx, off, n)
}

func (d *recDevice) lastFlags() backstore.WriteFlags {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.flags) == 0 {
		return 0xFF
	}
	return d.flags[len(d.flags)-1]
}

// env is one router with one LU over a recording memory device, and two
// nexuses.
type env struct {
	t   testing.TB
	dev *recDevice
	lu  *LU
	r   *Router
	nx  *Nexus
	nx2 *Nexus
}

const testBlocks = 2048 // 1 MiB of 512-byte blocks

func newEnv(t testing.TB, mod func(*LUConfig)) *env {
	t.Helper()
	cfg := LUConfig{ID: 0, BlockSize: 512, Serial: "SN0001"}
	if mod != nil {
		mod(&cfg)
	}
	size := int64(testBlocks) * 512
	if cfg.BlockSize == 4096 {
		size = int64(testBlocks) * 4096
	}
	dev := &recDevice{Memory: backstore.NewMemory(size)}
	cfg.Device = dev
	lu, err := NewLU(cfg)
	if err != nil {
		t.Fatalf("NewLU: %v", err)
	}
	r, err := NewRouter([]*LU{lu})
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	e := &env{t: t, dev: dev, lu: lu, r: r,
		nx: &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:init1", ISID: [6]byte{0x80, 0, 0, 0, 0, 1},
			TargetName: "iqn.2026-01.test:tgt", TPGT: 1}, RelativeTargetPortID: 1},
		nx2: &Nexus{Key: NexusKey{InitiatorName: "iqn.2026-01.test:init2", ISID: [6]byte{0x80, 0, 0, 0, 0, 2},
			TargetName: "iqn.2026-01.test:tgt", TPGT: 1}, RelativeTargetPortID: 1},
	}
	return e
}

// login adds both nexuses and clears their power-on unit attention.
func (e *env) login() *env {
	e.r.NexusAdded(e.nx)
	e.r.NexusAdded(e.nx2)
	for _, n := range []*Nexus{e.nx, e.nx2} {
		c := e.runOn(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		if c.Status != StatusCheckCondition {
			e.t.Fatalf("first TUR: got %v, want the power-on unit attention", c.Status)
		}
	}
	return e
}

// run sends a command on nexus 1 to LUN 0.
func (e *env) run(cdb, out []byte, inLen int) *Command {
	return e.runOn(e.nx, 0, cdb, out, inLen)
}

// runOn plays the transport: Plan, move min(XferLen, ExpectedLength)
// bytes, Execute. ExpectedLength is len(out) for writes and inLen for
// reads.
func (e *env) runOn(n *Nexus, lun uint16, cdb, out []byte, inLen int) *Command {
	c := &Command{Nexus: n, LUN: EncodeLUN(lun), CDB: cdb}
	c.ExpectedLength = uint32(inLen)
	if out != nil {
		c.ExpectedLength = uint32(len(out))
	}
	return e.exec(c, out)
}

func (e *env) exec(c *Command, out []byte) *Command {
	e.r.Plan(c)
	if c.Done() {
		return c
	}
	want := min(c.XferLen, c.ExpectedLength)
	switch c.Dir {
	case DirOut:
		c.DataOut = out[:min(int(want), len(out))]
	case DirIn:
		c.DataIn = make([]byte, want)
	}
	e.r.Execute(context.Background(), c)
	if !c.Done() {
		e.t.Fatal("Execute did not complete the command")
	}
	return c
}

// dataIn returns the bytes the transport would send.
func dataIn(c *Command) []byte {
	return c.DataIn[:min(int(c.XferLen), len(c.DataIn))]
}

// parseSense decodes fixed or descriptor sense data.
func parseSense(b []byte) (key SenseKey, asc ASC, info uint64, infoValid bool) {
	if len(b) < 8 {
		return 0xFF, 0xFFFF, 0, false
	}
	switch b[0] & 0x7F {
	case 0x70, 0x71:
		key = SenseKey(b[2] & 0x0F)
		asc = ASC(binary.BigEndian.Uint16(b[12:14]))
		info, infoValid = uint64(binary.BigEndian.Uint32(b[3:7])), b[0]&0x80 != 0
	case 0x72, 0x73:
		key = SenseKey(b[1] & 0x0F)
		asc = ASC(binary.BigEndian.Uint16(b[2:4]))
		for p := 8; p+2 <= len(b); p += 2 + int(b[p+1]) {
			if b[p] == 0 && p+12 <= len(b) {
				info, infoValid = binary.BigEndian.Uint64(b[p+4:p+12]), b[p+2]&0x80 != 0
			}
		}
	default:
		return 0xFF, 0xFFFF, 0, false
	}
	return key, asc, info, infoValid
}

// check asserts a command's status and, for CHECK CONDITION, its sense.
func check(t testing.TB, c *Command, status Status, key SenseKey, asc ASC) {
	t.Helper()
	if c.Status != status {
		k, a, _, _ := parseSense(c.SenseData())
		t.Fatalf("CDB % x: got status %v (%v/%v), want %v", c.CDB, c.Status, k, a, status)
	}
	if status != StatusCheckCondition {
		if c.SenseLen != 0 {
			t.Fatalf("CDB % x: status %v with %d sense bytes", c.CDB, status, c.SenseLen)
		}
		return
	}
	k, a, _, _ := parseSense(c.SenseData())
	if k != key || a != asc {
		t.Fatalf("CDB % x: got sense %v/%v, want %v/%v", c.CDB, k, a, key, asc)
	}
}

func good(t testing.TB, c *Command) { t.Helper(); check(t, c, StatusGood, 0, 0) }

// CDB builders.

func cdb6(op OpCode, lba uint32, n uint8) []byte {
	return []byte{byte(op), byte(lba>>16) & 0x1F, byte(lba >> 8), byte(lba), n, 0}
}

func cdb10(op OpCode, b1 byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = byte(op), b1
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func cdb12(op OpCode, b1 byte, lba, n uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1] = byte(op), b1
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint32(c[6:], n)
	return c
}

func cdb16(op OpCode, b1 byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = byte(op), b1
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func inquiryCDBBytes(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{byte(OpInquiry), 0, page, byte(alloc >> 8), byte(alloc), 0}
	if evpd {
		c[1] = 1
	}
	return c
}

func modeSense6(dbd bool, pc, page, sub, alloc byte) []byte {
	c := []byte{byte(OpModeSense6), 0, pc<<6 | page, sub, alloc, 0}
	if dbd {
		c[1] = 0x08
	}
	return c
}

func rsocBytes(rctd bool, options, op byte, sa uint16, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1], c[2], c[3] = byte(OpMaintenanceIn), SAReportSupportedOpcodes, options, op
	if rctd {
		c[2] |= 0x80
	}
	binary.BigEndian.PutUint16(c[4:], sa)
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

func readCap16CDB(alloc uint32) []byte {
	c := cdb16(OpServiceActionIn, SAReadCapacity16, 0, alloc)
	return c
}

func unmapParams(descs ...[2]uint64) []byte {
	b := make([]byte, 8+16*len(descs))
	binary.BigEndian.PutUint16(b[0:], uint16(len(b)-2))
	binary.BigEndian.PutUint16(b[2:], uint16(16*len(descs)))
	for i, d := range descs {
		binary.BigEndian.PutUint64(b[8+16*i:], d[0])
		binary.BigEndian.PutUint32(b[8+16*i+8:], uint32(d[1]))
	}
	return b
}

func unmapCDBBytes(paramLen uint16) []byte {
	return cdb10(OpUnmap, 0, 0, paramLen)
}

func fill(n int, v byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}
