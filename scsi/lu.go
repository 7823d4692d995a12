package scsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// Limits this device server reports in the Block Limits VPD page (SBC-4
// §6.6.4) and enforces.
const (
	maxTransferBytes  = 8 << 20  // MAXIMUM TRANSFER LENGTH, in bytes
	optTransferBytes  = 1 << 20  // OPTIMAL TRANSFER LENGTH; Linux uses it as max_sectors
	maxWriteSameBytes = 64 << 20 // MAXIMUM WRITE SAME LENGTH, also capped at 0xFFFF blocks
	maxUnmapBytes     = 1 << 30  // MAXIMUM UNMAP LBA COUNT, also capped at 1Mi blocks
	maxUnmapBlocks    = 1 << 20  // libiscsi considers larger explicit limits insane
	maxUnmapDescs     = 256      // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
	maxCAWBlocks      = 255      // MAXIMUM COMPARE AND WRITE LENGTH (one byte)
	chunkBytes        = 1 << 20  // piece size of WRITE SAME, VERIFY and zero fills
	maxSerialLen      = 64       // VPD 80h / T10 vendor ID designator limit we impose
	maxLUNID          = 16383    // flat space addressing (SAM-5 §4.7.7)
	uaQueueLen        = 8        // pending unit attentions kept per I_T nexus
	defaultBlockSize  = 512      // LUConfig.BlockSize zero value
	largeBlockSize    = 4096     // the other supported logical block size
	maxLBPPBExp       = 15       // 4-bit LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
	defaultVendor     = "ISCSITGT"
	defaultProduct    = "VIRTUAL-DISK"
	defaultRevision   = "0001"
)

// LUConfig configures one logical unit. The zero values of optional fields
// are documented defaults.
type LUConfig struct {
	// ID is the LUN, 0..16383. REPORT LUNS uses peripheral device
	// addressing below 256 and flat space addressing above.
	ID uint16
	// Device is the storage; the LU owns it and closes it in Close.
	Device backstore.Device
	// BlockSize is the logical block size, 512 or 4096; 0 means 512. It
	// must be at least Device.Info().LogicalBlockSize when that is set.
	BlockSize uint32
	// ReadOnly write-protects the medium: every write-class command gets
	// DATA PROTECT / WRITE PROTECTED and MODE SENSE reports WP.
	ReadOnly bool
	// Thin enables logical block provisioning management (SBC-4 §4.7):
	// LBPME, UNMAP, WRITE SAME with UNMAP and allocation-aware GET LBA
	// STATUS. The Device must implement backstore.Unmapper and report
	// CanUnmap. LBPRZ is reported only when the device's unmapped ranges
	// read back as zeros.
	Thin bool
	// Removable sets RMB: START STOP UNIT with LOEJ ejects and loads the
	// medium and PREVENT ALLOW MEDIUM REMOVAL is honoured.
	Removable bool
	// Serial is the unit serial number (VPD page 80h), printable ASCII
	// without spaces, at most 64 characters. The LU's NAA identifier
	// (VPD page 83h) is derived from it, so it must be unique and stable.
	Serial string
	// Vendor (8), Product (16) and Revision (4) are the INQUIRY
	// identification strings, printable ASCII; defaults "ISCSITGT",
	// "VIRTUAL-DISK", "0001".
	Vendor, Product, Revision string
	// SanitizeRate, when positive, caps SANITIZE OVERWRITE at this many
	// bytes per second so that a background sanitize leaves bandwidth to
	// the other LUs on the same disk. 0 means no cap.
	SanitizeRate int64
	// StatePath is the file holding saved mode page values (WCE, D_SENSE,
	// SWP). Empty means mode pages cannot be saved. NewLU loads it.
	StatePath string
	// PRStatePath is the file holding persistent reservations activated
	// with APTPL (pr_state.go). Empty means APTPL is not supported
	// (PTPL_C 0). NewLU restores it and fails on a corrupt file.
	PRStatePath string
	// Log receives the LU's messages; nil discards them.
	Log *logrus.Entry
}

// nexusState is what an LU keeps per I_T nexus: its queue of pending unit
// attentions (SAM-5 §5.14) and its PREVENT ALLOW MEDIUM REMOVAL state.
type nexusState struct {
	owner   *Nexus
	ua      [uaQueueLen]ASC
	nua     int
	prevent bool
}

