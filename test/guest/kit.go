// Package guest boots a throw-away QEMU (TCG) guest running a stock Debian
// kernel with the real Linux iSCSI initiator (open-iscsi + iscsi_tcp + sd),
// so end-to-end tests can attach a target's LUNs exactly as a Kubernetes
// node does. See docs/testing.md.
//
// The guest has no disk image: its root is the host's / over virtio-9p
// (read-only, with a tmpfs overlay), so it runs the host's mkfs.ext4,
// sha256sum, bash, ... and the open-iscsi tools unpacked into the Kit. A
// second, writable 9p share is the job directory: the job script and its
// parameters go in, logs, markers and results come out.
//
// The only network path out of the guest is a slirp guestfwd per portal
// (10.0.2.100:3260 by default) to a socat that connects to the target on
// host loopback.
package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// kitFormat changes whenever the kit layout, the init script or the module
// list changes in a way that needs a rebuild. It is part of the cache key.
const kitFormat = "guest-kit/v2"

// Kit is a prepared, verified guest kit: a kernel, an initramfs and an
// unpacked open-iscsi tree.
type Kit struct {
	// Dir is the kit's directory (one per cache key).
	Dir string
	// Kernel (an uncompressed vmlinux, booted through its PVH entry) and
	// Initramfs are the paths QEMU boots.
	Kernel, Initramfs string
	// Root is the unpacked open-iscsi tree (sbin/iscsiadm, sbin/iscsid,
	// etc/iscsi/iscsid.conf, the libraries the host lacks).
	Root string
	// KernelRelease is the guest's `uname -r`, e.g. 6.1.0-56-amd64.
	KernelRelease string
	// Packages maps each downloaded Debian package to its version.
	Packages map[string]string
	// Modules lists the kernel modules in the initramfs, in load order.
	Modules []string
}

// Iscsiadm and Iscsid return the paths of the unpacked tools.
func (k *Kit) Iscsiadm() string { return filepath.Join(k.Root, "sbin", "iscsiadm") }

// Iscsid returns the path of the unpacked iscsid.
func (k *Kit) Iscsid() string { return filepath.Join(k.Root, "sbin", "iscsid") }

// LibraryPath is the LD_LIBRARY_PATH the unpacked tools need.
func (k *Kit) LibraryPath() string {
	return strings.Join([]string{
		filepath.Join(k.Root, "usr", "lib", "x86_64-linux-gnu"),
		filepath.Join(k.Root, "lib", "x86_64-linux-gnu"),
	}, ":")
}

// KitOptions configures PrepareKit.
type KitOptions struct {
	// CacheDir holds kits, one subdirectory per cache key. Default:
	// DefaultCacheDir().
	CacheDir string
	// Logf receives progress messages (e.g. t.Logf). Optional.
	Logf func(format string, args ...any)
	// Busybox is a statically linked busybox; default /bin/busybox (Debian
	// busybox-static).
	Busybox string
}

// DefaultCacheDir is $ISCSI_TARGET_CACHE/guest-kit, or
// <repo>/out/cache/guest-kit. Never /tmp: the kit takes a while to build
// and is meant to be reused by every later run.
func DefaultCacheDir() string {
	if c := os.Getenv("ISCSI_TARGET_CACHE"); c != "" {
		return filepath.Join(c, "guest-kit")
	}
	return filepath.Join(RepoRoot(), "out", "cache", "guest-kit")
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// kitManifest is kit.json, written last: a kit without a valid manifest is
// half-built and gets rebuilt.
type kitManifest struct {
	Format        string            `json:"format"`
	Key           string            `json:"key"`
	KernelRelease string            `json:"kernel_release"`
	Packages      map[string]string `json:"packages"`
	Modules       []string          `json:"modules"`
	Files         []manifestFile    `json:"files"`
	Built         time.Time         `json:"built"`
	BuildSeconds  float64           `json:"build_seconds"`
}

type manifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Link   string `json:"link,omitempty"`
	Dir    bool   `json:"dir,omitempty"`
}

// kernelMetaPackage is the Debian package whose dependency names the
// current kernel image.
const kernelMetaPackage = "linux-image-amd64"

// initiatorPackages are unpacked into Kit.Root.
var initiatorPackages = []string{"open-iscsi", "libopeniscsiusr", "libisns0"}

