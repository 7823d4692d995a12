package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MariaDB kit: Debian bookworm's MariaDB server and client, unpacked (never
// installed) next to the guest kit, plus a data directory bootstrapped on
// the host. Guest jobs run the server from the unpacked tree over the 9p
// root and copy the template onto the filesystem under test, which saves
// the minute mariadb-install-db takes under TCG.
//
// It lives in its own cache directory ($ISCSI_TARGET_CACHE/guest-mariadb),
// so adding it changes nothing in the guest kit's cache.

// mariadbFormat is part of the cache key and the manifest; bump it when the
// layout, the bootstrap options or MariaDBConf change.
const mariadbFormat = "guest-mariadb/v1"

// mariadbPackages hold mariadbd, mariadb-install-db, the client and the
// shared files (error messages, charsets, system table SQL). The
// mariadb-server and mariadb-client packages add only service scripts and
// Perl tools on top of them.
var mariadbPackages = []string{"mariadb-server-core", "mariadb-client-core"}

// MariaDBConf is the option file every guest server uses (the template is
// bootstrapped with it too). @ROOT@ is replaced with the unpacked tree.
// Durability settings are the production ones a MySQL pod runs with:
// every commit is written and flushed to the redo log before the client
// hears OK (innodb_flush_log_at_trx_commit=1), doublewrite on, O_DIRECT.
// Sizes are small so a 256 MiB LUN and TCG are enough.
const MariaDBConf = `[mariadbd]
user = root
basedir = @ROOT@/usr
lc-messages-dir = @ROOT@/usr/share/mysql
character-sets-dir = @ROOT@/usr/share/mysql/charsets
plugin-dir = @ROOT@/usr/lib/mysql/plugin
socket = /run/mariadb.sock
pid-file = /run/mariadb.pid
skip-networking
skip-name-resolve
skip-log-bin
performance-schema = OFF
innodb-buffer-pool-size = 32M
innodb-log-file-size = 8M
innodb-log-buffer-size = 2M
innodb-data-file-path = ibdata1:4M:autoextend
innodb-flush-log-at-trx-commit = 1
innodb-doublewrite = 1
innodb-flush-method = O_DIRECT
innodb-use-native-aio = 0
max-connections = 20

[client]
socket = /run/mariadb.sock
user = root
`

// MariaDB is a prepared MariaDB kit.
type MariaDB struct {
	// Dir is the kit directory (one per cache key).
	Dir string
	// Root is the unpacked package tree (usr/sbin/mariadbd, usr/bin/mariadb,
	// usr/share/mysql, ...).
	Root string
	// Template is a bootstrapped, cleanly shut down data directory (system
	// tables, no user data). Copy it with cp -a --sparse=always: ibdata1 is
	// mostly zeros.
	Template string
	// Conf is the option file (MariaDBConf with the kit's paths).
	Conf string
	// Packages maps each downloaded Debian package to its version.
	Packages map[string]string
}

// Mariadbd, Client and InstallDB return the paths of the unpacked programs.
func (m *MariaDB) Mariadbd() string { return filepath.Join(m.Root, "usr", "sbin", "mariadbd") }

// Client returns the path of the mariadb command-line client.
func (m *MariaDB) Client() string { return filepath.Join(m.Root, "usr", "bin", "mariadb") }

// InstallDB returns the path of mariadb-install-db.
func (m *MariaDB) InstallDB() string {
	return filepath.Join(m.Root, "usr", "bin", "mariadb-install-db")
}

// LibraryPath is the LD_LIBRARY_PATH for library packages the host lacked.
func (m *MariaDB) LibraryPath() string {
	return strings.Join([]string{
		filepath.Join(m.Root, "usr", "lib", "x86_64-linux-gnu"),
		filepath.Join(m.Root, "lib", "x86_64-linux-gnu"),
	}, ":")
}

