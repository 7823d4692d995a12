package scsi

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The APTPL state file (LUConfig.PRStatePath). It is separate from the
// mode page file so that each has one writer. It is rewritten, atomically
// (temporary file, fsync, rename, fsync of the directory), by every
// persistent reservation change made while APTPL is active, and once more
// when APTPL is turned off, before the command reports GOOD. NewLU
// restores it; a file that cannot be read or is inconsistent is an error,
// never ignored. Without APTPL the file holds no registrations, so a
// restart starts with none (SPC-4 §5.13.4).

const prFileVersion = 1

type prFile struct {
	Version       int         `json:"version"`
	APTPL         bool        `json:"aptpl"`
	Generation    uint32      `json:"generation"`
	Registrations []prFileReg `json:"registrations"`
	// Reservation is the persistent reservation, if any.
	Reservation *prFileRes `json:"reservation,omitempty"`
}

type prFileReg struct {
	Key       uint64 `json:"key"`
	Initiator string `json:"initiator"`
	// ISID is 12 hex digits, or empty for a registration of every
	// initiator port of the name.
	ISID       string `json:"isid,omitempty"`
	TargetName string `json:"target"`
	TPGT       uint16 `json:"tpgt"`
	AllTgPt    bool   `json:"all_tg_pt,omitempty"`
	RelPort    uint16 `json:"rel_port,omitempty"`
}

type prFileRes struct {
	Type uint8 `json:"type"`
	// Holder indexes Registrations; -1 for an all registrants type.
	Holder int `json:"holder"`
}

func encodePRState(s *prState) ([]byte, error) {
	f := prFile{Version: prFileVersion, APTPL: s.aptpl, Generation: s.gen, Registrations: []prFileReg{}}
	if s.aptpl {
		for _, g := range s.regs {
			r := prFileReg{Key: g.Key, Initiator: g.Initiator, TargetName: g.TargetName, TPGT: g.TPGT,
				AllTgPt: g.AllTgPt, RelPort: g.RelPort}
			if !g.AnyISID {
				r.ISID = hex.EncodeToString(g.ISID[:])
			}
			f.Registrations = append(f.Registrations, r)
		}
		if s.resType != prTypeNone {
			res := &prFileRes{Type: uint8(s.resType), Holder: -1}
			for i, g := range s.regs {
				if g == s.holder {
					res.Holder = i
				}
			}
			f.Reservation = res
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// decodePRState parses and validates a state file.
func decodePRState(b []byte) (*prState, error) {
	var f prFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != prFileVersion {
		return nil, fmt.Errorf("unknown version %d", f.Version)
	}
	s := &prState{}
	if !f.APTPL {
		// Nothing persists without APTPL; PRgeneration starts again.
		return s, nil
	}
	s.aptpl, s.gen = true, f.Generation
	for i, r := range f.Registrations {
		g := &prReg{Key: r.Key, Initiator: r.Initiator, TargetName: r.TargetName, TPGT: r.TPGT,
			AllTgPt: r.AllTgPt, RelPort: r.RelPort, AnyISID: r.ISID == ""}
		if g.Key == 0 || !validISCSIName(g.Initiator) || g.TargetName == "" {
			return nil, fmt.Errorf("registration %d: invalid key, initiator or target", i)
		}
		if !g.AnyISID {
			if len(r.ISID) != isidHexLen {
				return nil, fmt.Errorf("registration %d: invalid ISID %q", i, r.ISID)
			}
			if _, err := hex.Decode(g.ISID[:], []byte(r.ISID)); err != nil {
				return nil, fmt.Errorf("registration %d: invalid ISID %q", i, r.ISID)
			}
		}
		for j, o := range s.regs {
			if g.overlaps(o) {
				return nil, fmt.Errorf("registrations %d and %d cover the same I_T nexus", j, i)
			}
		}
		s.regs = append(s.regs, g)
	}
	if res := f.Reservation; res != nil {
		t := PRType(res.Type)
		switch {
		case !t.valid():
			return nil, fmt.Errorf("invalid reservation type %d", res.Type)
		case t.allRegistrants() && res.Holder != -1, !t.allRegistrants() && (res.Holder < 0 || res.Holder >= len(s.regs)):
			return nil, fmt.Errorf("invalid reservation holder %d", res.Holder)
		case len(s.regs) == 0:
			return nil, errors.New("reservation without registrations")
		}
		s.resType = t
		if !t.allRegistrants() {
			s.holder = s.regs[res.Holder]
		}
	}
	return s, nil
}

// loadPRState reads the state file; a missing file is the empty state.
// Temporary files left by a crash during a write are removed: the rename
// never happened, so the previous state is the acknowledged one.
func loadPRState(path string) (*prState, error) {
	if tmps, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")); err == nil {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &prState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read persistent reservation state: %w", err)
	}
	s, err := decodePRState(b)
	if err != nil {
		return nil, fmt.Errorf("persistent reservation state %s is corrupt: %w", path, err)
	}
	return s, nil
}

// savePRState replaces the state file atomically.
func savePRState(path string, s *prState) error {
	b, err := encodePRState(s)
	if err != nil {
		return fmt.Errorf("scsi: save persistent reservation state: %w", err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("scsi: save persistent reservation state: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to a temporary file next to path, fsyncs it,
// renames it over path and fsyncs the directory, so that path holds
// either the old or the new content after a crash, never a mix.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}
