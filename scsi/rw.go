package scsi

import (
	"bytes"
	"context"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// lengthByte is the CDB byte of the TRANSFER LENGTH (or equivalent) field,
// for field pointers.
func lengthByte(op OpCode) int {
	switch {
	case op == OpCompareAndWrite:
		return 13
	case op == OpWriteAtomic16:
		return 12
	case cdbLen(op) == 6:
		return 4
	case cdbLen(op) == 10:
		return 7
	case cdbLen(op) == 12:
		return 6
	}
	return 10
}

// planTransfer is the common part of READ, WRITE, VERIFY, WRITE AND
// VERIFY and ORWRITE: no protection information (SBC-4 §4.22.2), the range
// within the capacity, and at most MAXIMUM TRANSFER LENGTH blocks (SBC-4
// §6.6.4). A zero-length transfer completes with GOOD after the checks.
func planTransfer(lu *LU, c *Command) error {
	b := decodeBlock(c.CDB)
	c.state.blk = b
	if b.Protect != 0 {
		return invalidCDB(1, 7)
	}
	if err := lu.checkRange(b.LBA, uint64(b.Blocks)); err != nil {
		return err
	}
	if b.Blocks == 0 {
		return errPlanDone
	}
	if b.Blocks > lu.maxXferBlocks() {
		return invalidCDB(lengthByte(OpCode(c.CDB[0])), -1)
	}
	return nil
}

// --- READ (SBC-4 §5.15-5.18) ---

func planRead(lu *LU, c *Command) error {
	if err := planTransfer(lu, c); err != nil {
		return err
	}
	c.Dir, c.XferLen = DirIn, c.state.blk.Blocks<<lu.bsShift
	return nil
}

// execRead reads straight into the transport's buffer. When the initiator
// expects less than the CDB asks for, only min(XferLen, len(DataIn)) bytes
// are produced while XferLen stays the SCSI length: the transport reports
// the overflow (RFC 7143 §11.4.5.1). A trailing partial block goes through
// a one-block bounce buffer, since devices read whole blocks.
func execRead(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	buf := c.DataIn
	if len(buf) > int(c.XferLen) {
		buf = buf[:c.XferLen]
	}
	full := len(buf) &^ (int(lu.bs) - 1)
	if full > 0 {
		if err := lu.readBlocks(ctx, c, buf[:full], b.LBA); err != nil {
			return err
		}
	}
	if rest := len(buf) - full; rest > 0 {
		tp := lu.blockPool.Get().(*[]byte)
		defer lu.blockPool.Put(tp)
		if err := lu.readBlocks(ctx, c, *tp, b.LBA+uint64(full>>lu.bsShift)); err != nil {
			return err
		}
		copy(buf[full:], *tp)
	}
	return nil
}

// --- WRITE (SBC-4 §5.39-5.42) ---

func planWrite(lu *LU, c *Command) error {
	if err := planTransfer(lu, c); err != nil {
		return err
	}
	c.Dir, c.XferLen = DirOut, c.state.blk.Blocks<<lu.bsShift
	return nil
}

// dataOutBlocks returns the whole blocks of Data-Out the command may use.
// The transport delivers min(XferLen, ExpectedLength) bytes: a shorter
// buffer that is a whole number of blocks is written as is (libiscsi
// iSCSIResiduals), a partial block is INVALID FIELD IN INFORMATION UNIT.
func dataOutBlocks(lu *LU, c *Command) ([]byte, error) {
	data := c.DataOut
	if len(data) > int(c.XferLen) {
		data = data[:c.XferLen]
	}
	if len(data)&(int(lu.bs)-1) != 0 {
		return nil, ErrInvalidFieldInIU
	}
	return data, nil
}

// writeFlags makes a write durable before GOOD when the CDB has FUA or
// the write cache is disabled (SBC-4 §4.15: WCE=0 means write-through).
func (lu *LU) writeFlags(fua bool) backstore.WriteFlags {
	if fua || !lu.wce.Load() {
		return backstore.WriteFUA
	}
	return 0
}

func execWrite(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	data, err := dataOutBlocks(lu, c)
	if err != nil || len(data) == 0 {
		return err
	}
	s := lu.lockWrite(b.LBA, uint64(len(data))>>lu.bsShift, false)
	defer lu.unlockWrite(s, false)
	return lu.writeBlocks(ctx, c, data, b.LBA, lu.writeFlags(b.FUA))
}

// --- VERIFY (SBC-4 §5.33-5.35) ---

// planVerify: BYTCHK 00b verifies the medium without data, 01b compares
// VERIFICATION LENGTH blocks of Data-Out, 11b compares every block with
// one block of Data-Out; 10b is reserved.
func planVerify(lu *LU, c *Command) error {
	if bc := decodeBlock(c.CDB).ByteChk; bc == 2 {
		return invalidCDB(1, 2)
	}
	if err := planTransfer(lu, c); err != nil {
		return err
	}
	b := &c.state.blk
	switch b.ByteChk {
	case 1:
		c.Dir, c.XferLen = DirOut, b.Blocks<<lu.bsShift
	case 3:
		c.Dir, c.XferLen = DirOut, lu.bs
	}
	return nil
}

func execVerify(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	switch b.ByteChk {
	case 0:
		return lu.compare(ctx, c, b.LBA, uint64(b.Blocks), nil, false)
	case 1:
		data, err := dataOutBlocks(lu, c)
		if err != nil {
			return err
		}
		return lu.compare(ctx, c, b.LBA, uint64(len(data))>>lu.bsShift, data, false)
	}
	if len(c.DataOut) < int(lu.bs) {
		return ErrInvalidFieldInIU
	}
	return lu.compare(ctx, c, b.LBA, uint64(b.Blocks), c.DataOut[:lu.bs], true)
}

// compare reads blocks [lba, lba+n) in chunks. With want nil it only
// checks that the medium reads (MEDIUM ERROR otherwise); else it compares
// with want (one block repeated when repeat is set) and reports the first
// differing byte's offset in INFORMATION with MISCOMPARE DURING VERIFY
// OPERATION (SBC-4 §5.33).
func (lu *LU) compare(ctx context.Context, c *Command, lba, n uint64, want []byte, repeat bool) error {
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	chunk := *cp
	bs := uint64(lu.bs)
	for done := uint64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return ErrCommandAborted
		}
		k := min(n-done, uint64(len(chunk))/bs)
		got := chunk[:k*bs]
		if err := lu.dev.ReadAt(ctx, got, int64((lba+done)*bs)); err != nil {
			return lu.ioError(c, err, ioRead, lba+done, true)
		}
		for i := uint64(0); want != nil && i < k; i++ {
			exp := want
			if !repeat {
				exp = want[(done+i)*bs : (done+i+1)*bs]
			}
			blk := got[i*bs : (i+1)*bs]
			if !bytes.Equal(blk, exp) {
				j := 0
				for blk[j] == exp[j] {
					j++
				}
				return Sense{Key: KeyMiscompare, ASC: ASCMiscompareDuringVerify}.withInfo((done+i)*bs + uint64(j))
			}
		}
		done += k
	}
	return nil
}

