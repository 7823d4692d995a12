package scsi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// modeValues are the changeable mode page fields (SPC-4 §7.5): the
// current values live in LU atomics, the saved ones in LU.saved and in
// the state file.
type modeValues struct {
	WCE    bool `json:"wce"`     // Caching page 08h: write cache enable
	DSense bool `json:"d_sense"` // Control page 0Ah: descriptor format sense
	SWP    bool `json:"swp"`     // Control page 0Ah: software write protect
	// Logical Block Provisioning page 1Ch/02h (thin LUs, threshold.go).
	SITUA         bool   `json:"lbp_situa,omitempty"`
	ThreshEnabled bool   `json:"lbp_threshold_enabled,omitempty"`
	ThreshCount   uint32 `json:"lbp_threshold_count,omitempty"`
}

// defaultModeValues are the default values (MODE SENSE PC=10b): a
// volatile write cache that real initiators flush (SYNCHRONIZE CACHE,
// FUA) and fixed-format sense.
var defaultModeValues = modeValues{WCE: true}

// stateFileVersion identifies the layout of the state file.
const stateFileVersion = 1

type stateFile struct {
	Version int        `json:"version"`
	Mode    modeValues `json:"mode"`
}

func (lu *LU) current() modeValues {
	return modeValues{WCE: lu.wce.Load(), DSense: lu.dsense.Load(), SWP: lu.swp.Load(),
		SITUA: lu.thr.situa.Load(), ThreshEnabled: lu.thr.enabled.Load(), ThreshCount: lu.thr.count.Load()}
}

func (lu *LU) setCurrent(v modeValues) {
	lu.wce.Store(v.WCE)
	lu.dsense.Store(v.DSense)
	lu.swp.Store(v.SWP)
	lu.setThreshold(v)
}

// loadModeValues reads the saved mode pages; a missing file means the
// defaults.
func loadModeValues(path string) (modeValues, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return defaultModeValues, nil
	}
	if err != nil {
		return modeValues{}, fmt.Errorf("read mode state: %w", err)
	}
	// Fields missing from an older file keep their defaults.
	f := stateFile{Mode: defaultModeValues}
	if err := json.Unmarshal(b, &f); err != nil {
		return modeValues{}, fmt.Errorf("parse mode state %s: %w", path, err)
	}
	if f.Version != stateFileVersion {
		return modeValues{}, fmt.Errorf("mode state %s: unknown version %d", path, f.Version)
	}
	return f.Mode, nil
}

// saveModeValues replaces the state file atomically: write a temporary
// file in the same directory, fsync it, rename it over the old one, then
// fsync the directory so that the rename itself is durable.
func saveModeValues(path string, v modeValues) (err error) {
	b, err := json.Marshal(stateFile{Version: stateFileVersion, Mode: v})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save mode state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(append(b, '\n')); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save mode state: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save mode state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save mode state: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save mode state: sync dir: %w", err)
	}
	return nil
}
