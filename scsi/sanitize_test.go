package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func sanitizeCDBBytes(b1 byte, paramLen uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = byte(OpSanitize), b1
	binary.BigEndian.PutUint16(c[7:], paramLen)
	return c
}

func owParams(b0 byte, pattern []byte) []byte {
	p := make([]byte, 4, 4+len(pattern))
	p[0] = b0
	binary.BigEndian.PutUint16(p[2:], uint16(len(pattern)))
	return append(p, pattern...)
}

func TestSanitizeOverwrite(t *testing.T) {
	e := newEnv(t, nil)
	p := owParams(0x01, fill(512, 0xAA))
	good(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0))
	if !bytes.Equal(e.dev.Bytes(), fill(testBlocks*512, 0xAA)) {
		t.Fatal("medium not overwritten with the pattern")
	}
	if e.dev.flushes == 0 {
		t.Fatal("the overwrite was not made durable")
	}
	// A 3-byte pattern restarts at every block.
	p = owParams(0x01, []byte{1, 2, 3})
	good(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0))
	blk := make([]byte, 512)
	for i := range blk {
		blk[i] = byte(i%3 + 1)
	}
	for _, lba := range []int{0, 1, testBlocks - 1} {
		if !bytes.Equal(e.dev.Bytes()[lba*512:(lba+1)*512], blk) {
			t.Fatalf("block %d: % x", lba, e.dev.Bytes()[lba*512:lba*512+8])
		}
	}
	// INVERT with two passes leaves the inverted pattern.
	p = owParams(0x80|0x02, []byte{0x0F})
	good(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0))
	if !bytes.Equal(e.dev.Bytes(), fill(testBlocks*512, 0xF0)) {
		t.Fatal("second pass not inverted")
	}
	// IMMED: GOOD at once, the overwrite completes in the background.
	p = owParams(0x01, []byte{0x33})
	good(t, e.run(sanitizeCDBBytes(0x80|saOverwrite, uint16(len(p))), p, 0))
	e.lu.san.wg.Wait()
	if !bytes.Equal(e.dev.Bytes(), fill(testBlocks*512, 0x33)) {
		t.Fatal("immediate sanitize did not complete")
	}
}

func TestSanitizeErrors(t *testing.T) {
	e := newEnv(t, thin)
	full := owParams(0x01, fill(512, 0xAA))
	tests := []struct {
		name string
		cdb  []byte
		out  []byte
		want []byte
	}{
		{"service action 0", sanitizeCDBBytes(0, 0), nil, fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCC, 0, 1)},
		{"CRYPTO ERASE", sanitizeCDBBytes(saCryptoErase, 0), nil, fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCC, 0, 1)},
		{"reserved bit 6", sanitizeCDBBytes(0x40|saBlockErase, 0), nil, fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCE, 0, 1)},
		{"reserved byte 3", append(sanitizeCDBBytes(saBlockErase, 0)[:3], 3, 0, 0, 0, 0, 0, 0), nil, fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC9, 0, 3)},
		{"BLOCK ERASE with parameters", sanitizeCDBBytes(saBlockErase, 8), make([]byte, 8), fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 7)},
		{"EXIT FAILURE MODE with parameters", sanitizeCDBBytes(saExitFailureMode, 8), make([]byte, 8), fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 7)},
		{"OVERWRITE list of 4", sanitizeCDBBytes(saOverwrite, 4), full[:4], fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 7)},
		{"OVERWRITE list of block+5", sanitizeCDBBytes(saOverwrite, 517), append(bytes.Clone(full), 0), fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xC0, 0, 7)},
		{"OVERWRITE COUNT 0", sanitizeCDBBytes(saOverwrite, 516), owParams(0, fill(512, 1)), fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x8C, 0, 0)},
		{"pattern length 0", sanitizeCDBBytes(saOverwrite, 516), append(owParams(1, nil), fill(512, 1)...), fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x80, 0, 2)},
		{"pattern longer than a block", sanitizeCDBBytes(saOverwrite, 516), withLen(owParams(1, fill(512, 1)), 516), fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x80, 0, 2)},
		{"TEST", sanitizeCDBBytes(saOverwrite, 5), owParams(0x21, []byte{1}), fixedSense(KeyIllegalRequest, ASCInvalidFieldInParamList, 0x8E, 0, 0)},
	}
	before := bytes.Clone(e.dev.Bytes())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantSense(t, e.run(tt.cdb, tt.out, 0), tt.want)
		})
	}
	if !bytes.Equal(before, e.dev.Bytes()) {
		t.Fatal("a refused SANITIZE changed the medium")
	}
	// Write protection: read-only LU, then SWP.
	ro := newEnv(t, func(c *LUConfig) { c.ReadOnly = true; c.Thin = true })
	wantSense(t, ro.run(sanitizeCDBBytes(saBlockErase, 0), nil, 0), fixedSense(KeyDataProtect, ASCWriteProtected))
	wantSense(t, ro.run(sanitizeCDBBytes(saOverwrite, uint16(len(full))), full, 0), fixedSense(KeyDataProtect, ASCWriteProtected))
	e.lu.swp.Store(true)
	wantSense(t, e.run(sanitizeCDBBytes(saBlockErase, 0), nil, 0), fixedSense(KeyDataProtect, ASCSoftwareWriteProtected))
	e.lu.swp.Store(false)
	// BLOCK ERASE exists only on thin LUs.
	plain := newEnv(t, nil)
	wantSense(t, plain.run(sanitizeCDBBytes(saBlockErase, 0), nil, 0), fixedSense(KeyIllegalRequest, ASCInvalidFieldInCDB, 0xCC, 0, 1))
}