// LU is a logical unit: a direct access block device (SBC-4) over a
// backstore.Device. It is safe for concurrent use; the READ and WRITE
// paths take no lock shared across commands.
type LU struct {
	id       uint16
	dev      backstore.Device
	unmapper backstore.Unmapper
	zeroer   backstore.ZeroWriter
	extents  backstore.ExtentMapper
	resizer  backstore.Resizer

	bs       uint32
	bsShift  uint
	align    uint32 // O_DIRECT alignment of offsets, lengths and buffers; 0 = none
	lbppbExp uint8  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
	capacity atomic.Uint64

	readOnly   bool
	thin       bool
	lbprz      bool
	removable  bool
	rotational bool

	vendor, product, revision string
	serial                    string
	naa                       [8]byte
	statePath                 string
	log                       *logrus.Entry // with the lun field
	baseLog                   *logrus.Entry // as configured

	// Current mode page values read on the I/O path.
	wce    atomic.Bool
	dsense atomic.Bool
	swp    atomic.Bool

	ejected atomic.Bool
	// life counts executing commands so RemoveLU can drain them.
	life luLife
	// uaCount is the number of queued unit attentions over all nexuses:
	// commands look at it before touching nexus.
	uaCount atomic.Int32

	mu    sync.Mutex // guards nexus and saved; serialises MODE SELECT
	nexus map[NexusKey]*nexusState
	saved modeValues

	pr  prUnit       // persistent and SPC-2 reservations (pr.go)
	thr lbpThreshold // provisioning threshold (threshold.go)

	ranges    rangeLock // orders atomic commands against other writes (rangelock.go)
	san       sanitizeState
	sanRate   int64       // SANITIZE OVERWRITE bytes per second, 0 = no cap
	copies    copyManager // EXTENDED COPY results (xcopy.go)
	zeroOnce  sync.Once
	zeros     []byte
	stats     luStats   // counters for LU.Stats (stats.go)
	blockPool sync.Pool // *[]byte of one logical block
	chunkPool sync.Pool // *[]byte of chunkBytes
}

// NewLU validates cfg, loads saved mode pages and returns the logical unit.
func NewLU(cfg LUConfig) (*LU, error) {
	if cfg.Device == nil {
		return nil, errors.New("scsi: LUConfig.Device is nil")
	}
	if cfg.ID > maxLUNID {
		return nil, fmt.Errorf("scsi: LUN %d exceeds %d", cfg.ID, maxLUNID)
	}
	bs := cfg.BlockSize
	if bs == 0 {
		bs = defaultBlockSize
	}
	if bs != defaultBlockSize && bs != largeBlockSize {
		return nil, fmt.Errorf("scsi: LUN %d: block size %d is not 512 or 4096", cfg.ID, bs)
	}
	info := cfg.Device.Info()
	if info.LogicalBlockSize != 0 && (bs < info.LogicalBlockSize || bs%info.LogicalBlockSize != 0) {
		return nil, fmt.Errorf("scsi: LUN %d: block size %d below the device's logical block size %d", cfg.ID, bs, info.LogicalBlockSize)
	}
	if info.IOAlignment > bs {
		return nil, fmt.Errorf("scsi: LUN %d: block size %d below the device's I/O alignment %d", cfg.ID, bs, info.IOAlignment)
	}
	if info.Size < int64(bs) {
		return nil, fmt.Errorf("scsi: LUN %d: device of %d bytes holds no %d-byte block", cfg.ID, info.Size, bs)
	}
	lu := &LU{
		id:         cfg.ID,
		dev:        cfg.Device,
		bs:         bs,
		bsShift:    uint(bits.TrailingZeros32(bs)),
		align:      info.IOAlignment,
		readOnly:   cfg.ReadOnly || info.ReadOnly,
		thin:       cfg.Thin,
		removable:  cfg.Removable,
		rotational: info.Rotational,
		statePath:  cfg.StatePath,
		sanRate:    max(cfg.SanitizeRate, 0),
		nexus:      make(map[NexusKey]*nexusState),
	}
	lu.capacity.Store(uint64(info.Size) >> lu.bsShift)
	var err error
	if lu.vendor, err = inquiryString("Vendor", cfg.Vendor, defaultVendor, 8); err != nil {
		return nil, err
	}
	if lu.product, err = inquiryString("Product", cfg.Product, defaultProduct, 16); err != nil {
		return nil, err
	}
	if lu.revision, err = inquiryString("Revision", cfg.Revision, defaultRevision, 4); err != nil {
		return nil, err
	}
	if err := checkSerial(cfg.Serial); err != nil {
		return nil, err
	}
	lu.serial = cfg.Serial
	lu.naa = naaFromSerial(cfg.Serial)
	if phys := info.PhysicalBlockSize; phys > bs && phys%bs == 0 && bits.OnesCount32(phys/bs) == 1 {
		lu.lbppbExp = uint8(min(bits.TrailingZeros32(phys/bs), maxLBPPBExp))
	}
	lu.unmapper, _ = cfg.Device.(backstore.Unmapper)
	lu.zeroer, _ = cfg.Device.(backstore.ZeroWriter)
	lu.extents, _ = cfg.Device.(backstore.ExtentMapper)
	lu.resizer, _ = cfg.Device.(backstore.Resizer)
	if lu.thin {
		// A write-protected thin LU never unmaps; it still reports its
		// allocation through GET LBA STATUS.
		if !lu.readOnly && (lu.unmapper == nil || !info.CanUnmap) {
			return nil, fmt.Errorf("scsi: LUN %d: thin provisioning needs a device that can unmap", cfg.ID)
		}
		lu.lbprz = info.UnmapZeroes
	}
	lu.initThreshold(cfg.Device)
	lu.log = cfg.Log
	if lu.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		lu.log = logrus.NewEntry(l)
	}
	lu.baseLog = lu.log
	lu.log = lu.log.WithField("lun", cfg.ID)
	lu.saved = defaultModeValues
	if lu.statePath != "" {
		if lu.saved, err = loadModeValues(lu.statePath); err != nil {
			return nil, fmt.Errorf("scsi: LUN %d: %w", cfg.ID, err)
		}
	}
	lu.setCurrent(lu.saved)
	if err := lu.initPR(cfg.PRStatePath); err != nil {
		return nil, fmt.Errorf("scsi: LUN %d: %w", cfg.ID, err)
	}
	lu.blockPool.New = func() any { b := alignedBuf(int(lu.bs)); return &b }
	lu.chunkPool.New = func() any { b := alignedBuf(chunkBytes); return &b }
	return lu, nil
}

