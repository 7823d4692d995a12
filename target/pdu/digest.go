package pdu

import (
	"encoding/binary"
	"hash/crc32"
)

// DigestLen is the length of a CRC32C header or data digest.
const DigestLen = 4

// castagnoli is immutable after package initialisation (crc32.MakeTable is
// pure and hardware accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the iSCSI digest of b (RFC 7143 §13.1, Appendix B.4 of RFC 3720).
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// UpdateCRC32C continues a running CRC32C over b.
func UpdateCRC32C(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

// PutDigest stores a digest in wire order. iSCSI sends the CRC least
// significant byte first, the order open-iscsi and libiscsi use.
func PutDigest(b []byte, crc uint32) { binary.LittleEndian.PutUint32(b, crc) }

// GetDigest reads a digest in wire order.
func GetDigest(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
