package scsi

import (
	"context"
	"crypto/sha256"
)

// VPD page codes (SPC-4 §7.8, SBC-4 §6.6), in the ascending order the
// Supported VPD Pages page lists them.
const (
	vpdSupported      = 0x00 // Supported VPD Pages
	vpdUnitSerial     = 0x80 // Unit Serial Number
	vpdDeviceID       = 0x83 // Device Identification
	vpdExtended       = 0x86 // Extended INQUIRY Data
	vpdBlockLimits    = 0xB0 // Block Limits
	vpdBlockChars     = 0xB1 // Block Device Characteristics
	vpdProvisioning   = 0xB2 // Logical Block Provisioning
	standardInquiryLn = 96   // SPC-4 §6.6.2 standard data through the reserved tail
)

var supportedVPD = []byte{vpdSupported, vpdUnitSerial, vpdDeviceID, vpdExtended, vpdBlockLimits, vpdBlockChars, vpdProvisioning}

// Version descriptors (SPC-4 table 148). libiscsi recognises SBC-3 by
// exactly 04C0h.
const (
	verSAM5  = 0x00A0
	verSPC4  = 0x0460
	verSBC3  = 0x04C0
	verISCSI = 0x0960
)

func planInquiry(_ *LU, c *Command) error {
	q := decodeInquiry(c.CDB)
	c.state.inq = q
	if !q.EVPD && q.Page != 0 {
		return invalidCDB(2, -1) // PAGE CODE needs EVPD (SPC-4 §6.6.1)
	}
	planDataIn(c, uint32(q.AllocLen))
	return nil
}

func execInquiry(_ context.Context, lu *LU, c *Command) error {
	q := c.state.inq
	if !q.EVPD {
		respond(c, standardInquiry(lu))
		return nil
	}
	if lu == nil {
		return ErrLUNotSupported
	}
	var page []byte
	switch q.Page {
	case vpdSupported:
		page = vpdHeader(vpdSupported, supportedVPD...)
	case vpdUnitSerial:
		page = vpdHeader(vpdUnitSerial, []byte(lu.serial)...)
	case vpdDeviceID:
		page = lu.deviceIDPage(c.Nexus)
	case vpdExtended:
		page = lu.extendedPage()
	case vpdBlockLimits:
		page = lu.blockLimitsPage()
	case vpdBlockChars:
		page = lu.blockCharsPage()
	case vpdProvisioning:
		page = lu.provisioningPage()
	default:
		return invalidCDB(2, -1)
	}
	respond(c, page)
	return nil
}

// standardInquiry builds the standard INQUIRY data (SPC-4 §6.6.2). For a
// LUN without LU it reports peripheral qualifier 011b and device type 1Fh:
// "not capable of supporting a device on this LUN".
func standardInquiry(lu *LU) []byte {
	b := make([]byte, standardInquiryLn)
	vendor, product, revision := defaultVendor, defaultProduct, defaultRevision
	if lu == nil {
		b[0] = 0x7F
	} else {
		vendor, product, revision = lu.vendor, lu.product, lu.revision
		if lu.removable {
			b[1] = 0x80 // RMB
		}
	}
	b[2] = 0x06        // VERSION: SPC-4
	b[3] = 0x10 | 0x02 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = standardInquiryLn - 5
	b[7] = 0x02 // CMDQUE
	padASCII(b[8:16], vendor)
	padASCII(b[16:32], product)
	padASCII(b[32:36], revision)
	for i, v := range []uint16{verSAM5, verISCSI, verSPC4, verSBC3} {
		be.PutUint16(b[58+2*i:], v)
	}
	return b
}

// padASCII left-aligns s in dst and fills the rest with spaces (SPC-4
// §4.4.1).
func padASCII(dst []byte, s string) {
	n := copy(dst, s)
	for i := n; i < len(dst); i++ {
		dst[i] = ' '
	}
}

