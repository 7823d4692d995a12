package scsi

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// hexb decodes space-separated hex, for golden bytes.
func hexb(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestInquiryStandard(t *testing.T) {
	want := cat(
		hexb("00 00 06 12 5b 00 00 02"),
		[]byte("ISCSITGT"), []byte("VIRTUAL-DISK    "), []byte("0001"),
		make([]byte, 22),                                 // vendor specific, byte 56-57
		hexb("00 a0 09 60 04 60 04 c0"), make([]byte, 8), // version descriptors
		make([]byte, 22),
	)
	wantRMB := bytes.Clone(want)
	wantRMB[1] = 0x80
	wantNoLU := bytes.Clone(want)
	wantNoLU[0] = 0x7F
	tests := []struct {
		name  string
		mod   func(*LUConfig)
		lun   uint16
		alloc uint16
		want  []byte
	}{
		{"full", nil, 0, 260, want},
		{"36 bytes as Linux asks first", nil, 0, 36, want[:36]},
		{"5 bytes", nil, 0, 5, want[:5]},
		{"zero allocation length", nil, 0, 0, nil},
		{"removable", func(c *LUConfig) { c.Removable = true }, 0, 96, wantRMB},
		{"LUN without LU", nil, 7, 96, wantNoLU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			c := e.runOn(e.nx, tt.lun, inquiryCDBBytes(false, 0, tt.alloc), nil, int(tt.alloc))
			good(t, c)
			if got := dataIn(c); !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
			if int(c.XferLen) != len(tt.want) {
				t.Fatalf("XferLen %d, want %d", c.XferLen, len(tt.want))
			}
		})
	}
}

func TestInquiryCustomStrings(t *testing.T) {
	e := newEnv(t, func(c *LUConfig) { c.Vendor, c.Product, c.Revision = "ACME", "DISK", "7" })
	c := e.run(inquiryCDBBytes(false, 0, 36), nil, 36)
	good(t, c)
	if got := string(dataIn(c)[8:36]); got != "ACME    DISK            7   " {
		t.Fatalf("identification %q", got)
	}
}

func TestInquiryVPD(t *testing.T) {
	naa := hexb("3f f1 f2 9a 8d ce 58 63") // pinned: must never change for serial SN0001
	tests := []struct {
		name string
		mod  func(*LUConfig)
		page byte
		want []byte
	}{
		{"supported pages", nil, 0x00, hexb("00 00 00 07 00 80 83 86 b0 b1 b2")},
		{"unit serial", nil, 0x80, cat(hexb("00 80 00 06"), []byte("SN0001"))},
		{"device identification", nil, 0x83, cat(
			hexb("00 83 00 66"),
			hexb("01 03 00 08"), naa,
			hexb("02 01 00 0e"), []byte("ISCSITGTSN0001"),
			hexb("51 94 00 04 00 00 00 01"),
			hexb("53 98 00 20"), []byte("iqn.2026-01.test:tgt,t,0x0001"), hexb("00 00 00"),
			hexb("53 a8 00 18"), []byte("iqn.2026-01.test:tgt"), hexb("00 00 00 00"),
		)},
		{"extended inquiry", nil, 0x86, cat(hexb("00 86 00 3c 00 07 01"), make([]byte, 0x3C-3))},
		{"block limits, fully provisioned", nil, 0xB0, cat(
			hexb("00 b0 00 3c"),
			hexb("00 ff 00 08"),             // WSNZ 0, MAX COMPARE AND WRITE 255, OTLG 8 (4 KiB physical)
			hexb("00 00 40 00 00 00 08 00"), // MAXIMUM TRANSFER 16384 (8 MiB), OPTIMAL 2048 (1 MiB)
			hexb("00 00 00 00"),             // MAXIMUM PREFETCH
			make([]byte, 16),                // no unmap
			hexb("00 00 00 00 00 00 ff ff"), // MAXIMUM WRITE SAME LENGTH
			hexb("00 00 08 00"),             // MAXIMUM ATOMIC TRANSFER LENGTH 2048 (1 MiB)
			make([]byte, 16),                // atomic alignment, granularity and boundaries: none
		)},
		{"block limits, thin", func(c *LUConfig) { c.Thin = true }, 0xB0, cat(
			hexb("00 b0 00 3c 00 ff 00 08 00 00 40 00 00 00 08 00 00 00 00 00"),
			hexb("00 10 00 00 00 00 01 00 00 00 00 08 80 00 00 00"), // 1Mi LBAs, 256 descriptors, granularity 8, UGAVALID
			hexb("00 00 00 00 00 00 ff ff"),
			hexb("00 00 08 00"),
			make([]byte, 16),
		)},
		{"block limits, 4096-byte blocks", func(c *LUConfig) { c.BlockSize = 4096 }, 0xB0, cat(
			hexb("00 b0 00 3c 00 ff 00 01 00 00 08 00 00 00 01 00 00 00 00 00"),
			make([]byte, 16),
			hexb("00 00 00 00 00 00 40 00"), // 64 MiB
			hexb("00 00 01 00"),             // MAXIMUM ATOMIC TRANSFER LENGTH 256 (1 MiB)
			make([]byte, 16),
		)},
		{"block device characteristics, thin", func(c *LUConfig) { c.Thin = true }, 0xB1,
			cat(hexb("00 b1 00 3c 00 01 00 40"), make([]byte, 0x3C-4))}, // WABEREQ 01b
		{"block device characteristics", nil, 0xB1, cat(hexb("00 b1 00 3c 00 01"), make([]byte, 0x3C-2))},
		{"logical block provisioning, full", nil, 0xB2, hexb("00 b2 00 04 00 00 00 00")},
		{"logical block provisioning, thin", func(c *LUConfig) { c.Thin = true }, 0xB2, hexb("00 b2 00 04 05 e4 02 00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			c := e.run(inquiryCDBBytes(true, tt.page, 255), nil, 255)
			good(t, c)
			if got := dataIn(c); !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

func TestInquiryErrors(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		lun  uint16
		cdb  []byte
		asc  ASC
	}{
		{"page code without EVPD", 0, inquiryCDBBytes(false, 1, 256), ASCInvalidFieldInCDB},
		{"unsupported VPD page", 0, inquiryCDBBytes(true, 0x89, 256), ASCInvalidFieldInCDB},
		{"VPD on LUN without LU", 3, inquiryCDBBytes(true, 0x83, 256), ASCLUNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.runOn(e.nx, tt.lun, tt.cdb, nil, 256)
			check(t, c, StatusCheckCondition, KeyIllegalRequest, tt.asc)
			if c.XferLen != 0 {
				t.Fatalf("XferLen %d on error", c.XferLen)
			}
		})
	}
}

func TestInquiryIgnoresUnitAttention(t *testing.T) {
	e := newEnv(t, nil)
	e.r.NexusAdded(e.nx)
	good(t, e.run(inquiryCDBBytes(false, 0, 36), nil, 36))
	check(t, e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0), StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
	good(t, e.run([]byte{0, 0, 0, 0, 0, 0}, nil, 0))
}

func TestNAAStable(t *testing.T) {
	a, b := naaFromSerial("vol-1"), naaFromSerial("vol-2")
	if a == b || a[0]>>4 != 3 || b[0]>>4 != 3 {
		t.Fatalf("NAA % x / % x", a, b)
	}
	if naaFromSerial("vol-1") != a {
		t.Fatal("not deterministic")
	}
}
