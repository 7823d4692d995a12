package scsi

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// --- SANITIZE (SBC-4 §5.30, sanitize operations §4.11) ---

// SANITIZE service actions (SBC-4 table 105).
const (
	saOverwrite       uint8 = 0x01
	saBlockErase      uint8 = 0x02
	saCryptoErase     uint8 = 0x03 // not supported: there is no media encryption key to change
	saExitFailureMode uint8 = 0x1F
)

// sanitizeState is the LU's sanitize operation: at most one runs at a
// time, it is not stopped by ABORT TASK, resets or the loss of the nexus
// that started it (SBC-4 §4.11.2), and while it runs every command except
// INQUIRY, REPORT LUNS and REQUEST SENSE gets NOT READY / SANITIZE IN
// PROGRESS with a progress indication.
type sanitizeState struct {
	active   atomic.Bool
	progress atomic.Uint32 // fraction done, 0..65535
	// failed is set when a sanitize operation did not complete: medium
	// access commands get MEDIUM ERROR / SANITIZE COMMAND FAILED until a
	// sanitize completes, or EXIT FAILURE MODE when the failed one had
	// AUSE set.
	failed atomic.Bool
	ause   atomic.Bool

	mu     sync.Mutex // guards ctx, cancel; wg counts background runs
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// background returns the context of background sanitize operations,
// cancelled only when the LU closes.
func (s *sanitizeState) background() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	return s.ctx
}

