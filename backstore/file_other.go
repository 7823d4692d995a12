//go:build !linux

package backstore

// OpenFile is only implemented on Linux; elsewhere it fails with
// ErrUnsupported.
func OpenFile(path string, opts FileOptions) (*File, error) {
	return nil, &opError{Op: opOpen, Path: path, Len: -1, Kind: ErrUnsupported,
		Msg: "file and block device backstores need Linux"}
}