// vpdHeader returns a VPD page for a direct access device with the given
// payload (SPC-4 §7.8.1).
func vpdHeader(code byte, payload ...byte) []byte {
	b := make([]byte, 4, 4+len(payload))
	b[1] = code
	be.PutUint16(b[2:4], uint16(len(payload)))
	return append(b, payload...)
}

// naaFromSerial derives the LU's locally assigned NAA designator (NAA
// type 3, SPC-4 §7.8.6.6.2) from the serial: NAA nibble 3 followed by 60
// bits of SHA-256 over a fixed prefix and the serial. It is stable across
// restarts and differs between serials with overwhelming probability.
func naaFromSerial(serial string) [8]byte {
	sum := sha256.Sum256([]byte("iscsi-target NAA\x00" + serial))
	var naa [8]byte
	copy(naa[:], sum[:8])
	naa[0] = 0x30 | naa[0]&0x0F
	return naa
}

// Designator header fields (SPC-4 §7.8.6.1).
const (
	codeSetBinary = 0x1
	codeSetASCII  = 0x2
	codeSetUTF8   = 0x3
	protoISCSI    = 0x5 << 4 // PROTOCOL IDENTIFIER, valid with PIV
	piv           = 0x80
	assocLU       = 0x00
	assocPort     = 0x10
	assocTarget   = 0x20
	desigT10      = 0x1
	desigNAA      = 0x3
	desigRelPort  = 0x4
	desigSCSIName = 0x8
)

func appendDesignator(b []byte, codeSet, flags byte, value []byte) []byte {
	b = append(b, codeSet, flags, 0, byte(len(value)))
	return append(b, value...)
}

// scsiNameString is a SCSI name string designator value: the name, a NUL
// and zero padding to a multiple of four bytes (SPC-4 §7.8.6.11).
func scsiNameString(name string) []byte {
	n := (len(name) + 1 + 3) &^ 3
	v := make([]byte, n)
	copy(v, name)
	return v
}

// deviceIDPage builds VPD page 83h: the LU's NAA and T10 vendor ID
// designators, and, for the nexus of the command, the relative target
// port, the target port name and the target device name (SPC-4 §7.8.6;
// RFC 7143 §4.4.1 for the iSCSI port name format).
func (lu *LU) deviceIDPage(n *Nexus) []byte {
	var b []byte
	b = appendDesignator(b, codeSetBinary, assocLU|desigNAA, lu.naa[:])
	t10 := make([]byte, 8, 8+len(lu.serial))
	padASCII(t10, lu.vendor)
	b = appendDesignator(b, codeSetASCII, assocLU|desigT10, append(t10, lu.serial...))
	if n != nil {
		if n.RelativeTargetPortID != 0 {
			var rp [4]byte
			be.PutUint16(rp[2:], n.RelativeTargetPortID)
			b = appendDesignator(b, protoISCSI|codeSetBinary, piv|assocPort|desigRelPort, rp[:])
		}
		if n.Key.TargetName != "" {
			if v := scsiNameString(n.Key.TargetPortName()); len(v) <= 255 {
				b = appendDesignator(b, protoISCSI|codeSetUTF8, piv|assocPort|desigSCSIName, v)
			}
			if v := scsiNameString(n.Key.TargetName); len(v) <= 255 {
				b = appendDesignator(b, protoISCSI|codeSetUTF8, piv|assocTarget|desigSCSIName, v)
			}
		}
	}
	return vpdHeader(vpdDeviceID, b...)
}

// extendedPage builds VPD page 86h (SPC-4 §7.8.7): SIMPLE, ORDERED and
// HEAD OF QUEUE task attributes are supported, and the LU has a volatile
// write cache (V_SUP).
func (lu *LU) extendedPage() []byte {
	p := make([]byte, 0x3C)
	p[1] = 0x04 | 0x02 | 0x01 // HEADSUP, ORDSUP, SIMPSUP
	p[2] = 0x01               // V_SUP
	return vpdHeader(vpdExtended, p...)
}