// guestModules are loaded by /init (with their modules.dep dependencies,
// dependencies first). The crypto providers come first: nothing in the
// guest can run modprobe for crypto-crc32c, crct10dif, crc64-rocksoft.
var guestModules = []string{
	"crc32c_generic", "crc32c_intel", "libcrc32c",
	"crct10dif_generic", "crct10dif_pclmul", "crc64_rocksoft_generic",
	"virtio_pci", "virtio_net", "9pnet_virtio", "9p", "overlay",
	"scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp",
	"sd_mod", "ext4",
}

// PrepareKit returns a verified kit for the kernel and open-iscsi versions
// apt offers now, building it on first use. It is idempotent, safe when
// several processes race (a lock file serialises them) and rebuilds a kit
// whose files do not match its manifest.
func PrepareKit(ctx context.Context, o KitOptions) (*Kit, error) {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	return underCacheLock(ctx, o, "kit", prepareLocked)
}

// underCacheLock runs prepare with o.CacheDir created and locked against
// other processes. Stale package lists give 404s, so when prepare fails to
// download as root it refreshes them once and tries again.
func underCacheLock[T any](ctx context.Context, o KitOptions, what string, prepare func(context.Context, KitOptions) (T, error)) (T, error) {
	var zero T
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return zero, fmt.Errorf("guest: %s cache: %w", what, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(o.CacheDir, ".lock"))
	if err != nil {
		return zero, err
	}
	defer unlock()
	v, err := prepare(ctx, o)
	if err != nil && errors.Is(err, errDownload) && os.Geteuid() == 0 {
		o.Logf("guest: %v; running apt-get update and retrying", err)
		if out, uerr := run(ctx, "", nil, "apt-get", "update", "-qq"); uerr != nil {
			return zero, fmt.Errorf("guest: apt-get update: %v\n%s", uerr, out)
		}
		v, err = prepare(ctx, o)
	}
	return v, err
}

var errDownload = errors.New("apt-get download failed")

func prepareLocked(ctx context.Context, o KitOptions) (*Kit, error) {
	pkgs, err := resolvePackages(ctx, o.CacheDir)
	if err != nil {
		// Offline or no apt: any complete kit will do.
		if k := newestValidKit(o.CacheDir); k != nil {
			o.Logf("guest: resolving packages failed (%v); using cached kit %s", err, k.Dir)
			return k, nil
		}
		return nil, err
	}
	bbSum, err := FileSHA256(o.Busybox)
	if err != nil {
		return nil, fmt.Errorf("guest: busybox: %w", err)
	}
	key := cacheKey(pkgs, bbSum)
	dir := filepath.Join(o.CacheDir, key)
	if k, err := loadKit(dir); err == nil {
		return k, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		o.Logf("guest: cached kit %s is invalid (%v); rebuilding", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("guest: remove stale kit: %w", err)
	}
	start := time.Now()
	o.Logf("guest: building kit %s (%s)", key, describePackages(pkgs))
	tmp := filepath.Join(o.CacheDir, fmt.Sprintf(".build-%s-%d", key, os.Getpid()))
	_ = os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	m, err := buildKit(ctx, tmp, pkgs, o)
	if err != nil {
		return nil, err
	}
	m.Key = key
	m.Built = time.Now().UTC()
	m.BuildSeconds = time.Since(start).Seconds()
	if err := writeManifest(tmp, m); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("guest: install kit: %w", err)
	}
	o.Logf("guest: kit built in %.1fs: %s", m.BuildSeconds, dir)
	removeStaleKits(o.CacheDir, key)
	return loadKit(dir)
}

// resolvedPackages is apt's answer: the kernel image package and the
// candidate version of every package the kit downloads.
type resolvedPackages struct {
	Kernel        string // e.g. linux-image-6.1.0-56-amd64
	KernelRelease string // e.g. 6.1.0-56-amd64
	Versions      map[string]string
}

func describePackages(p *resolvedPackages) string {
	var s []string
	for _, n := range sortedKeys(p.Versions) {
		s = append(s, n+"="+p.Versions[n])
	}
	return strings.Join(s, " ")
}