func inquiryString(field, v, def string, max int) (string, error) {
	if v == "" {
		return def, nil
	}
	if len(v) > max {
		return "", fmt.Errorf("scsi: LUConfig.%s %q longer than %d bytes", field, v, max)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7E {
			return "", fmt.Errorf("scsi: LUConfig.%s %q is not printable ASCII", field, v)
		}
	}
	return v, nil
}

func checkSerial(s string) error {
	if s == "" {
		return errors.New("scsi: LUConfig.Serial is required")
	}
	if len(s) > maxSerialLen {
		return fmt.Errorf("scsi: LUConfig.Serial longer than %d bytes", maxSerialLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] > 0x7E {
			return fmt.Errorf("scsi: LUConfig.Serial %q must be printable ASCII without spaces", s)
		}
	}
	return nil
}

// ID returns the LUN.
func (lu *LU) ID() uint16 { return lu.id }

// BlockSize returns the logical block size in bytes.
func (lu *LU) BlockSize() uint32 { return lu.bs }

// Capacity returns the number of logical blocks.
func (lu *LU) Capacity() uint64 { return lu.capacity.Load() }

// Close flushes the device, then closes it.
func (lu *LU) Close() error {
	lu.san.stop()
	ferr := lu.dev.Flush(context.Background())
	if ferr != nil {
		ferr = fmt.Errorf("scsi: LUN %d: flush: %w", lu.id, ferr)
	}
	cerr := lu.dev.Close()
	if cerr != nil {
		cerr = fmt.Errorf("scsi: LUN %d: close: %w", lu.id, cerr)
	}
	return errors.Join(ferr, cerr)
}

// Refresh re-reads the size of a resizable device (backstore.Resizer).
// When the capacity changed, every I_T nexus gets the unit attention
// CAPACITY DATA HAS CHANGED (SBC-4 §4.6). It is a no-op for other devices.
func (lu *LU) Refresh() error {
	if lu.resizer == nil {
		return nil
	}
	info, err := lu.resizer.Refresh()
	if err != nil {
		return fmt.Errorf("scsi: LUN %d: refresh: %w", lu.id, err)
	}
	blocks := uint64(max(info.Size, 0)) >> lu.bsShift
	if old := lu.capacity.Swap(blocks); old != blocks {
		lu.log.WithField("blocks", blocks).Info("capacity changed")
		lu.establishUA(ASCCapacityDataChanged, nil)
	}
	return nil
}

