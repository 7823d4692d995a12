package pdu

import (
	"bytes"
	"testing"
)

// FuzzBHS feeds arbitrary bytes to the framing and to every PDU decoder:
// nothing may panic, allocate past the limits, or fail to round-trip.
func FuzzBHS(f *testing.F) {
	h := bhsFrom(f, goldenLogin)
	f.Add(frame(h, nil, []byte("InitiatorName=iqn.x\x00"), Digests{}), uint8(0))
	f.Add(frame(h, nil, []byte("A=1\x00"), Digests{Header: true, Data: true}), uint8(3))
	var cmd BHS
	(&SCSICommand{Final: true, Write: true, ExpectedDataTransferLn: 512}).Marshal(&cmd)
	f.Add(frame(cmd, []byte{0, 17, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0}, make([]byte, 512), Digests{}), uint8(0))
	f.Fuzz(func(t *testing.T, wire []byte, dig uint8) {
		d := Digests{Header: dig&1 != 0, Data: dig&2 != 0}
		r := bytes.NewReader(wire)
		var got Header
		if err := ReadHeader(r, &got, d, 8192); err != nil {
			return
		}
		if len(got.AHS) > MaxAHSLength || got.BHS.DataSegmentLength() > 8192 {
			t.Fatalf("limits not enforced: ahs %d dsl %d", len(got.AHS), got.BHS.DataSegmentLength())
		}
		_, _ = ExtendedCDB(got.AHS)
		buf := make([]byte, got.BHS.DataSegmentLength())
		_ = ReadData(r, buf, d)
		_, _ = ParseText(buf, TextLimits{})
		type codec interface {
			Marshal(*BHS)
			Unmarshal(*BHS) error
		}
		for _, c := range []codec{&SCSICommand{}, &DataOut{}, &NOPOut{}, &TaskMgmtRequest{}, &LoginRequest{},
			&TextRequest{}, &LogoutRequest{}, &SNACKRequest{}, &SCSIResponse{}, &DataIn{}, &R2T{}, &NOPIn{},
			&TaskMgmtResponse{}, &LoginResponse{}, &TextResponse{}, &LogoutResponse{}, &AsyncMessage{}, &Reject{}} {
			if err := c.Unmarshal(&got.BHS); err != nil {
				continue
			}
			var h1, h2 BHS
			c.Marshal(&h1)
			if err := c.Unmarshal(&h1); err != nil {
				t.Fatalf("%T: re-decode: %v", c, err)
			}
			c.Marshal(&h2)
			if h1 != h2 {
				t.Fatalf("%T: unstable round trip", c)
			}
		}
	})
}

// FuzzTextKeys checks the text codec: no panic, limits honoured, and
// encode(parse(x)) parses to the same pairs.
func FuzzTextKeys(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.2026-11.test:x\x00SessionType=Normal\x00AuthMethod=CHAP,None\x00"))
	f.Add([]byte("HeaderDigest=CRC32C,None\x00MaxRecvDataSegmentLength=262144\x00"))
	f.Add([]byte("=\x00\x00x"))
	f.Fuzz(func(t *testing.T, in []byte) {
		keys, err := ParseText(in, TextLimits{MaxKeys: 64, MaxBytes: 16 << 10})
		if err != nil {
			return
		}
		if len(keys) > 64 {
			t.Fatalf("%d keys past the limit", len(keys))
		}
		again, err := ParseText(AppendText(nil, keys), TextLimits{MaxKeys: 64, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if len(again) != len(keys) {
			t.Fatalf("re-parse: %d pairs, want %d", len(again), len(keys))
		}
		for i := range keys {
			if keys[i] != again[i] {
				t.Fatalf("pair %d: %v != %v", i, keys[i], again[i])
			}
		}
	})
}