func withLen(p []byte, n uint16) []byte {
	binary.BigEndian.PutUint16(p[2:], n)
	return p
}

func TestSanitizeBlockErase(t *testing.T) {
	e := newEnv(t, thin)
	put(t, e.dev.Memory, 0, fill(testBlocks*512, 0x61))
	good(t, e.run(sanitizeCDBBytes(saBlockErase, 0), nil, 0))
	if !bytes.Equal(e.dev.Bytes(), make([]byte, testBlocks*512)) {
		t.Fatal("blocks still hold data")
	}
	c := e.run(cdb16(OpServiceActionIn, SAGetLBAStatus, 0, 64), nil, 64)
	good(t, c)
	d := dataIn(c)
	if binary.BigEndian.Uint64(d[8:]) != 0 || binary.BigEndian.Uint32(d[16:]) != testBlocks || d[20] != lbaDeallocated {
		t.Fatalf("GET LBA STATUS after BLOCK ERASE: % x", d)
	}
}

// gatedDevice blocks writes until release is closed, after announcing the
// first one on started.
type gatedDevice struct {
	*recDevice
	started chan struct{}
	release chan struct{}
	once    bool
}

func (d *gatedDevice) WriteAt(ctx context.Context, p []byte, off int64, f backstore.WriteFlags) error {
	d.mu.Lock()
	first := !d.once
	d.once = true
	d.mu.Unlock()
	if first {
		close(d.started)
	}
	<-d.release
	return d.recDevice.WriteAt(ctx, p, off, f)
}

