package scsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

func TestSenseEncode(t *testing.T) {
	tests := []struct {
		name string
		s    Sense
		desc bool
		want []byte
	}{
		{
			name: "fixed LBA out of range",
			s:    Sense{Key: KeyIllegalRequest, ASC: ASCLBAOutOfRange},
			want: []byte{0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0},
		},
		{
			name: "fixed medium error with LBA",
			s:    Sense{Key: KeyMediumError, ASC: ASCUnrecoveredReadError, Info: 0x12345678, InfoValid: true},
			want: []byte{0xF0, 0, 0x03, 0x12, 0x34, 0x56, 0x78, 0x0A, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0},
		},
		{
			name: "fixed info too large clears VALID",
			s:    Sense{Key: KeyMediumError, ASC: ASCWriteError, Info: 1 << 40, InfoValid: true},
			want: []byte{0x70, 0, 0x03, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x0C, 0x00, 0, 0, 0, 0},
		},
		{
			name: "fixed invalid field in CDB with field pointer",
			s:    invalidCDB(1, 7).(Sense),
			want: []byte{0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCF, 0x00, 0x01},
		},
		{
			name: "fixed invalid field in parameter list, byte only",
			s:    invalidParam(0x102, -1).(Sense),
			want: []byte{0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x26, 0x00, 0, 0x80, 0x01, 0x02},
		},
		{
			name: "fixed unit attention",
			s:    Sense{Key: KeyUnitAttention, ASC: ASCPowerOnResetOccurred},
			want: []byte{0x70, 0, 0x06, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0},
		},
		{
			name: "descriptor plain",
			s:    Sense{Key: KeyIllegalRequest, ASC: ASCLBAOutOfRange},
			desc: true,
			want: []byte{0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0},
		},
		{
			name: "descriptor miscompare with information",
			s:    Sense{Key: KeyMiscompare, ASC: ASCMiscompareDuringVerify, Info: 0x1_0000_0027, InfoValid: true},
			desc: true,
			want: []byte{0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 12,
				0x00, 0x0A, 0x80, 0, 0, 0, 0, 0x01, 0, 0, 0, 0x27},
		},
		{
			name: "descriptor with sense key specific",
			s:    invalidCDB(3, -1).(Sense),
			desc: true,
			want: []byte{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8,
				0x02, 0x06, 0, 0, 0xC0, 0x00, 0x03, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := bytes.Repeat([]byte{0xEE}, MaxSenseLen)
			n := tt.s.encode(buf, tt.desc)
			if got := buf[:n]; !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
			k, a, info, valid := parseSense(buf[:n])
			if k != tt.s.Key || a != tt.s.ASC {
				t.Fatalf("round trip: got %v/%v", k, a)
			}
			if tt.s.InfoValid && (tt.desc || tt.s.Info <= 0xFFFFFFFF) && (!valid || info != tt.s.Info) {
				t.Fatalf("round trip info: got %x valid=%v", info, valid)
			}
		})
	}
}

func TestSenseFromDevice(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("backstore: pread at 4096: %w", e) }
	tests := []struct {
		name    string
		err     error
		op      ioOp
		want    Sense
		serious bool
	}{
		{"read I/O error", wrap(backstore.ErrIO), ioRead, Sense{Key: KeyMediumError, ASC: ASCUnrecoveredReadError, Info: 8, InfoValid: true}, true},
		{"write I/O error", wrap(backstore.ErrIO), ioWrite, Sense{Key: KeyMediumError, ASC: ASCWriteError, Info: 8, InfoValid: true}, true},
		{"no space", wrap(backstore.ErrNoSpace), ioWrite, Sense{Key: KeyDataProtect, ASC: ASCSpaceAllocFailedWP}, true},
		{"out of range", wrap(backstore.ErrOutOfRange), ioRead, Sense{Key: KeyIllegalRequest, ASC: ASCLBAOutOfRange}, false},
		{"read only", wrap(backstore.ErrReadOnly), ioWrite, Sense{Key: KeyDataProtect, ASC: ASCWriteProtected}, false},
		{"cancelled", context.Canceled, ioRead, Sense{Key: KeyAbortedCommand}, false},
		{"deadline", wrap(context.DeadlineExceeded), ioWrite, Sense{Key: KeyAbortedCommand}, false},
		{"closed", backstore.ErrClosed, ioRead, Sense{Key: KeyHardwareError, ASC: ASCInternalTargetFailure}, true},
		{"anything else", errors.New("boom"), ioFlush, Sense{Key: KeyHardwareError, ASC: ASCInternalTargetFailure}, true},
		{"sense passes through", ErrMediumNotPresent, ioRead, Sense{Key: KeyNotReady, ASC: ASCMediumNotPresent}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, serious := senseFromDevice(tt.err, tt.op, 8, true)
			if got != tt.want || serious != tt.serious {
				t.Fatalf("got %+v serious=%v, want %+v serious=%v", got, serious, tt.want, tt.serious)
			}
		})
	}
}

func TestSenseStrings(t *testing.T) {
	s := Sense{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInCDB, FieldValid: true, InCDB: true, FieldByte: 2, BitValid: true, Bit: 5}
	if got, want := s.Error(), "scsi: ILLEGAL REQUEST: INVALID FIELD IN CDB (24/00) at CDB byte 2 bit 5"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := ASC(0x8899).String(); got != "ASC 0x88/0x99" {
		t.Fatalf("unknown ASC: %q", got)
	}
	if got := OpRead10.String(); got != "READ(10)" {
		t.Fatalf("got %q", got)
	}
	if got := OpCode(0xF0).String(); got != "opcode 0xf0" {
		t.Fatalf("got %q", got)
	}
}
