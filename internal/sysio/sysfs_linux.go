package sysio

import (
	"os"
	"strconv"
	"strings"
)

// SysfsRoot is where sysfs is normally mounted; QueueAttr takes the root as
// a parameter so tests can point it at a fake tree.
const SysfsRoot = "/sys"

// QueueAttr returns the trimmed contents of the block queue attribute name
// (for example "rotational" or "discard_max_bytes") of the block device
// major:minor, read under root (normally SysfsRoot).
//
// A partition has no queue directory of its own, so when
// root/dev/block/M:m/queue is missing the parent disk's queue is read
// through root/dev/block/M:m/../queue. The path is passed to the kernel
// unnormalised on purpose: ".." must be resolved after the symlink.
func QueueAttr(root string, major, minor uint32, name string) (string, error) {
	dev := root + "/dev/block/" + strconv.FormatUint(uint64(major), 10) + ":" +
		strconv.FormatUint(uint64(minor), 10)
	b, err := os.ReadFile(dev + "/queue/" + name)
	if os.IsNotExist(err) {
		b, err = os.ReadFile(dev + "/../queue/" + name)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// QueueUint is QueueAttr parsed as an unsigned decimal integer.
func QueueUint(root string, major, minor uint32, name string) (uint64, error) {
	s, err := QueueAttr(root, major, minor, name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, 64)
}
