package scsi

import (
	"context"
	"errors"
	"math"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// --- WRITE SAME (SBC-4 §5.46, §5.47) ---

// planWriteSame validates a WRITE SAME: no protection information, no
// ANCHOR (ANC_SUP is zero), UNMAP only on thin LUs, NUMBER OF LOGICAL
// BLOCKS zero meaning "to the last LBA" (WSNZ is zero) and at most
// MAXIMUM WRITE SAME LENGTH blocks. The Data-Out is exactly one block
// unless NDOB is set; another iSCSI expected length is refused before data
// moves (libiscsi WriteSame*.InvalidDataOutSize).
func planWriteSame(lu *LU, c *Command) error {
	b := decodeBlock(c.CDB)
	if b.Protect != 0 {
		return invalidCDB(1, 7)
	}
	if b.Anchor {
		return invalidCDB(1, 4)
	}
	if b.Unmap && !lu.thin {
		return invalidCDB(1, 3)
	}
	capacity := lu.capacity.Load()
	if b.LBA > capacity {
		return ErrLBAOutOfRange
	}
	n := uint64(b.Blocks)
	if n == 0 {
		n = capacity - b.LBA
	}
	if err := lu.checkRange(b.LBA, n); err != nil {
		return err
	}
	if n > uint64(lu.maxWSBlocks()) {
		return invalidCDB(lengthByte(OpCode(c.CDB[0])), -1)
	}
	b.Blocks = uint32(n)
	c.state.blk = b
	if n == 0 {
		return errPlanDone
	}
	if b.NDOB {
		return nil
	}
	c.Dir, c.XferLen = DirOut, lu.bs
	if c.ExpectedLength != lu.bs {
		return ErrInvalidFieldInIU
	}
	return nil
}

// execWriteSame writes the block over the range in large pieces. With
// the UNMAP bit (thin LUs only, see planWriteSame) the range is
// deallocated instead, whatever the block holds, as Linux, LIO, tgt and
// libiscsi's WriteSame*.UnmapUntilEnd expect: whole unmap granules are
// unmapped and, when unmapped blocks read as zeros (LBPRZ), the partial
// pieces are zero-filled so that reads agree.
func execWriteSame(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	var pattern []byte
	if !b.NDOB {
		if len(c.DataOut) < int(lu.bs) {
			return ErrInvalidFieldInIU
		}
		pattern = c.DataOut[:lu.bs]
	}
	zero := pattern == nil || allZero(pattern)
	s := lu.lockWrite(b.LBA, uint64(b.Blocks), false)
	defer lu.unlockWrite(s, false)
	var err error
	switch {
	case b.Unmap:
		err = lu.unmapRange(ctx, c, b.LBA, uint64(b.Blocks))
	case zero:
		err = lu.zeroRange(ctx, c, b.LBA, uint64(b.Blocks))
	default:
		err = lu.writePattern(ctx, c, pattern, b.LBA, uint64(b.Blocks))
	}
	if err != nil {
		return err
	}
	return lu.writeThrough(ctx, c)
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// writeThrough flushes after operations that bypass WriteFUA (pattern
// pieces, zeroing, unmapping) when the write cache is disabled: with WCE
// zero nothing may be volatile at GOOD.
func (lu *LU) writeThrough(ctx context.Context, c *Command) error {
	if lu.wce.Load() {
		return nil
	}
	return lu.flush(ctx, c)
}

// writePattern fills a chunk with copies of the block and writes it over
// the range piece by piece, checking ctx between pieces.
func (lu *LU) writePattern(ctx context.Context, c *Command, pattern []byte, lba, n uint64) error {
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	chunk := (*cp)[:min(uint64(len(*cp)), n<<lu.bsShift)]
	for i := 0; i < len(chunk); i += len(pattern) {
		copy(chunk[i:], pattern)
	}
	return lu.writeRepeated(ctx, c, chunk, lba, n)
}

// writeRepeated writes buf (whole blocks) again and again over [lba, lba+n).
func (lu *LU) writeRepeated(ctx context.Context, c *Command, buf []byte, lba, n uint64) error {
	per := uint64(len(buf)) >> lu.bsShift
	for done := uint64(0); done < n; {
		if ctx.Err() != nil {
			return ErrCommandAborted
		}
		k := min(per, n-done)
		if err := lu.dev.WriteAt(ctx, buf[:k<<lu.bsShift], int64((lba+done)<<lu.bsShift), 0); err != nil {
			return lu.ioError(c, err, ioWrite, lba+done, true)
		}
		done += k
	}
	return nil
}

// zeroRange writes zeros over [lba, lba+n): with the device's ZeroWriter
// when it has one (no data transfer), else from a shared zero chunk.
func (lu *LU) zeroRange(ctx context.Context, c *Command, lba, n uint64) error {
	if n == 0 {
		return nil
	}
	if lu.zeroer != nil {
		err := lu.zeroer.WriteZeroes(ctx, int64(lba<<lu.bsShift), int64(n<<lu.bsShift))
		if err == nil {
			return nil
		}
		if !errors.Is(err, backstore.ErrUnsupported) {
			return lu.ioError(c, err, ioWrite, lba, true)
		}
	}
	return lu.writeRepeated(ctx, c, lu.zeroChunk(), lba, n)
}

// unmapRange deallocates [lba, lba+n) on a thin LU. Only whole unmap
// granules (physical blocks) go to the device's Unmap, since a device may
// ignore a partial one; when unmapped blocks must read as zeros (LBPRZ),
// the partial head and tail are zeroed instead. Without LBPRZ their
// content is indeterminate by definition and is left alone.
func (lu *LU) unmapRange(ctx context.Context, c *Command, lba, n uint64) error {
	g := uint64(lu.lbppb())
	start, end := lba, lba+n
	as, ae := (start+g-1)/g*g, end/g*g
	if as >= ae {
		if lu.lbprz {
			return lu.zeroRange(ctx, c, start, n)
		}
		return nil
	}
	if lu.lbprz {
		if err := lu.zeroRange(ctx, c, start, as-start); err != nil {
			return err
		}
		if err := lu.zeroRange(ctx, c, ae, end-ae); err != nil {
			return err
		}
	}
	err := backstore.ErrUnsupported
	if lu.unmapper != nil {
		err = lu.unmapper.Unmap(ctx, int64(as<<lu.bsShift), int64((ae-as)<<lu.bsShift))
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backstore.ErrUnsupported):
		if lu.lbprz {
			return lu.zeroRange(ctx, c, as, ae-as)
		}
		return nil
	}
	return lu.ioError(c, err, ioWrite, as, true)
}

// --- UNMAP (SBC-4 §5.30) ---

// UNMAP parameter list layout (SBC-4 §5.30.2).
const (
	unmapHeaderLen = 8
	unmapDescLen   = 16
)

func planUnmap(_ *LU, c *Command) error {
	q := decodeUnmap(c.CDB)
	c.state.um = q
	if q.Anchor {
		return invalidCDB(1, 0) // ANC_SUP is zero
	}
	if q.ParamLen == 0 {
		return errPlanDone
	}
	if q.ParamLen < unmapHeaderLen {
		return ErrParamListLength
	}
	c.Dir, c.XferLen = DirOut, uint32(q.ParamLen)
	return nil
}

// execUnmap validates the whole parameter list, then deallocates each
// range. The block descriptor data is bounded by what arrived; a partial
// trailing descriptor is ignored. More than MAXIMUM UNMAP BLOCK
// DESCRIPTOR COUNT descriptors, or more than MAXIMUM UNMAP LBA COUNT
// blocks in total, is INVALID FIELD IN PARAMETER LIST; a range beyond the
// capacity is LBA OUT OF RANGE.
func execUnmap(ctx context.Context, lu *LU, c *Command) error {
	data := c.DataOut[:min(len(c.DataOut), int(c.state.um.ParamLen))]
	if len(data) < unmapHeaderLen {
		return ErrParamListLength
	}
	bdLen := min(int(be.Uint16(data[2:4])), len(data)-unmapHeaderLen)
	descs := data[unmapHeaderLen : unmapHeaderLen+bdLen/unmapDescLen*unmapDescLen]
	if len(descs)/unmapDescLen > maxUnmapDescs {
		return invalidParam(2, -1)
	}
	var total uint64
	for i := 0; i < len(descs); i += unmapDescLen {
		lba, n := be.Uint64(descs[i:i+8]), uint64(be.Uint32(descs[i+8:i+12]))
		if err := lu.checkRange(lba, n); err != nil {
			return err
		}
		if total += n; total > uint64(lu.maxUnmapLBAs()) {
			return invalidParam(unmapHeaderLen+i+8, -1)
		}
	}
	for i := 0; i < len(descs); i += unmapDescLen {
		lba, n := be.Uint64(descs[i:i+8]), uint64(be.Uint32(descs[i+8:i+12]))
		if n == 0 {
			continue
		}
		s := lu.lockWrite(lba, n, false)
		err := lu.unmapRange(ctx, c, lba, n)
		lu.unlockWrite(s, false)
		if err != nil {
			return err
		}
	}
	return lu.writeThrough(ctx, c)
}

// --- GET LBA STATUS (SBC-4 §5.7) ---

// Provisioning status of an LBA status descriptor (SBC-4 table 40).
const (
	lbaMapped      = 0x0
	lbaDeallocated = 0x1
	maxLBADescs    = 1024 // descriptors per response
	lbaStatusHdr   = 8
	lbaStatusDesc  = 16
)

func planGetLBAStatus(lu *LU, c *Command) error {
	q := decodeLBAStatus(c.CDB)
	c.state.gls = q
	if q.LBA >= lu.capacity.Load() {
		return ErrLBAOutOfRange
	}
	planDataIn(c, q.AllocLen)
	return nil
}

type lbaRun struct {
	lba, n uint64
	status uint8
}

// execGetLBAStatus reports the provisioning status from the starting LBA
// on. A thin LU asks the device's ExtentMapper; a block partly inside a
// hole counts as mapped. Without a mapper, or on a fully provisioned LU,
// every block is mapped.
func execGetLBAStatus(ctx context.Context, lu *LU, c *Command) error {
	q := c.state.gls
	capacity := lu.capacity.Load()
	maxDescs := 1
	if q.AllocLen > lbaStatusHdr+lbaStatusDesc {
		maxDescs = min(int(q.AllocLen-lbaStatusHdr)/lbaStatusDesc, maxLBADescs)
	}
	runs := []lbaRun{{lba: q.LBA, n: capacity - q.LBA, status: lbaMapped}}
	if lu.thin && lu.extents != nil {
		r, err := lu.lbaRuns(ctx, q.LBA, capacity, maxDescs)
		if err != nil && !errors.Is(err, backstore.ErrUnsupported) {
			return lu.ioError(c, err, ioRead, q.LBA, true)
		}
		if err == nil && len(r) > 0 {
			runs = r
		}
	}
	out := make([]byte, lbaStatusHdr, lbaStatusHdr+lbaStatusDesc*maxDescs)
	for _, r := range runs {
		for r.n > 0 && len(out) < cap(out) {
			k := min(r.n, math.MaxUint32)
			var d [lbaStatusDesc]byte
			be.PutUint64(d[0:8], r.lba)
			be.PutUint32(d[8:12], uint32(k))
			d[12] = r.status
			out = append(out, d[:]...)
			r.lba, r.n = r.lba+k, r.n-k
		}
	}
	be.PutUint32(out[0:4], uint32(len(out)-4))
	respond(c, out)
	return nil
}

// lbaRuns converts the device's byte extents from lba to the capacity
// into block runs of equal status, at most maxRuns of them.
func (lu *LU) lbaRuns(ctx context.Context, lba, capacity uint64, maxRuns int) ([]lbaRun, error) {
	exts, err := lu.extents.Extents(ctx, int64(lba<<lu.bsShift), int64((capacity-lba)<<lu.bsShift), 2*maxRuns+2)
	if err != nil {
		return nil, err
	}
	var runs []lbaRun
	next := lba
	add := func(a, b uint64, st uint8) {
		a, b = max(a, next), min(b, capacity)
		if a >= b {
			return
		}
		if a > next { // a gap the mapper did not describe: mapped
			runs = appendRun(runs, lbaRun{next, a - next, lbaMapped})
		}
		runs = appendRun(runs, lbaRun{a, b - a, st})
		next = b
	}
	bs := uint64(lu.bs)
	for _, e := range exts {
		if e.Length <= 0 || e.Offset < 0 {
			continue
		}
		s, t := uint64(e.Offset), uint64(e.Offset+e.Length)
		lo, hi := s/bs, (t+bs-1)/bs // blocks touched
		if e.Mapped {
			add(lo, hi, lbaMapped)
			continue
		}
		in0, in1 := (s+bs-1)/bs, t/bs // blocks wholly inside the hole
		add(lo, in0, lbaMapped)
		add(in0, in1, lbaDeallocated)
		add(in1, hi, lbaMapped)
		if len(runs) > maxRuns {
			break
		}
	}
	if len(runs) > maxRuns {
		runs = runs[:maxRuns]
	}
	return runs, nil
}

func appendRun(runs []lbaRun, r lbaRun) []lbaRun {
	if n := len(runs); n > 0 && runs[n-1].status == r.status && runs[n-1].lba+runs[n-1].n == r.lba {
		runs[n-1].n += r.n
		return runs
	}
	return append(runs, r)
}