// checkRange applies the LBA OUT OF RANGE rule of SBC-4 §4.5: the range
// [lba, lba+blocks) must lie within the capacity. A zero-length range may
// start at the capacity.
func (lu *LU) checkRange(lba, blocks uint64) error {
	if c := lu.capacity.Load(); lba > c || blocks > c-lba {
		return ErrLBAOutOfRange
	}
	return nil
}

// writeProtected returns the DATA PROTECT sense for a write-class command
// on a write-protected medium, or nil: the LU is read-only, the nexus lost
// the single-writer lease, or SWP is set in the Control mode page.
func (lu *LU) writeProtected(n *Nexus) error {
	switch {
	case lu.readOnly:
		return ErrWriteProtected
	case n != nil && n.ReadOnly():
		return ErrWriteProtected
	case lu.swp.Load():
		return ErrSoftwareWriteProtected
	}
	return nil
}

// wp reports the WP bit of the MODE SENSE device-specific parameter as
// seen from nexus n: a nexus without the single-writer lease sees a
// write-protected medium, so that Linux mounts it read-only.
func (lu *LU) wp(n *Nexus) bool { return lu.readOnly || lu.swp.Load() || (n != nil && n.ReadOnly()) }

// ioError turns a backstore error into sense data through
// senseFromDevice and logs our own failures at Error level.
func (lu *LU) ioError(c *Command, err error, op ioOp, lba uint64, hasLBA bool) error {
	if off, ok := backstore.FailedAt(err); ok && hasLBA && uint64(off)>>lu.bsShift >= lba {
		// The device knows which block failed: report that one, not the
		// first block of the command (SBC-4 §4.18.1, INFORMATION field).
		lba = uint64(off) >> lu.bsShift
	}
	s, serious := senseFromDevice(err, op, lba, hasLBA)
	if serious {
		lu.log.WithFields(logrus.Fields{"op": OpCode(c.CDB[0]).String(), "itt": c.Tag, "lba": lba}).
			WithError(err).Error("scsi: backstore failure")
	}
	return s
}

// zeroChunk returns a shared, read-only buffer of zeros.
func (lu *LU) zeroChunk() []byte {
	lu.zeroOnce.Do(func() { lu.zeros = alignedBuf(chunkBytes) })
	return lu.zeros
}

// bufAlign is the boundary of the LU's own buffers: enough for any
// O_DIRECT device (backstore.Info.IOAlignment is at most 4096).
const bufAlign = 4096

// alignedBuf returns n zeroed bytes starting on a bufAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+bufAlign)
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (bufAlign - 1))
	if off != 0 {
		off = bufAlign - off
	}
	return b[off : off+n : off+n]
}

// isAligned reports whether p may be handed to the device as is: it
// starts on the device's I/O alignment (lengths and offsets are whole
// blocks, and the block size is a multiple of the alignment).
func (lu *LU) isAligned(p []byte) bool {
	return lu.align <= 1 || len(p) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%uintptr(lu.align) == 0
}

// readBlocks reads whole blocks at lba into p, through the LU's aligned
// chunk buffer when p itself is not aligned for an O_DIRECT device.
func (lu *LU) readBlocks(ctx context.Context, c *Command, p []byte, lba uint64) error {
	if lu.isAligned(p) {
		if err := lu.dev.ReadAt(ctx, p, int64(lba)<<lu.bsShift); err != nil {
			if err == backstore.ErrWouldBlock {
				return err // Execute leaves the command for a goroutine that may wait
			}
			return lu.ioError(c, err, ioRead, lba, true)
		}
		return nil
	}
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	for done := 0; done < len(p); {
		k := min(len(p)-done, len(*cp))
		at := lba + uint64(done>>lu.bsShift)
		if err := lu.dev.ReadAt(ctx, (*cp)[:k], int64(at)<<lu.bsShift); err != nil {
			if err == backstore.ErrWouldBlock {
				return err
			}
			return lu.ioError(c, err, ioRead, at, true)
		}
		done += copy(p[done:], (*cp)[:k])
	}
	return nil
}

