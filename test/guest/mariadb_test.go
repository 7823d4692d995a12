package guest

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMariaDBKey(t *testing.T) {
	v := map[string]string{"mariadb-server-core": "1:10.11.19-0+deb12u1", "mariadb-client-core": "1:10.11.19-0+deb12u1"}
	k := mariadbKey(v)
	if !strings.HasPrefix(k, "mariadb-10.11.19-0+deb12u1-") || k != mariadbKey(v) {
		t.Fatalf("mariadbKey = %q (not stable or badly named)", k)
	}
	if strings.ContainsAny(k, ", /") {
		t.Errorf("key %q has characters a path or QEMU option cannot take", k)
	}
	v2 := map[string]string{"mariadb-server-core": "1:10.11.20-0+deb12u1", "mariadb-client-core": "1:10.11.19-0+deb12u1"}
	if mariadbKey(v2) == k {
		t.Errorf("a new server version keeps the key %q", k)
	}
	// The guest kit's cache is never touched: the MariaDB kit has its own
	// directory next to it.
	if filepath.Dir(DefaultMariaDBCacheDir()) != filepath.Dir(DefaultCacheDir()) || DefaultMariaDBCacheDir() == DefaultCacheDir() {
		t.Errorf("MariaDB cache %s is not a sibling of the guest kit cache %s", DefaultMariaDBCacheDir(), DefaultCacheDir())
	}
}

func TestMariaDBManifest(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadMariaDB(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty dir: %v, want ErrNotExist", err)
	}
	for p, b := range map[string]string{"root/usr/sbin/mariadbd": "server", "root/usr/bin/mariadb": "client",
		"my.cnf": "[mariadbd]\n", "datadir/ibdata1": "pages"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeManifest(dir, &kitManifest{Format: kitFormat, Files: files}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMariaDB(dir); err == nil {
		t.Fatal("a guest-kit manifest loaded as a MariaDB kit")
	}
	if err := writeManifest(dir, &kitManifest{Format: mariadbFormat, Files: files}); err != nil {
		t.Fatal(err)
	}
	m, err := loadMariaDB(dir)
	if err != nil {
		t.Fatalf("fresh kit: %v", err)
	}
	if m.Template != filepath.Join(dir, "datadir") || m.Conf != filepath.Join(dir, "my.cnf") {
		t.Errorf("paths: %+v", m)
	}
	if err := os.WriteFile(filepath.Join(dir, "datadir/ibdata1"), []byte("PAGES"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMariaDB(dir); err == nil {
		t.Error("kit with a changed template loaded")
	}
}

func TestMariaDBShellLib(t *testing.T) {
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(MariaDBShellLib)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mariadb.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"mdb", "mariadb_load_template", "mariadb_start", "mariadb_stop"} {
		if !strings.Contains(MariaDBShellLib, "\n"+f+"() {") {
			t.Errorf("mariadb.sh has no function %s", f)
		}
	}
	for _, want := range []string{"innodb-flush-log-at-trx-commit = 1", "innodb-doublewrite = 1", "@ROOT@/usr/share/mysql"} {
		if !strings.Contains(MariaDBConf, want) {
			t.Errorf("MariaDBConf lacks %q", want)
		}
	}
}
