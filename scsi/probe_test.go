package scsi

import (
	"encoding/binary"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// TestLinuxProbe replays what a Linux 6.1 kernel (scsi scan + sd) sends to
// a new LUN over open-iscsi (docs/real-initiator.md, caveat 1) and checks
// each answer the way the kernel reads it.
func TestLinuxProbe(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		t.Run(map[uint32]string{512: "512", 4096: "4096"}[bs], func(t *testing.T) {
			e := newEnv(t, func(c *LUConfig) { c.BlockSize, c.Thin, c.Serial = bs, true, "vol-0001" })
			e.r.NexusAdded(e.nx)
			step := func(name string, cdb []byte, alloc int) []byte {
				t.Helper()
				c := e.run(cdb, nil, alloc)
				if c.Status != StatusGood {
					k, a, _, _ := parseSense(c.SenseData())
					t.Fatalf("%s: status %v %v/%v", name, c.Status, k, a)
				}
				return dataIn(c)
			}

			// scsi_probe_lun: INQUIRY 36, then the full length it reports.
			std := step("INQUIRY 36", inquiryCDBBytes(false, 0, 36), 36)
			if len(std) != 36 || std[0] != 0 || std[2] != 6 || std[3]&0x0F != 2 || std[7]&0x02 == 0 {
				t.Fatalf("standard INQUIRY % x", std)
			}
			full := int(std[4]) + 5
			if got := step("INQUIRY full", inquiryCDBBytes(false, 0, uint16(full)), full); len(got) != full {
				t.Fatalf("INQUIRY %d: %d bytes", full, len(got))
			}
			// scsi_attach_vpd: page 00 first, then the listed pages.
			pages := step("VPD 00", inquiryCDBBytes(true, 0, 255), 255)
			listed := map[byte]bool{}
			for _, p := range pages[4:] {
				listed[p] = true
			}
			for _, p := range []byte{0x80, 0x83, 0xB0, 0xB1, 0xB2} {
				if !listed[p] {
					t.Fatalf("VPD %02x not listed", p)
				}
			}
			if listed[0x89] {
				t.Fatal("an ATA information page would disable WRITE SAME in sd")
			}
			if sn := step("VPD 80", inquiryCDBBytes(true, 0x80, 255), 255); string(sn[4:]) != "vol-0001" {
				t.Fatalf("serial %q", sn[4:])
			}
			id := step("VPD 83", inquiryCDBBytes(true, 0x83, 255), 255)
			if id[4]&0x0F != 1 || id[5]&0x3F != 0x03 || id[7] != 8 || id[8]>>4 != 3 {
				t.Fatalf("first designator is not the LU's NAA: % x", id[4:16])
			}
			// sd_read_block_limits.
			bl := step("VPD B0", inquiryCDBBytes(true, 0xB0, 64), 64)
			if binary.BigEndian.Uint16(bl[2:]) != 0x3C {
				t.Fatal("B0 page length")
			}
			phys := bs << e.lu.lbppbExp
			maxXfer, optXfer := binary.BigEndian.Uint32(bl[8:]), binary.BigEndian.Uint32(bl[12:])
			optBytes := uint64(optXfer) * uint64(bs)
			// sd_validate_opt_xfer_size: >= PAGE_SIZE, <= max, multiple of the physical block.
			if optBytes < 4096 || optXfer > maxXfer || optBytes%uint64(phys) != 0 || uint64(maxXfer)*uint64(bs) != 8<<20 {
				t.Fatalf("transfer limits max %d opt %d", maxXfer, optXfer)
			}
			if binary.BigEndian.Uint32(bl[20:]) == 0 || binary.BigEndian.Uint32(bl[24:]) == 0 {
				t.Fatal("thin LU without unmap limits")
			}
			bc := step("VPD B1", inquiryCDBBytes(true, 0xB1, 64), 64)
			if binary.BigEndian.Uint16(bc[4:]) != 1 {
				t.Fatal("memory device should be non-rotating")
			}
			lbp := step("VPD B2", inquiryCDBBytes(true, 0xB2, 64), 64)
			if lbp[5]&0xE0 != 0xE0 {
				t.Fatalf("B2 % x", lbp)
			}
			// REPORT LUNS during the scan.
			rl := step("REPORT LUNS", []byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, 4096)
			if binary.BigEndian.Uint32(rl) != 8 || binary.BigEndian.Uint64(rl[8:]) != 0 {
				t.Fatalf("REPORT LUNS % x", rl)
			}
			// sd_spinup_disk: TEST UNIT READY, retried past the unit attention.
			c := e.run(tur, nil, 0)
			check(t, c, StatusCheckCondition, KeyUnitAttention, ASCPowerOnResetOccurred)
			step("TUR", tur, 0)
			// sd_read_capacity.
			rc := step("READ CAPACITY(16)", readCap16CDB(32), 32)
			if got := binary.BigEndian.Uint64(rc) + 1; got != testBlocks || binary.BigEndian.Uint32(rc[8:]) != bs {
				t.Fatalf("capacity %d x %d", got, binary.BigEndian.Uint32(rc[8:]))
			}
			if rc[14]&0x80 == 0 || uint32(1)<<(rc[13]&0x0F)*bs != phys {
				t.Fatalf("READ CAPACITY(16) % x", rc)
			}
			// sd_read_write_protect_flag and sd_read_cache_type.
			all := step("MODE SENSE 3F", modeSense6(false, 0, 0x3F, 0, 255), 255)
			if all[2]&0x80 != 0 || int(all[0])+1 != len(all) {
				t.Fatalf("MODE SENSE 3F header % x", all[:4])
			}
			hdr := step("MODE SENSE 08 header", modeSense6(true, 0, 0x08, 0, 4), 4)
			cp := step("MODE SENSE 08", modeSense6(true, 0, 0x08, 0, hdr[0]+1), int(hdr[0])+1)
			off := 4 + int(cp[3])
			if cp[off]&0x3F != 0x08 || cp[off+2]&0x04 == 0 || cp[off+2]&0x01 != 0 || cp[2]&0x10 == 0 {
				t.Fatalf("caching page % x: want WCE=1, RCD=0, DPOFUA", cp)
			}
			// sd_read_write_same: RSOC for INQUIRY, WRITE SAME(16), WRITE SAME(10).
			for _, op := range []byte{0x12, 0x93, 0x41} {
				n := 4 + cdbLen(OpCode(op))
				r := step("RSOC", rsocBytes(false, 1, op, 0, uint32(n)), n)
				if r[1]&3 != 3 || r[4] != op {
					t.Fatalf("RSOC %02x: % x", op, r)
				}
			}
			// sd_read_security: not supported, GOOD with SUPPORT 001b.
			if r := step("RSOC A2", rsocBytes(false, 1, 0xA2, 0, 16), 16); r[1]&7 != 1 {
				t.Fatalf("SECURITY PROTOCOL IN % x", r)
			}
			// A journal commit: FUA write, then a flush.
			c = e.run(cdb10(OpWrite10, 0x08, 0, 8), make([]byte, 8*int(bs)), 0)
			good(t, c)
			if e.dev.lastFlags() != backstore.WriteFUA {
				t.Fatal("FUA not passed to the backstore")
			}
			good(t, e.run(cdb10(OpSyncCache10, 0, 0, 0), nil, 0))
			if e.dev.flushes != 1 {
				t.Fatal("SYNCHRONIZE CACHE did not flush")
			}
		})
	}
}
