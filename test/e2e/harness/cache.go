package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// CacheDir returns a directory that survives the test process
// ($ISCSI_TARGET_CACHE/harness, else a per-repository directory in the
// user cache) for binaries built by the harness (our daemon for
// SharedBuilder, gotgt for SharedGotgt). Later runs overwrite them, so
// nothing accumulates.
func CacheDir() (string, error) {
	var dir string
	if c := os.Getenv("ISCSI_TARGET_CACHE"); c != "" {
		dir = filepath.Join(c, "harness")
	} else {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		sum := sha256.Sum256([]byte(RepoRoot()))
		dir = filepath.Join(base, "iscsi-target-e2e", hex.EncodeToString(sum[:6]))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("harness: cache dir: %w", err)
	}
	return dir, nil
}

var shared struct {
	once sync.Once
	b    *Builder
	dir  string
	err  error
}

// SharedBuilder returns one race-enabled Builder per test process and a
// directory that outlives individual tests to build into, so every test of
// the package can call StartTarget(t, b, dir, ...) and reuse one build.
func SharedBuilder() (*Builder, string, error) {
	shared.once.Do(func() {
		shared.b = &Builder{Race: true}
		dir, err := CacheDir()
		if err != nil {
			shared.err = err
			return
		}
		reapStaleBuilds(dir)
		shared.dir = filepath.Join(dir, fmt.Sprintf("ours-%d", os.Getpid()))
		shared.err = os.MkdirAll(shared.dir, 0o755)
	})
	return shared.b, shared.dir, shared.err
}

// reapStaleBuilds removes ours-<pid> build directories of processes that
// have exited (a binary in use by a live process is never replaced).
func reapStaleBuilds(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "ours-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(rest)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