// Env is the job environment for the mariadb_* helpers of lib.sh.
func (m *MariaDB) Env() map[string]string {
	return map[string]string{
		"MARIADB_ROOT":         m.Root,
		"MARIADB_CONF":         m.Conf,
		"MARIADB_TEMPLATE":     m.Template,
		"MARIADB_LIBRARY_PATH": m.LibraryPath(),
	}
}

// DefaultMariaDBCacheDir is $ISCSI_TARGET_CACHE/guest-mariadb, or
// <repo>/out/cache/guest-mariadb.
func DefaultMariaDBCacheDir() string {
	return filepath.Join(filepath.Dir(DefaultCacheDir()), "guest-mariadb")
}

// PrepareMariaDB returns a verified MariaDB kit for the versions apt offers
// now, building it on first use (download, unpack, bootstrap the template:
// about 5 s). Like PrepareKit it is idempotent, serialised by a lock file
// and rebuilds a kit whose files do not match its manifest. o.CacheDir
// defaults to DefaultMariaDBCacheDir(); o.Busybox is not used.
func PrepareMariaDB(ctx context.Context, o KitOptions) (*MariaDB, error) {
	if o.CacheDir == "" {
		o.CacheDir = DefaultMariaDBCacheDir()
	}
	return underCacheLock(ctx, o, "mariadb", prepareMariaDBLocked)
}

func prepareMariaDBLocked(ctx context.Context, o KitOptions) (*MariaDB, error) {
	versions, err := resolveMariaDB(ctx, o.CacheDir)
	if err != nil {
		if m := newestValidMariaDB(o.CacheDir); m != nil {
			o.Logf("guest: resolving MariaDB packages failed (%v); using cached kit %s", err, m.Dir)
			return m, nil
		}
		return nil, err
	}
	key := mariadbKey(versions)
	dir := filepath.Join(o.CacheDir, key)
	if m, err := loadMariaDB(dir); err == nil {
		return m, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		o.Logf("guest: cached MariaDB kit %s is invalid (%v); rebuilding", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("guest: remove stale MariaDB kit: %w", err)
	}
	start := time.Now()
	tmp := filepath.Join(o.CacheDir, fmt.Sprintf(".build-%s-%d", key, os.Getpid()))
	_ = os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	man, err := buildMariaDB(ctx, tmp, dir, versions, o)
	if err != nil {
		return nil, err
	}
	man.Key = key
	man.Built = time.Now().UTC()
	man.BuildSeconds = time.Since(start).Seconds()
	if err := writeManifest(tmp, man); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("guest: install MariaDB kit: %w", err)
	}
	o.Logf("guest: MariaDB kit built in %.1fs: %s", man.BuildSeconds, dir)
	removeStaleKits(o.CacheDir, key)
	return loadMariaDB(dir)
}

// resolveMariaDB returns apt's candidate versions of mariadbPackages,
// cached like resolvePackages.
func resolveMariaDB(ctx context.Context, cacheDir string) (map[string]string, error) {
	fp := aptFingerprint()
	p := filepath.Join(cacheDir, resolvedFile)
	var cached struct {
		Fingerprint string            `json:"fingerprint"`
		Versions    map[string]string `json:"versions"`
	}
	if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &cached) == nil &&
		cached.Fingerprint == fp && len(cached.Versions) == len(mariadbPackages) {
		return cached.Versions, nil
	}
	v, err := candidateVersions(ctx, mariadbPackages)
	if err != nil {
		return nil, err
	}
	cached.Fingerprint, cached.Versions = fp, v
	if b, err := json.Marshal(cached); err == nil {
		_ = os.WriteFile(p, b, 0o644)
	}
	return v, nil
}

func mariadbKey(versions map[string]string) string {
	var s []string
	for _, n := range sortedKeys(versions) {
		s = append(s, n+"="+versions[n])
	}
	sum := sha256Hex(mariadbFormat + "\n" + strings.Join(s, "\n") + "\n" + MariaDBConf)
	return "mariadb-" + strings.TrimPrefix(versions["mariadb-server-core"], "1:") + "-" + sum[:12]
}

