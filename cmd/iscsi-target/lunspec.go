package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/iscsi-target/iscsi-target/internal/config"
)

// lunSpec is one parsed --lun value:
// PATH[,size=SIZE][,ro][,thin][,removable][,blocksize=512|4096][,serial=S][,id=N][,direct][,sanitize-rate=SIZE]
type lunSpec struct {
	Path      string
	Size      int64 // 0: not given
	ReadOnly  bool
	Thin      bool
	Removable bool
	BlockSize uint32 // 0: not given (512, or the device's sector size)
	Serial    string
	ID        int // -1: next free number
	Direct    bool
	// SanitizeRate caps a SANITIZE OVERWRITE at this many bytes per
	// second (0: as fast as the backing store goes).
	SanitizeRate int64
}

// maxLUNID is the largest LUN number (flat space addressing, SAM-5 §4.7.7).
const maxLUNID = 16383

func parseLUNSpec(s string) (lunSpec, error) {
	spec := lunSpec{ID: -1}
	parts := strings.Split(s, ",")
	spec.Path = strings.TrimSpace(parts[0])
	if spec.Path == "" {
		return spec, errors.New("missing PATH (the spec starts with the backing file or block device)")
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		key, val, hasVal := strings.Cut(p, "=")
		if seen[key] {
			return spec, fmt.Errorf("option %q given twice", key)
		}
		seen[key] = true
		flag := func() error {
			if hasVal {
				return fmt.Errorf("option %q takes no value", key)
			}
			return nil
		}
		need := func() error {
			if !hasVal || val == "" {
				return fmt.Errorf("option %q needs a value (%s=...)", key, key)
			}
			return nil
		}
		var err error
		switch key {
		case "ro":
			err = flag()
			spec.ReadOnly = true
		case "thin":
			err = flag()
			spec.Thin = true
		case "removable":
			err = flag()
			spec.Removable = true
		case "direct":
			err = flag()
			spec.Direct = true
		case "size":
			if err = need(); err == nil {
				spec.Size, err = parseSize(val)
			}
		case "blocksize":
			if err = need(); err == nil {
				switch val {
				case "512":
					spec.BlockSize = 512
				case "4096", "4k", "4K":
					spec.BlockSize = 4096
				default:
					err = fmt.Errorf("blocksize %q: must be 512 or 4096", val)
				}
			}
		case "sanitize-rate":
			if err = need(); err == nil {
				spec.SanitizeRate, err = parseSize(val)
			}
		case "serial":
			if err = need(); err == nil {
				err = checkSerial(val)
				spec.Serial = val
			}
		case "id":
			if err = need(); err == nil {
				n, perr := strconv.Atoi(val)
				if perr != nil || n < 0 || n > maxLUNID {
					err = fmt.Errorf("id %q: must be a LUN number from 0 to %d", val, maxLUNID)
				}
				spec.ID = n
			}
		case "":
			err = errors.New("empty option (two commas in a row?)")
		default:
			err = fmt.Errorf("unknown option %q (known: size, ro, thin, removable, blocksize, serial, id, direct, sanitize-rate)", key)
		}
		if err != nil {
			return spec, err
		}
	}
	if spec.Size > 0 {
		bs := int64(spec.BlockSize)
		if bs == 0 {
			bs = 512
		}
		if spec.Size%bs != 0 {
			return spec, fmt.Errorf("size %d is not a multiple of the block size %d", spec.Size, bs)
		}
	}
	return spec, nil
}

// checkSerial enforces what VPD page 80h can carry (config.CheckSerial).
func checkSerial(s string) error { return config.CheckSerial(s) }

// parseSize accepts a byte count with an optional unit (config.ParseSize).
func parseSize(s string) (int64, error) { return config.ParseSize(s) }

// assignIDs numbers LUNs without id= in order, skipping explicit ids, and
// rejects duplicates.
func assignIDs(specs []lunSpec) error {
	used := map[int]int{}
	for i, s := range specs {
		if s.ID >= 0 {
			if j, dup := used[s.ID]; dup {
				return fmt.Errorf("--lun %d and --lun %d both use LUN id %d", j+1, i+1, s.ID)
			}
			used[s.ID] = i
		}
	}
	next := 0
	for i := range specs {
		if specs[i].ID >= 0 {
			continue
		}
		for {
			if _, taken := used[next]; !taken {
				break
			}
			next++
		}
		if next > maxLUNID {
			return errors.New("too many LUNs")
		}
		specs[i].ID = next
		used[next] = i
	}
	return nil
}

// defaultSerial derives a stable serial number from the target name and the
// LUN id, so identity (VPD 80h/83h) survives restarts and path changes.
func defaultSerial(iqn string, id int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00lun%d", iqn, id)))
	return hex.EncodeToString(h[:8])
}