// resolvePackages asks apt which kernel image linux-image-amd64 depends on
// and which versions it offers. apt-cache takes 0.5 s per call on hosts
// without a pkgcache.bin (Docker-style apt configs), so the answer is
// cached in resolvedFile, keyed by a fingerprint of apt's inputs.
func resolvePackages(ctx context.Context, cacheDir string) (*resolvedPackages, error) {
	fp := aptFingerprint()
	cachePath := filepath.Join(cacheDir, resolvedFile)
	var cached struct {
		Fingerprint string            `json:"fingerprint"`
		Packages    *resolvedPackages `json:"packages"`
	}
	if b, err := os.ReadFile(cachePath); err == nil && json.Unmarshal(b, &cached) == nil &&
		cached.Fingerprint == fp && cached.Packages != nil && cached.Packages.Kernel != "" {
		return cached.Packages, nil
	}
	out, err := run(ctx, "", nil, "apt-cache", "depends", kernelMetaPackage)
	if err != nil {
		return nil, fmt.Errorf("guest: apt-cache depends %s: %v\n%s", kernelMetaPackage, err, out)
	}
	kernel := ""
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if n, ok := strings.CutPrefix(l, "Depends: "); ok && strings.HasPrefix(n, "linux-image-") && strings.HasSuffix(n, "-amd64") {
			kernel = n
			break
		}
	}
	if kernel == "" {
		return nil, fmt.Errorf("guest: %s depends on no linux-image-*-amd64:\n%s", kernelMetaPackage, out)
	}
	p := &resolvedPackages{
		Kernel:        kernel,
		KernelRelease: strings.TrimPrefix(kernel, "linux-image-"),
	}
	if p.Versions, err = candidateVersions(ctx, append([]string{kernel}, initiatorPackages...)); err != nil {
		return nil, err
	}
	cached.Fingerprint, cached.Packages = fp, p
	if b, err := json.Marshal(cached); err == nil {
		_ = os.WriteFile(cachePath, b, 0o644)
	}
	return p, nil
}

// resolvedFile caches resolvePackages' answer in the cache directory.
const resolvedFile = "resolved.json"

