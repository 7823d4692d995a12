// Package pdu is the iSCSI wire format of RFC 7143: the 48-byte Basic Header
// Segment (BHS), one struct per PDU type named after its RFC section, the
// key=value text codec used by Login and Text PDUs, CRC32C digests and the
// framing that reads and writes whole PDUs.
//
// The package knows nothing about sessions, SCSI or storage. Every decoder
// works on caller-provided memory, validates lengths before it allocates and
// returns an error instead of panicking, so it is safe to feed it bytes from
// an unauthenticated peer.
package pdu
