package target

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// leaseStateFile is the lease state's file name inside StateDir.
const leaseStateFile = "lease.json"

// leaseStateVersion is the format version written in the file.
const leaseStateVersion = 1

// maxLeaseState bounds the state file read at start.
const maxLeaseState = 16 << 20

// leaseStore persists the leases of all nodes in one JSON file, replaced
// atomically: write a temporary file, fsync it, rename it over the old
// one, fsync the directory.
type leaseStore struct {
	dir string
}

type leaseFile struct {
	Version int                     `json:"version"`
	Targets map[string]*leaseRecord `json:"targets"`
}

func (st *leaseStore) path() string { return filepath.Join(st.dir, leaseStateFile) }

// load reads the state; a missing file is an empty state. A file that
// cannot be parsed is an error: starting without it would forget fences.
func (st *leaseStore) load() (map[string]*leaseRecord, error) {
	// A crash between creating and renaming a temporary file leaves it
	// behind; it never holds the current state.
	if old, err := filepath.Glob(filepath.Join(st.dir, "."+leaseStateFile+".tmp-*")); err == nil {
		for _, p := range old {
			_ = os.Remove(p)
		}
	}
	f, err := os.Open(st.path())
	if errors.Is(err, os.ErrNotExist) {
		return make(map[string]*leaseRecord), nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLeaseState+1))
	if err != nil {
		return nil, fmt.Errorf("lease state %s: %w", st.path(), err)
	}
	if len(b) > maxLeaseState {
		return nil, fmt.Errorf("lease state %s: larger than %d bytes", st.path(), maxLeaseState)
	}
	var lf leaseFile
	if err := json.Unmarshal(b, &lf); err != nil {
		return nil, fmt.Errorf("lease state %s: %w (move it away only if no initiator may still hold a fenced session)", st.path(), err)
	}
	if lf.Version != leaseStateVersion {
		return nil, fmt.Errorf("lease state %s: version %d, want %d", st.path(), lf.Version, leaseStateVersion)
	}
	if lf.Targets == nil {
		lf.Targets = make(map[string]*leaseRecord)
	}
	for name, r := range lf.Targets {
		if r == nil {
			delete(lf.Targets, name)
		}
	}
	return lf.Targets, nil
}

// save replaces the state file with recs.
func (st *leaseStore) save(recs map[string]*leaseRecord) error {
	b, err := json.MarshalIndent(leaseFile{Version: leaseStateVersion, Targets: recs}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(st.dir, leaseStateFile, append(b, '\n'))
}

// writeFileAtomic replaces dir/name with data so that a crash at any point
// leaves either the old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