// aptFingerprint summarises what apt's candidate choice depends on: the
// package lists, sources, preferences and the dpkg status.
func aptFingerprint() string {
	h := sha256.New()
	var paths []string
	for _, g := range []string{"/var/lib/apt/lists/*", "/etc/apt/sources.list", "/etc/apt/sources.list.d/*",
		"/etc/apt/preferences", "/etc/apt/preferences.d/*", "/var/lib/dpkg/status"} {
		m, _ := filepath.Glob(g)
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// candidateVersions returns apt's candidate version of each package.
func candidateVersions(ctx context.Context, pkgs []string) (map[string]string, error) {
	out, err := run(ctx, "", nil, "apt-cache", append([]string{"policy"}, pkgs...)...)
	if err != nil {
		return nil, fmt.Errorf("guest: apt-cache policy: %v\n%s", err, out)
	}
	versions := map[string]string{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, " ") && strings.HasSuffix(l, ":") {
			cur = strings.TrimSuffix(l, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate: "); ok && cur != "" && v != "(none)" {
			versions[cur] = v
		}
	}
	for _, p := range pkgs {
		if versions[p] == "" {
			return nil, fmt.Errorf("guest: apt offers no candidate for %s:\n%s", p, out)
		}
	}
	return versions, nil
}

func cacheKey(p *resolvedPackages, busyboxSHA string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", kitFormat, busyboxSHA)
	for _, n := range sortedKeys(p.Versions) {
		fmt.Fprintf(h, "%s=%s\n", n, p.Versions[n])
	}
	fmt.Fprintf(h, "%s\n%s\n", strings.Join(guestModules, ","), initScript)
	return p.KernelRelease + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

func buildKit(ctx context.Context, dir string, p *resolvedPackages, o KitOptions) (*kitManifest, error) {
	dl := filepath.Join(dir, "dl")
	kroot := filepath.Join(dir, "kernel")
	root := filepath.Join(dir, "root")
	for _, d := range []string{dl, kroot, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
	}
	m := &kitManifest{Format: kitFormat, KernelRelease: p.KernelRelease, Packages: map[string]string{}}

	// Downloads: the kernel image and the initiator packages, then any
	// library package they depend on that the host lacks.
	var want []string
	for _, n := range sortedKeys(p.Versions) {
		want = append(want, n+"="+p.Versions[n])
		m.Packages[n] = p.Versions[n]
	}
	extra, err := missingLibraryDeps(ctx, initiatorPackages)
	if err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		vs, err := candidateVersions(ctx, extra)
		if err != nil {
			return nil, err
		}
		for _, n := range extra {
			want = append(want, n+"="+vs[n])
			m.Packages[n] = vs[n]
		}
	}
	t0 := time.Now()
	if err := aptDownload(ctx, dl, want); err != nil {
		return nil, err
	}
	o.Logf("guest: downloaded %d packages in %.1fs", len(want), time.Since(t0).Seconds())

	debs, err := filepath.Glob(filepath.Join(dl, "*.deb"))
	if err != nil || len(debs) != len(want) {
		return nil, fmt.Errorf("guest: expected %d .deb files in %s, found %d (%v)", len(want), dl, len(debs), err)
	}
	t0 = time.Now()
	for _, d := range debs {
		dest := root
		if strings.HasPrefix(filepath.Base(d), p.Kernel+"_") {
			dest = kroot
		}
		if out, err := run(ctx, "", nil, "dpkg-deb", "-x", d, dest); err != nil {
			return nil, fmt.Errorf("guest: dpkg -x %s: %v\n%s", filepath.Base(d), err, out)
		}
	}
	o.Logf("guest: unpacked in %.1fs", time.Since(t0).Seconds())

	// The unpacked tools must resolve every library against the host plus
	// the kit; otherwise the guest fails later with a confusing error.
	libPath := (&Kit{Root: root}).LibraryPath()
	for _, b := range []string{"sbin/iscsiadm", "sbin/iscsid"} {
		out, err := run(ctx, "", []string{"LD_LIBRARY_PATH=" + libPath}, "ldd", filepath.Join(root, b))
		if err != nil {
			return nil, fmt.Errorf("guest: ldd %s: %v\n%s", b, err, out)
		}
		if strings.Contains(out, "not found") {
			return nil, fmt.Errorf("guest: %s has unresolved libraries (install them on the host or extend the kit):\n%s", b, out)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "iscsi", "iscsid.conf")); err != nil {
		return nil, fmt.Errorf("guest: open-iscsi package has no iscsid.conf: %w", err)
	}

	// Kernel and initramfs.
	modDir := filepath.Join(kroot, "lib", "modules", p.KernelRelease)
	if _, err := os.Stat(modDir); err != nil {
		return nil, fmt.Errorf("guest: kernel package has no %s: %w", modDir, err)
	}
	t0 = time.Now()
	if err := extractVmlinux(ctx, filepath.Join(kroot, "boot", "vmlinuz-"+p.KernelRelease), filepath.Join(dir, "vmlinux")); err != nil {
		return nil, err
	}
	if err := depmod(ctx, kroot, p.KernelRelease, o.Busybox); err != nil {
		return nil, err
	}
	order, err := resolveModules(modDir, guestModules)
	if err != nil {
		return nil, err
	}
	m.Modules = order
	if err := writeInitramfs(filepath.Join(dir, "initramfs.cpio"), o.Busybox, modDir, p.KernelRelease, order); err != nil {
		return nil, err
	}
	o.Logf("guest: initramfs with %d modules in %.1fs", len(order), time.Since(t0).Seconds())

	if err := os.RemoveAll(kroot); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	if err := os.RemoveAll(dl); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	m.Files = files
	return m, nil
}

// missingLibraryDeps returns the lib* packages the given packages depend
// on (recursively) that are not installed on the host.
func missingLibraryDeps(ctx context.Context, pkgs []string) ([]string, error) {
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p] = true
	}
	queue := append([]string(nil), pkgs...)
	var missing []string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out, err := run(ctx, "", nil, "apt-cache", "depends", "--no-recommends", "--no-suggests",
			"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", p)
		if err != nil {
			return nil, fmt.Errorf("guest: apt-cache depends %s: %v\n%s", p, err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l)
			n, ok := strings.CutPrefix(l, "Depends: ")
			if !ok || strings.HasPrefix(n, "<") || !strings.HasPrefix(n, "lib") || seen[n] {
				continue
			}
			seen[n] = true
			if st, _ := run(ctx, "", nil, "dpkg-query", "-W", "-f=${db:Status-Status}", n); strings.TrimSpace(st) == "installed" {
				continue
			}
			missing = append(missing, n)
			queue = append(queue, n)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

func aptDownload(ctx context.Context, dir string, pkgs []string) error {
	args := []string{"download", "-q"}
	if os.Geteuid() == 0 {
		// apt drops to _apt, which cannot write a root-owned cache dir.
		args = append(args, "-o", "APT::Sandbox::User=root")
	}
	args = append(args, pkgs...)
	if out, err := run(ctx, dir, nil, "apt-get", args...); err != nil {
		return fmt.Errorf("%w: %v\n%s", errDownload, err, out)
	}
	return nil
}

func depmod(ctx context.Context, root, release, busybox string) error {
	if p, err := exec.LookPath("depmod"); err == nil {
		if out, err := run(ctx, "", nil, p, "-b", root, release); err != nil {
			return fmt.Errorf("guest: depmod: %v\n%s", err, out)
		}
		return nil
	}
	if out, err := run(ctx, "", nil, busybox, "depmod", "-b", root, release); err != nil {
		return fmt.Errorf("guest: busybox depmod: %v\n%s", err, out)
	}
	return nil
}

// resolveModules reads modules.dep under modDir and returns the wanted
// modules plus their dependencies as paths relative to modDir, every
// module after all of its dependencies. Built-in modules are skipped.
func resolveModules(modDir string, want []string) ([]string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	defer f.Close()
	deps, byName, err := parseModulesDep(f)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	return orderModules(deps, byName, builtin, want)
}

// parseModulesDep parses "path: dep dep ..." lines.
func parseModulesDep(r io.Reader) (deps map[string][]string, byName map[string]string, err error) {
	deps = map[string][]string{}
	byName = map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("guest: modules.dep: %w", err)
	}
	return deps, byName, nil
}

func orderModules(deps map[string][]string, byName map[string]string, builtin map[string]bool, want []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(p string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("guest: module dependency cycle at %s", p)
		case 2:
			return nil
		}
		state[p] = 1
		for _, d := range deps[p] {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}
	for _, w := range want {
		n := moduleName(w)
		p, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("guest: kernel has no module %s", w)
		}
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName turns kernel/drivers/scsi/sd_mod.ko(.xz) into sd_mod; '-'
// and '_' are interchangeable in module names.
func moduleName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func writeManifest(dir string, m *kitManifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, "kit.json")
	f, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("guest: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("guest: %w", err)
	}
	return f.Close()
}

// readManifest reads dir/kit.json, checks its format and verifies every
// file it lists. The error wraps fs.ErrNotExist when there is no manifest.
func readManifest(dir, format string) (*kitManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kit.json"))
	if err != nil {
		return nil, err
	}
	var m kitManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("kit.json: %v", err)
	}
	if m.Format != format {
		return nil, fmt.Errorf("kit format %q, want %q", m.Format, format)
	}
	if len(m.Files) == 0 {
		return nil, errors.New("kit.json lists no files")
	}
	for _, f := range m.Files {
		if err := verifyFile(dir, f); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// loadKit reads and verifies a kit directory. The error wraps
// fs.ErrNotExist when there is no kit at all.
func loadKit(dir string) (*Kit, error) {
	m, err := readManifest(dir, kitFormat)
	if err != nil {
		return nil, err
	}
	k := &Kit{
		Dir:           dir,
		Kernel:        filepath.Join(dir, "vmlinux"),
		Initramfs:     filepath.Join(dir, "initramfs.cpio"),
		Root:          filepath.Join(dir, "root"),
		KernelRelease: m.KernelRelease,
		Packages:      m.Packages,
		Modules:       m.Modules,
	}
	for _, p := range []string{k.Kernel, k.Initramfs, k.Iscsiadm(), k.Iscsid()} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kit incomplete: %w", err)
		}
	}
	return k, nil
}