// --- WRITE AND VERIFY (SBC-4 §5.43-5.45) ---

// planWriteAndVerify: BYTCHK 00b verifies the medium after the write, 01b
// compares with the Data-Out; 1xb are reserved.
func planWriteAndVerify(lu *LU, c *Command) error {
	if bc := decodeBlock(c.CDB).ByteChk; bc > 1 {
		return invalidCDB(1, 2)
	}
	if err := planTransfer(lu, c); err != nil {
		return err
	}
	c.Dir, c.XferLen = DirOut, c.state.blk.Blocks<<lu.bsShift
	return nil
}

// execWriteAndVerify writes through to the medium (verification implies
// the data reached it), then reads the blocks back and compares them when
// BYTCHK is 01b.
func execWriteAndVerify(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	data, err := dataOutBlocks(lu, c)
	if err != nil || len(data) == 0 {
		return err
	}
	s := lu.lockWrite(b.LBA, uint64(len(data))>>lu.bsShift, false)
	defer lu.unlockWrite(s, false)
	if err := lu.writeBlocks(ctx, c, data, b.LBA, backstore.WriteFUA); err != nil {
		return err
	}
	if b.ByteChk == 0 {
		return nil
	}
	return lu.compare(ctx, c, b.LBA, uint64(len(data))>>lu.bsShift, data, false)
}

// --- SYNCHRONIZE CACHE (SBC-4 §5.26, §5.27) and PRE-FETCH (§5.9, §5.10) ---