// writeBlocks writes whole blocks from p at lba, bouncing through the
// chunk buffer when p is not aligned for an O_DIRECT device.
func (lu *LU) writeBlocks(ctx context.Context, c *Command, p []byte, lba uint64, flags backstore.WriteFlags) error {
	if lu.isAligned(p) {
		if err := lu.dev.WriteAt(ctx, p, int64(lba)<<lu.bsShift, flags); err != nil {
			return lu.ioError(c, err, ioWrite, lba, true)
		}
		return nil
	}
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	for done := 0; done < len(p); {
		k := copy(*cp, p[done:])
		at := lba + uint64(done>>lu.bsShift)
		if err := lu.dev.WriteAt(ctx, (*cp)[:k], int64(at)<<lu.bsShift, flags); err != nil {
			return lu.ioError(c, err, ioWrite, at, true)
		}
		done += k
	}
	return nil
}

// --- unit attentions and per-nexus state (SAM-5 §5.14, SPC-4 §5.14) ---

// stateFor returns the state of nexus n, creating it when create is set.
// lu.mu must be held.
func (lu *LU) stateFor(n *Nexus, create bool) *nexusState {
	var key NexusKey
	if n != nil {
		key = n.Key
	}
	ns := lu.nexus[key]
	if ns == nil && create {
		ns = &nexusState{owner: n}
		lu.nexus[key] = ns
	}
	return ns
}

// pushUA queues a unit attention; lu.mu must be held. A reset-class
// condition (ASC 29h) supersedes everything queued before it. A duplicate
// is not queued twice and a full queue drops the newest condition.
func (lu *LU) pushUA(ns *nexusState, asc ASC) {
	if asc>>8 == 0x29 {
		lu.uaCount.Add(-int32(ns.nua))
		ns.nua = 0
	}
	for i := 0; i < ns.nua; i++ {
		if ns.ua[i] == asc {
			return
		}
	}
	if ns.nua == uaQueueLen {
		return
	}
	ns.ua[ns.nua] = asc
	ns.nua++
	lu.uaCount.Add(1)
}

// establishUA queues asc for every nexus except the one given.
func (lu *LU) establishUA(asc ASC, except *Nexus) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	for key, ns := range lu.nexus {
		if except != nil && key == except.Key {
			continue
		}
		lu.pushUA(ns, asc)
	}
}

// takeUA removes and returns the oldest unit attention of nexus n. The
// common case, nothing pending anywhere on this LU, is one atomic load.
func (lu *LU) takeUA(n *Nexus) (ASC, bool) {
	if lu.uaCount.Load() == 0 {
		return 0, false
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.stateFor(n, false)
	if ns == nil || ns.nua == 0 {
		return 0, false
	}
	asc := ns.ua[0]
	copy(ns.ua[:], ns.ua[1:ns.nua])
	ns.nua--
	lu.uaCount.Add(-1)
	return asc, true
}

// addNexus registers a new I_T nexus with POWER ON, RESET, OR BUS DEVICE
// RESET OCCURRED pending (SAM-5 §5.14).
func (lu *LU) addNexus(n *Nexus) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.stateFor(n, true)
	ns.owner = n
	ns.prevent = false
	lu.pushUA(ns, ASCPowerOnResetOccurred)
}

// dropNexus forgets nexus n, its unit attentions and its PREVENT state,
// unless another nexus with the same key replaced it meanwhile (then it
// returns false).
func (lu *LU) dropNexus(n *Nexus) bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.nexus[n.Key]
	if ns != nil && ns.owner != nil && ns.owner != n {
		return false
	}
	if ns != nil {
		lu.uaCount.Add(-int32(ns.nua))
		delete(lu.nexus, n.Key)
	}
	lu.copies.forget(n.Key)
	return true
}

// prevented reports whether any nexus prevents medium removal. lu.mu must
// be held.
func (lu *LU) prevented() bool {
	for _, ns := range lu.nexus {
		if ns.prevent {
			return true
		}
	}
	return false
}

// reset applies the device-server side of a LOGICAL UNIT RESET or target
// reset (SAM-5 §6.6): unit attention asc for every nexus, PREVENT cleared,
// mode pages back to their saved values.
func (lu *LU) reset(asc ASC) {
	lu.mu.Lock()
	for _, ns := range lu.nexus {
		ns.prevent = false
		lu.pushUA(ns, asc)
	}
	lu.setCurrent(lu.saved)
	lu.mu.Unlock()
	lu.rearmThreshold()
	lu.prReset()
}