func verifyFile(dir string, f manifestFile) error {
	p := filepath.Join(dir, f.Path)
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("kit file: %w", err)
	}
	switch {
	case f.Dir:
		if !st.IsDir() {
			return fmt.Errorf("kit: %s is not a directory", f.Path)
		}
	case f.Link != "":
		l, err := os.Readlink(p)
		if err != nil || l != f.Link {
			return fmt.Errorf("kit: %s links to %q, want %q (%v)", f.Path, l, f.Link, err)
		}
	default:
		if !st.Mode().IsRegular() || st.Size() != f.Size {
			return fmt.Errorf("kit: %s has size %d, want %d", f.Path, st.Size(), f.Size)
		}
		sum, err := FileSHA256(p)
		if err != nil {
			return err
		}
		if sum != f.SHA256 {
			return fmt.Errorf("kit: %s has sha256 %s, want %s", f.Path, sum, f.SHA256)
		}
	}
	return nil
}

func listFiles(dir string) ([]manifestFile, error) {
	var files []manifestFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || rel == "kit.json" {
			return nil
		}
		switch {
		case d.IsDir():
			files = append(files, manifestFile{Path: rel, Dir: true})
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, manifestFile{Path: rel, Link: l})
		case d.Type().IsRegular():
			st, err := d.Info()
			if err != nil {
				return err
			}
			sum, err := FileSHA256(p)
			if err != nil {
				return err
			}
			files = append(files, manifestFile{Path: rel, Size: st.Size(), SHA256: sum})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("guest: list kit: %w", err)
	}
	return files, nil
}