// stop cancels a background sanitize and waits for it (LU.Close). The
// operation then counts as failed.
func (s *sanitizeState) stop() {
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// inProgress is the sense of a command refused while sanitizing.
func (s *sanitizeState) inProgress() Sense {
	return Sense{Key: KeyNotReady, ASC: ASCSanitizeInProgress, Progress: true, FieldByte: uint16(s.progress.Load())}
}

// ErrSanitizeFailed is the sense of medium access in sanitize failure mode.
var ErrSanitizeFailed error = Sense{Key: KeyMediumError, ASC: ASCSanitizeCommandFailed}

// sanitizeCheck refuses commands while a sanitize runs or after one
// failed; INQUIRY, REPORT LUNS and REQUEST SENSE (flagNoUA) always pass.
func (lu *LU) sanitizeCheck(e *opEntry, c *Command) error {
	if e.flags&flagNoUA != 0 {
		return nil
	}
	if lu.san.active.Load() {
		return lu.san.inProgress()
	}
	if lu.san.failed.Load() && e.flags&flagMedium != 0 && OpCode(c.CDB[0]) != OpSanitize {
		return ErrSanitizeFailed
	}
	return nil
}

// sanitizeCDB is SANITIZE (SBC-4 §5.30.1).
type sanitizeCDB struct {
	Immed    bool
	AUSE     bool
	SA       uint8
	ParamLen uint16
}

func decodeSanitize(cdb []byte) sanitizeCDB {
	return sanitizeCDB{Immed: cdb[1]&0x80 != 0, AUSE: cdb[1]&0x20 != 0, SA: cdb[1] & saMask, ParamLen: be.Uint16(cdb[7:9])}
}

// OVERWRITE parameter list (SBC-4 §5.30.3).
const sanitizeOverwriteHdr = 4

// planSanitize checks the PARAMETER LIST LENGTH: zero for BLOCK ERASE and
// EXIT FAILURE MODE, 5 to block length + 4 for OVERWRITE; anything else
// is INVALID FIELD IN CDB.
func planSanitize(lu *LU, c *Command) error {
	q := decodeSanitize(c.CDB)
	c.state.san = q
	if q.SA != saOverwrite {
		if q.ParamLen != 0 {
			return invalidCDB(7, -1)
		}
		return nil
	}
	if q.ParamLen <= sanitizeOverwriteHdr || uint32(q.ParamLen) > lu.bs+sanitizeOverwriteHdr {
		return invalidCDB(7, -1)
	}
	c.Dir, c.XferLen = DirOut, uint32(q.ParamLen)
	return nil
}

// overwriteParams is the validated OVERWRITE parameter list.
type overwriteParams struct {
	invert  bool
	count   int
	pattern []byte
}

// parseOverwrite validates the OVERWRITE parameter list: TEST zero (no
// test mode), OVERWRITE COUNT 1 to 31, INITIALIZATION PATTERN LENGTH 1 to
// the block length and within the list.
func parseOverwrite(p []byte, bs uint32) (overwriteParams, error) {
	if len(p) <= sanitizeOverwriteHdr {
		return overwriteParams{}, ErrParamListLength
	}
	var o overwriteParams
	o.invert = p[0]&0x80 != 0
	if p[0]&0x60 != 0 {
		return o, invalidParam(0, 6)
	}
	o.count = int(p[0] & 0x1F)
	if o.count == 0 {
		return o, invalidParam(0, 4)
	}
	n := int(be.Uint16(p[2:4]))
	if n == 0 || n > int(bs) || n > len(p)-sanitizeOverwriteHdr {
		return o, invalidParam(2, -1)
	}
	o.pattern = p[sanitizeOverwriteHdr : sanitizeOverwriteHdr+n]
	return o, nil
}

// execSanitize runs the operation: in the background after GOOD when
// IMMED is set, else before completing the command. Either way it is
// detached from the task: ABORT TASK and resets do not stop it.
func execSanitize(ctx context.Context, lu *LU, c *Command) error {
	q := c.state.san
	switch q.SA {
	case saExitFailureMode:
		if lu.san.failed.Load() && !lu.san.ause.Load() {
			return ErrSanitizeFailed // only a successful sanitize clears it
		}
		lu.san.failed.Store(false)
		return nil
	case saBlockErase:
		if !lu.thin || lu.unmapper == nil {
			return invalidCDB(1, 4)
		}
	}
	var ow overwriteParams
	if q.SA == saOverwrite {
		data := c.DataOut[:min(len(c.DataOut), int(q.ParamLen))]
		var err error
		if ow, err = parseOverwrite(data, lu.bs); err != nil {
			return err
		}
		ow.pattern = append([]byte(nil), ow.pattern...) // DataOut is the transport's
	}
	if !lu.san.active.CompareAndSwap(false, true) {
		return lu.san.inProgress()
	}
	lu.san.progress.Store(0)
	// The operation outlives the command, and the transport reuses
	// Command structs: it works on its own copy of what it logs.
	oc := &Command{CDB: append([]byte(nil), c.CDB...), Tag: c.Tag}
	run := func(ctx context.Context) error {
		defer lu.allocationChanged(nil) // provisioning threshold (threshold.go)
		defer lu.san.active.Store(false)
		s := lu.lockWrite(0, lu.capacity.Load(), true)
		defer lu.unlockWrite(s, true)
		var err error
		if q.SA == saOverwrite {
			err = lu.sanitizeOverwrite(ctx, oc, ow)
		} else {
			err = lu.sanitizeBlockErase(ctx, oc)
		}
		if err == nil {
			err = lu.flush(ctx, oc)
		}
		if err != nil {
			lu.san.ause.Store(q.AUSE)
			lu.san.failed.Store(true)
			lu.log.WithError(err).Error("sanitize failed; the LU is in sanitize failure mode")
			return ErrSanitizeFailed
		}
		lu.san.failed.Store(false)
		lu.log.Info("sanitize completed")
		return nil
	}
	// The operation runs on its own: ABORT TASK, resets and the loss of
	// the nexus end the command (when IMMED is zero) but not the
	// sanitize, which only the LU closing stops.
	bg := lu.san.background()
	done := make(chan error, 1)
	lu.san.wg.Add(1)
	go func() {
		defer lu.san.wg.Done()
		done <- run(bg)
	}()
	if q.Immed {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ErrCommandAborted
	}
}

// sanitizeOverwrite writes the pattern, repeated from the start of every
// block, over the whole medium OVERWRITE COUNT times, inverting it on
// every other pass when INVERT is set, and makes each pass durable.
// Writing real data (never a zero-range shortcut) is the point: the old
// content of the backing store's blocks is replaced.
func (lu *LU) sanitizeOverwrite(ctx context.Context, c *Command, ow overwriteParams) error {
	cp := lu.chunkPool.Get().(*[]byte)
	defer lu.chunkPool.Put(cp)
	chunk := *cp
	capacity := lu.capacity.Load()
	total := uint64(ow.count) * capacity
	start, written := time.Now(), uint64(0)
	for pass := 0; pass < ow.count; pass++ {
		blk := chunk[:lu.bs]
		for i := 0; i < len(blk); i += len(ow.pattern) {
			copy(blk[i:], ow.pattern) // the last copy is cut at the block end
		}
		if ow.invert && pass%2 == 1 {
			for i := range blk {
				blk[i] = ^blk[i]
			}
		}
		for i := len(blk); i < len(chunk); i += len(blk) {
			copy(chunk[i:], blk)
		}
		per := uint64(len(chunk)) >> lu.bsShift
		for done := uint64(0); done < capacity; {
			if err := lu.sanitizeThrottle(ctx, start, written); err != nil {
				return err
			}
			k := min(per, capacity-done)
			if err := lu.dev.WriteAt(ctx, chunk[:k<<lu.bsShift], int64(done<<lu.bsShift), 0); err != nil {
				return lu.ioError(c, err, ioWrite, done, true)
			}
			done += k
			written += k << lu.bsShift
			lu.san.progress.Store(uint32((uint64(pass)*capacity + done) * 65535 / total))
		}
		if err := lu.flush(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// sanitizeThrottle waits until writing more keeps the overwrite at or
// below the LU's SanitizeRate.
func (lu *LU) sanitizeThrottle(ctx context.Context, start time.Time, written uint64) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if lu.sanRate <= 0 {
		return nil
	}
	due := start.Add(time.Duration(float64(written) / float64(lu.sanRate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sanitizeBlockErase deallocates every block of a thin LU. Unmapped
// blocks read back as zeros when LBPRZ is set, else as indeterminate data
// that is not the old content.
func (lu *LU) sanitizeBlockErase(ctx context.Context, c *Command) error {
	size := int64(lu.capacity.Load() << lu.bsShift)
	err := lu.unmapper.Unmap(ctx, 0, size)
	if errors.Is(err, backstore.ErrUnsupported) {
		return lu.zeroRange(ctx, c, 0, lu.capacity.Load())
	}
	if err != nil {
		return lu.ioError(c, err, ioWrite, 0, false)
	}
	lu.san.progress.Store(65535)
	return nil
}