// planBlockRange checks an LBA range where NUMBER OF LOGICAL BLOCKS zero
// means "to the last LBA".
func planBlockRange(lu *LU, c *Command) error {
	b := decodeBlock(c.CDB)
	c.state.blk = b
	return lu.checkRange(b.LBA, uint64(b.Blocks))
}

func planSyncCache(lu *LU, c *Command) error { return planBlockRange(lu, c) }

// execSyncCache flushes the whole device: backstores have no range
// flush, and flushing more than asked is allowed. IMMED is honoured by
// completing only after the flush, which SBC-4 permits.
func execSyncCache(ctx context.Context, lu *LU, c *Command) error { return lu.flush(ctx, c) }

// planPreFetch validates the range and completes with GOOD: SBC-4 §5.9
// returns GOOD, not CONDITION MET, when the blocks are not all placed in
// a cache, and this device server keeps no cache of its own.
func planPreFetch(lu *LU, c *Command) error { return planBlockRange(lu, c) }

// --- COMPARE AND WRITE (SBC-4 §5.3) ---

// planCompareAndWrite: the Data-Out holds the verify blocks followed by
// the write blocks, so the iSCSI expected length must be exactly twice
// the blocks. Any other length is refused before data moves, as INVALID
// FIELD IN CDB at NUMBER OF LOGICAL BLOCKS: a one-byte field that an
// initiator may have truncated (libiscsi sends 256 blocks as 0 and
// expects a failure when that exceeds MAXIMUM COMPARE AND WRITE LENGTH).
func planCompareAndWrite(lu *LU, c *Command) error {
	b := decodeBlock(c.CDB)
	c.state.blk = b
	if b.Protect != 0 {
		return invalidCDB(1, 7)
	}
	if err := lu.checkRange(b.LBA, uint64(b.Blocks)); err != nil {
		return err
	}
	if b.Blocks > maxCAWBlocks || c.ExpectedLength != 2*b.Blocks<<lu.bsShift {
		return invalidCDB(13, -1)
	}
	if b.Blocks == 0 {
		return errPlanDone
	}
	c.Dir, c.XferLen = DirOut, 2*b.Blocks<<lu.bsShift
	return nil
}

// execCompareAndWrite compares and writes atomically with respect to
// every other write to the same LBAs (an exclusive range lock, see
// rangelock.go). On a miscompare nothing is written and
// INFORMATION holds the offset of the first differing byte.
func execCompareAndWrite(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	n := int(b.Blocks) << lu.bsShift
	if len(c.DataOut) < 2*n {
		return ErrInvalidFieldInIU
	}
	verify, write := c.DataOut[:n], c.DataOut[n:2*n]
	s := lu.lockWrite(b.LBA, uint64(b.Blocks), true)
	defer lu.unlockWrite(s, true)
	if err := lu.compare(ctx, c, b.LBA, uint64(b.Blocks), verify, false); err != nil {
		return err
	}
	return lu.writeBlocks(ctx, c, write, b.LBA, lu.writeFlags(b.FUA))
}

// --- ORWRITE(16) (SBC-4 §5.8) ---

func planORWrite(lu *LU, c *Command) error { return planWrite(lu, c) }

// execORWrite ORs the Data-Out into the medium, chunk by chunk, holding
// the range exclusively like COMPARE AND WRITE.
func execORWrite(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	data, err := dataOutBlocks(lu, c)
	if err != nil || len(data) == 0 {
		return err
	}
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	s := lu.lockWrite(b.LBA, uint64(len(data))>>lu.bsShift, true)
	defer lu.unlockWrite(s, true)
	off := int64(b.LBA) << lu.bsShift
	flags := lu.writeFlags(b.FUA)
	for done := 0; done < len(data); {
		k := min(len(data)-done, len(*cp))
		cur := (*cp)[:k]
		lba := b.LBA + uint64(done>>lu.bsShift)
		if err := lu.dev.ReadAt(ctx, cur, off+int64(done)); err != nil {
			return lu.ioError(c, err, ioRead, lba, true)
		}
		for i := range cur {
			cur[i] |= data[done+i]
		}
		if err := lu.dev.WriteAt(ctx, cur, off+int64(done), flags); err != nil {
			return lu.ioError(c, err, ioWrite, lba, true)
		}
		done += k
	}
	return nil
}