func newestValidKit(cache string) *Kit {
	ents, err := os.ReadDir(cache)
	if err != nil {
		return nil
	}
	var best *Kit
	var bestTime time.Time
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		k, err := loadKit(filepath.Join(cache, e.Name()))
		if err != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(k.Dir, "kit.json"))
		if err == nil && st.ModTime().After(bestTime) {
			best, bestTime = k, st.ModTime()
		}
	}
	return best
}

// removeStaleKits deletes kits for other keys and leftovers of crashed
// builds. The caller holds the lock, so no build is running.
func removeStaleKits(cache, keep string) {
	ents, err := os.ReadDir(cache)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Name() == keep || !e.IsDir() {
			continue
		}
		_ = os.RemoveAll(filepath.Join(cache, e.Name()))
	}
}

// lockFile takes an exclusive flock on path, polling so ctx can end the
// wait. The returned function releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("guest: lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("guest: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("guest: waiting for kit lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// run executes a command with a bounded context and returns its combined
// output.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Env = append(cmd.Environ(), "LC_ALL=C")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return buf.String(), err
}

// FileSHA256 returns the hex SHA-256 of the file at p.
func FileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// extractVmlinux decompresses the kernel inside a bzImage. QEMU boots
// the ELF through its PVH entry point; under TCG that saves about 4 s per
// boot over the bzImage path (real-mode setup and an XZ decompressor
// running in emulation).
func extractVmlinux(ctx context.Context, bzImage, out string) error {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	formats := []struct {
		magic string
		cmd   []string
	}{
		{"\xfd7zXZ\x00", []string{"xz", "-dc", "--single-stream"}},
		{"\x28\xb5\x2f\xfd", []string{"zstd", "-dc"}},
		{"\x1f\x8b\x08", []string{"gzip", "-dc"}},
	}
	for _, f := range formats {
		for off := 0; ; {
			i := bytes.Index(b[off:], []byte(f.magic))
			if i < 0 {
				break
			}
			off += i
			ok, err := decompressELF(ctx, b[off:], f.cmd, out)
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
			off++
		}
	}
	return fmt.Errorf("guest: found no compressed ELF kernel in %s", bzImage)
}

// decompressELF runs cmd on data and keeps the output at out if it is an
// x86-64 ELF file with a PVH entry note.
func decompressELF(ctx context.Context, data []byte, cmd []string, out string) (bool, error) {
	f, err := os.Create(out)
	if err != nil {
		return false, fmt.Errorf("guest: %w", err)
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Stdin = bytes.NewReader(data)
	c.Stdout = f
	runErr := c.Run()
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("guest: %w", err)
	}
	if errors.Is(runErr, exec.ErrNotFound) {
		return false, fmt.Errorf("guest: %s is needed to unpack the kernel: %w", cmd[0], runErr)
	}
	if runErr == nil {
		if ok, _ := hasPVHNote(out); ok {
			return true, nil
		}
	}
	_ = os.Remove(out)
	return false, nil
}

// hasPVHNote reports whether the ELF file has XEN_ELFNOTE_PHYS32_ENTRY,
// which QEMU needs to boot it directly.
func hasPVHNote(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return false, nil
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return false, err
		}
		for len(b) >= 12 {
			nameSz := int(f.ByteOrder.Uint32(b[0:4]))
			descSz := int(f.ByteOrder.Uint32(b[4:8]))
			typ := f.ByteOrder.Uint32(b[8:12])
			name := (nameSz + 3) &^ 3
			desc := (descSz + 3) &^ 3
			if 12+name+desc > len(b) {
				break
			}
			const xenElfnotePhys32Entry = 18
			if typ == xenElfnotePhys32Entry && nameSz >= 3 && string(b[12:15]) == "Xen" {
				return true, nil
			}
			b = b[12+name+desc:]
		}
	}
	return false, nil
}

// isStatic reports whether the ELF file at p has no program interpreter.
func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
