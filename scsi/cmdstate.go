package scsi

// cmdState is the device server's per-command scratch: the resolved LU and
// the decoded CDB. It lives inside Command so planning allocates nothing.
type cmdState struct{}