// Block limits in logical blocks.
func (lu *LU) maxXferBlocks() uint32 { return uint32(maxTransferBytes) >> lu.bsShift }
func (lu *LU) optXferBlocks() uint32 { return uint32(optTransferBytes) >> lu.bsShift }
func (lu *LU) maxWSBlocks() uint32   { return min(0xFFFF, uint32(maxWriteSameBytes)>>lu.bsShift) }
func (lu *LU) maxUnmapLBAs() uint32  { return min(maxUnmapBlocks, uint32(maxUnmapBytes)>>lu.bsShift) }
func (lu *LU) lbppb() uint32         { return 1 << lu.lbppbExp }

// blockLimitsPage builds VPD page B0h (SBC-4 §6.6.4), page length 3Ch.
// The unmap fields are non-zero only on thin LUs (libiscsi checks both
// ways). OPTIMAL TRANSFER LENGTH is a multiple of the physical block, as
// Linux requires before using it for max_sectors.
func (lu *LU) blockLimitsPage() []byte {
	p := make([]byte, 0x3C)
	// p[0]: WSNZ=0, a WRITE SAME of zero blocks runs to the last LBA.
	p[1] = maxCAWBlocks
	be.PutUint16(p[2:4], uint16(lu.lbppb())) // OPTIMAL TRANSFER LENGTH GRANULARITY
	be.PutUint32(p[4:8], lu.maxXferBlocks())
	be.PutUint32(p[8:12], lu.optXferBlocks())
	if lu.thin {
		be.PutUint32(p[16:20], lu.maxUnmapLBAs())
		be.PutUint32(p[20:24], maxUnmapDescs)
		be.PutUint32(p[24:28], lu.lbppb()) // OPTIMAL UNMAP GRANULARITY
		be.PutUint32(p[28:32], 0x80000000) // UGAVALID, alignment 0
	}
	be.PutUint64(p[32:40], uint64(lu.maxWSBlocks()))
	// MAXIMUM ATOMIC TRANSFER LENGTH; ATOMIC ALIGNMENT, ATOMIC TRANSFER
	// LENGTH GRANULARITY and the atomic boundary fields stay zero: any
	// aligned range up to the maximum, no boundaries (SBC-4 §4.29).
	be.PutUint32(p[40:44], lu.maxAtomicBlocks())
	return vpdHeader(vpdBlockLimits, p...)
}

// blockCharsPage builds VPD page B1h (SBC-4 §6.6.2): MEDIUM ROTATION RATE
// 1 means a non-rotating medium, 0 "not reported".
func (lu *LU) blockCharsPage() []byte {
	p := make([]byte, 0x3C)
	if !lu.rotational {
		be.PutUint16(p[0:2], 1)
	}
	if lu.thin {
		// WABEREQ 01b: after SANITIZE BLOCK ERASE, reads complete with
		// GOOD. WACEREQ stays 00b: CRYPTO ERASE is not supported.
		p[3] = 0x40
	}
	return vpdHeader(vpdBlockChars, p...)
}

// provisioningPage builds VPD page B2h (SBC-4 §6.6.5). On a thin LU UNMAP
// and WRITE SAME (10 and 16) with the UNMAP bit are supported; ANC_SUP is
// zero (no anchored state) and PROVISIONING TYPE is 010b.
func (lu *LU) provisioningPage() []byte {
	p := make([]byte, 4)
	if lu.thin {
		p[1] = 0x80 | 0x40 | 0x20 // LBPU, LBPWS, LBPWS10
		if lu.lbprz {
			p[1] |= 0x04 // LBPRZ 001b
		}
		p[2] = 0x02 // thin provisioned
		// THRESHOLD EXPONENT: threshold sets of 2^exp LBAs (threshold.go);
		// zero when the LU has no provisioning thresholds.
		p[0] = lu.thr.exp
	}
	return vpdHeader(vpdProvisioning, p...)
}
