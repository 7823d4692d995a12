package guest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Guest-side paths and addresses shared by the init script, the QEMU
// command line and the job wrapper.
const (
	hostRootTag = "hostroot"
	jobTag      = "job"
	// GuestJobDir is where the job directory appears inside the guest.
	GuestJobDir = "/job"
	// GuestIP is the guest's address on the slirp network.
	GuestIP = "10.0.2.15"
)

// initScript is the initramfs /init. It loads the modules listed in
// /modules.load, builds the root (host / over 9p, read-only, under a tmpfs
// overlay), mounts the job share, configures the slirp network, runs
// /job/.run.sh in a chroot, records its exit code and powers off. Every
// failure powers off too: the host then sees no exit-code file.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "guest-init: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { say "FATAL: $*"; sync; poweroff -f; sleep 5; exit 1; }
say "loading modules"
while read -r m; do
	insmod "/lib/modules/$m" || say "insmod $m failed"
done < /modules.load
say "modules loaded"
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower || die "mount hostroot"
mount -t tmpfs -o mode=0755 tmpfs /rw || die "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || die "mount overlay"
mkdir -p /newroot/job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /newroot/job || die "mount job share"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p /newroot/run/lock
ip link set lo up
ip link set eth0 up || die "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname guest
cut -d' ' -f1 /proc/uptime > /newroot/job/.boot-uptime
say "job start"
chroot /newroot /bin/bash /job/.run.sh </dev/null >/newroot/job/stdout 2>/newroot/job/stderr
rc=$?
say "job exit $rc"
dmesg > /newroot/job/dmesg.txt
echo $rc > /newroot/job/.exit-code.tmp && mv /newroot/job/.exit-code.tmp /newroot/job/exit-code
sync
poweroff -f
`

// writeInitramfs writes an uncompressed newc cpio archive holding busybox,
// /init, /dev/console and the listed modules (paths relative to modDir,
// in load order, recorded in /modules.load).
func writeInitramfs(path, busybox, modDir, release string, modules []string) error {
	static, err := isStatic(busybox)
	if err != nil {
		return fmt.Errorf("guest: busybox %s: %w", busybox, err)
	}
	if !static {
		return fmt.Errorf("guest: %s is not statically linked; install busybox-static", busybox)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	w := newCpioWriter(bufio.NewWriterSize(f, 1<<20))
	dirs := []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "mnt"}
	for _, d := range dirs {
		w.dir(d)
	}
	w.charDev("dev/console", 0o600, 5, 1)
	w.fileFromDisk("bin/busybox", 0o755, busybox)
	w.symlink("bin/sh", "busybox")
	w.file("init", 0o755, []byte(initScript))
	var load strings.Builder
	madeDirs := map[string]bool{}
	for _, m := range modules {
		if strings.HasSuffix(m, ".xz") || strings.HasSuffix(m, ".zst") || strings.HasSuffix(m, ".gz") {
			return fmt.Errorf("guest: compressed module %s is not supported", m)
		}
		// Parent directories, outermost first.
		var parents []string
		for d := filepath.Dir(m); d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !madeDirs[d] {
				madeDirs[d] = true
				w.dir("lib/modules/" + d)
			}
		}
		b, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			return fmt.Errorf("guest: %w", err)
		}
		w.file("lib/modules/"+m, 0o644, stripModuleSignature(b))
		load.WriteString(m + "\n")
	}
	w.file("modules.load", 0o644, []byte(load.String()))
	w.file("kernel-release", 0o644, []byte(release+"\n"))
	w.trailer()
	if w.err == nil {
		w.err = w.w.(*bufio.Writer).Flush()
	}
	if cerr := f.Close(); w.err == nil {
		w.err = cerr
	}
	if w.err != nil {
		return fmt.Errorf("guest: write initramfs: %w", w.err)
	}
	return nil
}

// moduleSigMagic ends a signed kernel module.
const moduleSigMagic = "~Module signature appended~\n"

// stripModuleSignature removes an appended module signature. Checking
// the RSA signatures in software (TCG) costs more than half of the
// guest's module loading time; the module code is unchanged. The kernel
// notes the unsigned module once and loads it (Debian does not enforce
// signatures).
func stripModuleSignature(b []byte) []byte {
	if !bytes.HasSuffix(b, []byte(moduleSigMagic)) {
		return b
	}
	end := len(b) - len(moduleSigMagic)
	const infoLen = 12 // struct module_signature
	if end < infoLen {
		return b
	}
	info := b[end-infoLen : end]
	signer, keyID := int(info[3]), int(info[4])
	sigLen := int(binary.BigEndian.Uint32(info[8:12]))
	start := end - infoLen - sigLen - signer - keyID
	if start < 0 {
		return b
	}
	return b[:start]
}

// cpioWriter writes the "newc" (070701) cpio format the kernel unpacks.
// The first error sticks; later calls do nothing.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func newCpioWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
)

func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, modeDir|0o755, 0, 0, nil) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, modeReg|perm, 0, 0, b) }
func (c *cpioWriter) symlink(name, target string) {
	c.entry(name, modeLink|0o777, 0, 0, []byte(target))
}
func (c *cpioWriter) trailer() { c.entry("TRAILER!!!", 0, 0, 0, nil) }

func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.entry(name, modeChr|perm, major, minor, nil)
}

func (c *cpioWriter) fileFromDisk(name string, perm uint32, src string) {
	if c.err != nil {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		c.err = err
		return
	}
	c.file(name, perm, b)
}