// buildMariaDB fills dir (a temporary directory renamed to final when
// done; paths written into files use final).
func buildMariaDB(ctx context.Context, dir, final string, versions map[string]string, o KitOptions) (*kitManifest, error) {
	dl := filepath.Join(dir, "dl")
	root := filepath.Join(dir, "root")
	for _, d := range []string{dl, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
	}
	man := &kitManifest{Format: mariadbFormat, Packages: map[string]string{}}
	var want []string
	for _, n := range sortedKeys(versions) {
		want = append(want, n+"="+versions[n])
		man.Packages[n] = versions[n]
	}
	extra, err := missingLibraryDeps(ctx, mariadbPackages)
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
			man.Packages[n] = vs[n]
		}
	}
	t0 := time.Now()
	if err := aptDownload(ctx, dl, want); err != nil {
		return nil, err
	}
	debs, err := filepath.Glob(filepath.Join(dl, "*.deb"))
	if err != nil || len(debs) != len(want) {
		return nil, fmt.Errorf("guest: expected %d .deb files in %s, found %d (%v)", len(want), dl, len(debs), err)
	}
	for _, d := range debs {
		if out, err := run(ctx, "", nil, "dpkg-deb", "-x", d, root); err != nil {
			return nil, fmt.Errorf("guest: dpkg -x %s: %v\n%s", filepath.Base(d), err, out)
		}
	}
	o.Logf("guest: MariaDB: downloaded and unpacked %d packages in %.1fs", len(want), time.Since(t0).Seconds())
	// Documentation is a third of the tree and never used.
	for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/lintian"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
	}

	tmpKit := &MariaDB{Root: root}
	for _, b := range []string{tmpKit.Mariadbd(), tmpKit.Client()} {
		out, err := run(ctx, "", []string{"LD_LIBRARY_PATH=" + tmpKit.LibraryPath()}, "ldd", b)
		if err != nil {
			return nil, fmt.Errorf("guest: ldd %s: %v\n%s", b, err, out)
		}
		if strings.Contains(out, "not found") {
			return nil, fmt.Errorf("guest: %s has unresolved libraries:\n%s", b, out)
		}
	}

	// The option file names the final location; the bootstrap below runs
	// from the temporary one, so it gets its paths on the command line.
	finalRoot := filepath.Join(final, "root")
	conf := strings.ReplaceAll(MariaDBConf, "@ROOT@", finalRoot)
	if err := os.WriteFile(filepath.Join(dir, "my.cnf"), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	buildConf := strings.ReplaceAll(MariaDBConf, "@ROOT@", root)
	buildConf = strings.ReplaceAll(buildConf, "/run/mariadb.", filepath.Join(dir, "bootstrap."))
	bc := filepath.Join(dir, "bootstrap.cnf")
	if err := os.WriteFile(bc, []byte(buildConf), 0o644); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	t0 = time.Now()
	tmpl := filepath.Join(dir, "datadir")
	out, err := run(ctx, "", []string{"LD_LIBRARY_PATH=" + tmpKit.LibraryPath()}, tmpKit.InstallDB(),
		"--defaults-file="+bc, "--basedir="+filepath.Join(root, "usr"), "--datadir="+tmpl,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if err != nil {
		return nil, fmt.Errorf("guest: mariadb-install-db: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(tmpl, "mysql", "user.frm")); err != nil {
		if _, err2 := os.Stat(filepath.Join(tmpl, "mysql", "global_priv.frm")); err2 != nil {
			return nil, fmt.Errorf("guest: mariadb-install-db left no system tables: %v\n%s", err2, out)
		}
	}
	for _, f := range []string{"bootstrap.cnf", "bootstrap.pid", "bootstrap.sock"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	o.Logf("guest: MariaDB: template data directory bootstrapped in %.1fs", time.Since(t0).Seconds())
	if err := os.RemoveAll(dl); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	man.Files = files
	return man, nil
}

func loadMariaDB(dir string) (*MariaDB, error) {
	man, err := readManifest(dir, mariadbFormat)
	if err != nil {
		return nil, err
	}
	m := &MariaDB{
		Dir:      dir,
		Root:     filepath.Join(dir, "root"),
		Template: filepath.Join(dir, "datadir"),
		Conf:     filepath.Join(dir, "my.cnf"),
		Packages: man.Packages,
	}
	for _, p := range []string{m.Mariadbd(), m.Client(), m.Conf, filepath.Join(m.Template, "ibdata1")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("MariaDB kit incomplete: %w", err)
		}
	}
	return m, nil
}

func newestValidMariaDB(cache string) *MariaDB {
	ents, err := os.ReadDir(cache)
	if err != nil {
		return nil
	}
	var best *MariaDB
	var bestTime time.Time
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := loadMariaDB(filepath.Join(cache, e.Name()))
		if err != nil {
			continue
		}
		if st, err := os.Stat(filepath.Join(m.Dir, "kit.json")); err == nil && st.ModTime().After(bestTime) {
			best, bestTime = m, st.ModTime()
		}
	}
	return best
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// MariaDBShellLib is a job file (name it mariadb.sh and source it after
// lib.sh) with helpers for the kit's server and client; the job needs
// MariaDB.Env in its environment.
//
//	mdb ARGS...                  the mariadb client (socket /run/mariadb.sock, user root)
//	mariadb_start DATADIR TAG [SECS]  start mariadbd on DATADIR, error log $JOB/mariadb-TAG.err;
//	                             wait until it answers (default 300 s)
//	mariadb_stop [SECS]          SHUTDOWN and wait for the server to exit
//	mariadb_load_template DIR    copy the bootstrapped data directory to DIR (sparse)
const MariaDBShellLib = `# mariadb.sh: MariaDB helpers for guest jobs (generated by test/guest).
mdb() { LD_LIBRARY_PATH=$MARIADB_LIBRARY_PATH "$MARIADB_ROOT/usr/bin/mariadb" --defaults-file="$MARIADB_CONF" "$@"; }

mariadb_load_template() {
	cp -a --sparse=always "$MARIADB_TEMPLATE" "$1"
}

mariadb_start() {
	local dir=$1 tag=$2 secs=${3:-300} i
	LD_LIBRARY_PATH=$MARIADB_LIBRARY_PATH setsid "$MARIADB_ROOT/usr/sbin/mariadbd" --defaults-file="$MARIADB_CONF" \
		--datadir="$dir" --log-error="$JOB/mariadb-$tag.err" </dev/null >>"$JOB/mariadb-$tag.out" 2>&1 &
	MARIADB_PID=$!
	for i in $(seq $((secs * 4))); do
		if mdb -N -B -e 'SELECT 1' >/dev/null 2>&1; then log "mariadbd up (pid $MARIADB_PID)"; return 0; fi
		if ! kill -0 $MARIADB_PID 2>/dev/null; then
			log "mariadbd exited during start"; tail -n 30 "$JOB/mariadb-$tag.err" >&2; return 1
		fi
		sleep 0.25
	done
	log "mariadbd did not answer within ${secs}s"; tail -n 30 "$JOB/mariadb-$tag.err" >&2; return 1
}

mariadb_stop() {
	local secs=${1:-120} i
	mdb -e 'SHUTDOWN' >/dev/null 2>&1 || kill "$MARIADB_PID" 2>/dev/null || true
	for i in $(seq $((secs * 4))); do
		kill -0 "$MARIADB_PID" 2>/dev/null || { log "mariadbd stopped"; return 0; }
		sleep 0.25
	done
	log "mariadbd did not stop within ${secs}s"; return 1
}
`