func TestSanitizeInProgress(t *testing.T) {
	e := newEnv(t, nil)
	g := &gatedDevice{recDevice: e.dev, started: make(chan struct{}), release: make(chan struct{})}
	e.lu.dev = g
	p := owParams(0x01, []byte{0x44})
	// Without IMMED, an abort ends the command but not the sanitize.
	ctx, cancel := context.WithCancel(context.Background())
	c := &Command{Nexus: e.nx, LUN: EncodeLUN(0), CDB: sanitizeCDBBytes(saOverwrite, uint16(len(p))), ExpectedLength: uint32(len(p))}
	e.r.Plan(c)
	c.DataOut = p
	done := make(chan struct{})
	go func() {
		e.r.Execute(ctx, c)
		close(done)
	}()
	<-g.started
	cancel()
	<-done
	check(t, c, StatusCheckCondition, KeyAbortedCommand, ASCNoAdditionalSense)

	// Still sanitizing: NOT READY / SANITIZE IN PROGRESS with progress 0.
	wantSense(t, e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0), fixedSense(KeyNotReady, ASCSanitizeInProgress, 0x80, 0, 0))
	wantSense(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), fixedSense(KeyNotReady, ASCSanitizeInProgress, 0x80, 0, 0))
	wantSense(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0), fixedSense(KeyNotReady, ASCSanitizeInProgress, 0x80, 0, 0))
	good(t, e.run(inquiryCDBBytes(false, 0, 96), nil, 96))
	good(t, e.run([]byte{byte(OpReportLUNs), 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64))
	rs := e.run([]byte{byte(OpRequestSense), 0, 0, 0, 18, 0}, nil, 18)
	good(t, rs)
	if !bytes.Equal(dataIn(rs), fixedSense(KeyNotReady, ASCSanitizeInProgress, 0x80, 0, 0)) {
		t.Fatalf("REQUEST SENSE while sanitizing: % x", dataIn(rs))
	}
	close(g.release)
	e.lu.san.wg.Wait()
	good(t, e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0))
	if !bytes.Equal(e.dev.Bytes(), fill(testBlocks*512, 0x44)) {
		t.Fatal("the aborted command's sanitize did not complete")
	}
}

func TestSanitizeFailureMode(t *testing.T) {
	e := newEnv(t, nil)
	e.dev.writeErr = backstore.ErrIO
	p := owParams(0x01, []byte{0x44})
	// AUSE set: EXIT FAILURE MODE may clear the failure.
	wantSense(t, e.run(sanitizeCDBBytes(0x20|saOverwrite, uint16(len(p))), p, 0), fixedSense(KeyMediumError, ASCSanitizeCommandFailed))
	wantSense(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), fixedSense(KeyMediumError, ASCSanitizeCommandFailed))
	good(t, e.run(sanitizeCDBBytes(saExitFailureMode, 0), nil, 0))
	good(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512))
	// AUSE clear: only a successful sanitize leaves failure mode.
	wantSense(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0), fixedSense(KeyMediumError, ASCSanitizeCommandFailed))
	wantSense(t, e.run(sanitizeCDBBytes(saExitFailureMode, 0), nil, 0), fixedSense(KeyMediumError, ASCSanitizeCommandFailed))
	e.dev.writeErr = nil
	good(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0))
	good(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512))
}

func TestSanitizeRate(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.SanitizeRate = 1 << 40 })
	if e.lu.sanRate != 1<<40 {
		t.Fatalf("rate %d", e.lu.sanRate)
	}
	// The throttle computes the pace from the bytes written; a cancelled
	// context stops it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.lu.sanitizeThrottle(ctx, time.Now(), 1<<50); err == nil {
		t.Fatal("throttle ignores cancellation")
	}
	p := owParams(0x01, []byte{0x44})
	good(t, e.run(sanitizeCDBBytes(saOverwrite, uint16(len(p))), p, 0))
}

// TestSanitizeImmediateOutlivesCommand: with IMMED the sanitize runs after
// GOOD while the transport reuses the Command; a failure is still logged
// and puts the LU in sanitize failure mode (the race detector checks that
// the background operation does not touch the reused Command).
func TestSanitizeImmediateOutlivesCommand(t *testing.T) {
	e := newEnv(t, nil)
	g := &gatedDevice{recDevice: e.dev, started: make(chan struct{}), release: make(chan struct{})}
	e.lu.dev = g
	e.dev.writeErr = backstore.ErrIO
	p := owParams(0x01, []byte{0x44})
	c := e.run(sanitizeCDBBytes(0x80|saOverwrite, uint16(len(p))), p, 0)
	good(t, c)
	<-g.started
	c.Reset() // the transport reuses it
	c.CDB = []byte{0, 0, 0, 0, 0, 0}
	close(g.release)
	e.lu.san.wg.Wait()
	wantSense(t, e.run(cdb10(OpRead10, 0, 0, 1), nil, 512), fixedSense(KeyMediumError, ASCSanitizeCommandFailed))
}
