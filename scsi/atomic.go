package scsi

import "context"

// --- WRITE ATOMIC(16) (SBC-4 §5.48, atomic writes §4.29) ---

// maxAtomicBytes is the MAXIMUM ATOMIC TRANSFER LENGTH in bytes: one
// chunk, so that the Data-Out reaches the device in a single write call
// even when it has to go through the aligned bounce buffer.
const maxAtomicBytes = chunkBytes

func (lu *LU) maxAtomicBlocks() uint32 { return uint32(maxAtomicBytes) >> lu.bsShift }

// planWriteAtomic validates a WRITE ATOMIC(16): no protection
// information, ATOMIC BOUNDARY zero (MAXIMUM ATOMIC BOUNDARY SIZE is
// zero), the range within the capacity and at most MAXIMUM ATOMIC
// TRANSFER LENGTH blocks. ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH
// GRANULARITY are zero, so every LBA and length qualifies.
func planWriteAtomic(lu *LU, c *Command) error {
	b := decodeBlock(c.CDB)
	c.state.blk = b
	if b.Protect != 0 {
		return invalidCDB(1, 7)
	}
	if b.Boundary != 0 {
		return invalidCDB(10, -1)
	}
	if err := lu.checkRange(b.LBA, uint64(b.Blocks)); err != nil {
		return err
	}
	if b.Blocks == 0 {
		return errPlanDone
	}
	if b.Blocks > lu.maxAtomicBlocks() {
		return invalidCDB(12, -1)
	}
	c.Dir, c.XferLen = DirOut, b.Blocks<<lu.bsShift
	return nil
}

// execWriteAtomic writes all the blocks or none: the Data-Out must be
// complete (a short one is refused before anything is written), and the
// range is held exclusively, so no other write to these LBAs (WRITE,
// WRITE SAME, UNMAP, COMPARE AND WRITE, EXTENDED COPY, ...) interleaves
// with it.
func execWriteAtomic(ctx context.Context, lu *LU, c *Command) error {
	b := &c.state.blk
	n := int(b.Blocks) << lu.bsShift
	if len(c.DataOut) < n {
		return ErrInvalidFieldInIU
	}
	s := lu.lockWrite(b.LBA, uint64(b.Blocks), true)
	defer lu.unlockWrite(s, true)
	return lu.writeBlocks(ctx, c, c.DataOut[:n], b.LBA, lu.writeFlags(b.FUA))
}
