//go:build e2e

package guest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMariaDBKit builds (or loads) the MariaDB kit and runs its server on
// the host from a copy of the template data directory: the system tables
// load, an InnoDB table takes a commit, and the server shuts down cleanly.
// A second PrepareMariaDB must come from the cache.
func TestMariaDBKit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	m, err := PrepareMariaDB(ctx, KitOptions{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MariaDB kit %s ready in %v: %v", m.Dir, time.Since(start).Round(time.Millisecond), m.Packages)
	start = time.Now()
	m2, err := PrepareMariaDB(ctx, KitOptions{})
	if err != nil || m2.Dir != m.Dir {
		t.Fatalf("second PrepareMariaDB: %v, dir %v, want the cached %s", err, m2, m.Dir)
	}
	t.Logf("cached kit verified in %v", time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if out, err := exec.CommandContext(ctx, "cp", "-a", "--sparse=always", m.Template, data).CombinedOutput(); err != nil {
		t.Fatalf("copy template: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "s.sock")
	env := append(os.Environ(), "LD_LIBRARY_PATH="+m.LibraryPath())
	srv := exec.Command(m.Mariadbd(), "--defaults-file="+m.Conf, "--datadir="+data, "--socket="+sock,
		"--pid-file="+filepath.Join(dir, "pid"), "--log-error="+filepath.Join(dir, "err.log"))
	srv.Env = env
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		<-done
	})
	client := func(sql string) (string, error) {
		c := exec.CommandContext(ctx, m.Client(), "--defaults-file="+m.Conf, "--socket="+sock, "-N", "-B", "-e", sql)
		c.Env = env
		out, err := c.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := client("SELECT 1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "err.log"))
			t.Fatalf("server did not answer within a minute:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := client("CREATE DATABASE d; CREATE TABLE d.t (a INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO d.t VALUES (1),(2); " +
		"SELECT SUM(a), @@innodb_flush_log_at_trx_commit, (SELECT COUNT(*) FROM mysql.global_priv) > 0 FROM d.t")
	if err != nil || out != "3\t1\t1" {
		t.Fatalf("client: %v: %q, want \"3\\t1\\t1\"", err, out)
	}
	if out, err := client("SHUTDOWN"); err != nil {
		t.Fatalf("SHUTDOWN: %v: %s", err, out)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("server exit: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("server did not exit after SHUTDOWN")
	}
}
