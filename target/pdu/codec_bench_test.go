package pdu

import (
	"bytes"
	"testing"
)

// codecOps are the per-command codec steps of the data path: decoding a
// SCSI Command and a Data-Out, encoding Data-In, R2T and SCSI Response,
// reading a header and a data segment with digests, and computing a tail.
func codecOps() map[string]func() {
	var h BHS
	cmd := SCSICommand{Final: true, Read: true, Attr: AttrSimple, LUN: 1 << 48, InitiatorTaskTag: 7,
		ExpectedDataTransferLn: 4096, CmdSN: 9, ExpStatSN: 3}
	cmd.CDB[0] = 0x28
	var cmdBHS BHS
	cmd.Marshal(&cmdBHS)
	var dout BHS
	(&DataOut{Final: true, InitiatorTaskTag: 7, TargetTransferTag: 1, BufferOffset: 4096}).Marshal(&dout)
	data := bytes.Repeat([]byte{0x5a}, 4096)
	d := Digests{Header: true, Data: true}
	// A wire image of one PDU with both digests, read back repeatedly.
	var wire []byte
	wire = append(wire, dout[:]...)
	wire[5], wire[6], wire[7] = 0, 0x10, 0x00 // DataSegmentLength 4096
	var hb BHS
	copy(hb[:], wire[:BHSLen])
	var dg [DigestLen]byte
	PutDigest(dg[:], HeaderDigest(&hb, nil))
	wire = append(wire, dg[:]...)
	wire = append(wire, data...)
	var tail Tail
	tail.Compute(d, data)
	wire = append(wire, tail.Bytes()...)
	rd := bytes.NewReader(wire)
	var hdr Header
	dst := make([]byte, 4096)
	scratch := make([]byte, 512)
	return map[string]func(){
		"UnmarshalSCSICommand": func() {
			var c SCSICommand
			if err := c.Unmarshal(&cmdBHS); err != nil {
				panic(err)
			}
		},
		"UnmarshalDataOut": func() {
			var o DataOut
			if err := o.Unmarshal(&dout); err != nil {
				panic(err)
			}
		},
		"MarshalDataIn": func() {
			(&DataIn{Final: true, HasStatus: true, InitiatorTaskTag: 7, DataSN: 1, BufferOffset: 8192}).Marshal(&h)
			h.SetSN(1, 2, 3)
		},
		"MarshalR2T": func() {
			(&R2T{InitiatorTaskTag: 7, TargetTransferTag: 9, DesiredDataTransferLength: 65536}).Marshal(&h)
		},
		"MarshalSCSIResponse": func() {
			(&SCSIResponse{Status: 0, InitiatorTaskTag: 7, Underflow: true, ResidualCount: 512}).Marshal(&h)
		},
		"ReadHeaderAndSegmentCRC32C": func() {
			rd.Reset(wire)
			if err := ReadHeader(rd, &hdr, d, 1<<20); err != nil {
				panic(err)
			}
			if err := ReadSegment(rd, dst, hdr.BHS.DataSegmentLength(), scratch, d); err != nil {
				panic(err)
			}
		},
		"TailCRC32C": func() { tail.Compute(d, data) },
	}
}

// TestCodecAllocations keeps the per-command codec steps allocation-free.
func TestCodecAllocations(t *testing.T) {
	for name, fn := range codecOps() {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

func BenchmarkCodec(b *testing.B) {
	for name, fn := range codecOps() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				fn()
			}
		})
	}
}
