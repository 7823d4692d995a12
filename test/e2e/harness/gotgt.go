package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// GotgtVersion is the gotgt release the peers module pins (the newest the
// Go module proxy serves; see test/peers/gotgt/README.md).
const GotgtVersion = "v0.2.2"

// GotgtModuleDir is the separate Go module that builds the stock gotgt
// daemon. The root module never imports gotgt.
func GotgtModuleDir() string { return filepath.Join(RepoRoot(), "test", "peers", "gotgt") }

// BuildGotgt builds the unmodified gotgt daemon from the peers module into
// dir/gotgt (CGO_ENABLED=0) and returns its path. It needs the Go module
// cache or network access to the module proxy.
func BuildGotgt(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "gotgt")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/gostor/gotgt")
	cmd.Dir = GotgtModuleDir()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build gotgt %s: %v\n%s", GotgtVersion, err, buf.String())
	}
	return out, nil
}

var gotgtBuild struct {
	once sync.Once
	path string
	err  error
}

// SharedGotgt builds gotgt once per process into CacheDir and returns the
// binary (the build replaces the file atomically, so parallel runs are safe).
func SharedGotgt(ctx context.Context) (string, error) {
	g := &gotgtBuild
	g.once.Do(func() {
		dir, err := CacheDir()
		if err != nil {
			g.err = err
			return
		}
		tmp, err := os.MkdirTemp(dir, "gotgt-build-")
		if err != nil {
			g.err = err
			return
		}
		defer os.RemoveAll(tmp)
		bin, err := BuildGotgt(ctx, tmp)
		if err != nil {
			g.err = err
			return
		}
		g.path = filepath.Join(dir, "gotgt-"+GotgtVersion)
		g.err = os.Rename(bin, g.path)
	})
	return g.path, g.err
}

// GotgtOptions configures LaunchGotgt.
type GotgtOptions struct {
	// Bin is the gotgt binary; default SharedGotgt.
	Bin string
	// Dir for the configuration, images and log; default a temporary
	// directory that Close removes.
	Dir string
	// Port inside the private namespace; default 3260.
	Port int
	// IQN; default iqn.2016-09.com.gotgt.gostor:example-tgt-0.
	IQN string
	// PlainSize of LUN 0 (default 512 MiB) and ThinSize of LUN 1 (default
	// 64 MiB, thinProvisioning=true). gotgt has no read-only or removable
	// LUN option, so those kinds fall back to the plain LUN.
	PlainSize, ThinSize int64
	// NoThin leaves out LUN 1.
	NoThin bool
}

// gotgtConfig mirrors the JSON that gotgt's config.Load reads from
// $GOSTOR_CONFIG/config.json (field names from its documentation).
type gotgtConfig struct {
	Storages []gotgtStorage         `json:"storages"`
	Portals  []gotgtPortal          `json:"iscsiportals"`
	Targets  map[string]gotgtTarget `json:"iscsitargets"`
}

type gotgtTarget struct {
	TPGTs map[string][]uint64 `json:"tpgts"`
	LUNs  map[string]uint64   `json:"luns"`
}

type gotgtStorage struct {
	DeviceID         uint64 `json:"deviceID"`
	Path             string `json:"path"`
	Online           bool   `json:"online"`
	ThinProvisioning bool   `json:"thinProvisioning"`
	BlockShift       uint   `json:"blockShift"`
}

type gotgtPortal struct {
	ID     uint16 `json:"id"`
	Portal string `json:"portal"`
}

// LaunchGotgt starts the stock gotgt daemon in a new private network
// namespace (gotgt listens on every interface and its HTTP API on
// 127.0.0.1:23457, so it must not share the host's). Initiator tools must
// run through Peer.Command. The caller must Close the peer, which also
// deletes the namespace.
func LaunchGotgt(ctx context.Context, o GotgtOptions) (*Peer, error) {
	if m := MissingTools("ip"); len(m) > 0 {
		return nil, fmt.Errorf("gotgt: missing ip (Debian package iproute2)")
	}
	if o.Bin == "" {
		bin, err := SharedGotgt(ctx)
		if err != nil {
			return nil, err
		}
		o.Bin = bin
	}
	p := &Peer{Name: "gotgt", Version: "gotgt " + GotgtVersion}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "gotgt-peer-")
		if err != nil {
			return nil, err
		}
		o.Dir = d
		p.closers = append(p.closers, func() error { return os.RemoveAll(d) })
	}
	if o.Port == 0 {
		o.Port = 3260
	}
	if o.IQN == "" {
		o.IQN = "iqn.2016-09.com.gotgt.gostor:example-tgt-0"
	}
	if o.PlainSize == 0 {
		o.PlainSize = 512 << 20
	}
	if o.ThinSize == 0 {
		o.ThinSize = 64 << 20
	}
	p.Dir = o.Dir
	p.Portal = "127.0.0.1:" + strconv.Itoa(o.Port)
	p.LogPath = filepath.Join(o.Dir, "gotgt.log")
	p.LUs = map[LUNKind]LU{KindPlain: {o.IQN, 0}}

	cfg := gotgtConfig{
		Portals: []gotgtPortal{{ID: 0, Portal: p.Portal}},
	}
	luns := map[string]uint64{"0": 1000}
	type image struct {
		name string
		size int64
		thin bool
	}
	imgs := []image{{"plain.img", o.PlainSize, false}}
	if !o.NoThin {
		imgs = append(imgs, image{"thin.img", o.ThinSize, true})
		luns["1"] = 1001
		p.LUs[KindThin] = LU{o.IQN, 1}
	}
	for i, im := range imgs {
		path := filepath.Join(o.Dir, im.name)
		if err := makeSparse(path, im.size); err != nil {
			_ = p.Close()
			return nil, err
		}
		cfg.Storages = append(cfg.Storages, gotgtStorage{
			DeviceID: uint64(1000 + i), Path: "file:" + path, Online: true,
			ThinProvisioning: im.thin, BlockShift: 9,
		})
	}
	cfg.Targets = map[string]gotgtTarget{o.IQN: {TPGTs: map[string][]uint64{"1": {0}}, LUNs: luns}}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "config.json"), js, 0o644); err != nil {
		_ = p.Close()
		return nil, err
	}

	ns, delNS, err := NewNetns(ctx)
	if err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("gotgt: %w", err)
	}
	p.Netns = ns
	p.closers = append(p.closers, delNS)
	p.proc = &proc{
		argv:    []string{"ip", "netns", "exec", ns, o.Bin, "daemon", "--port", strconv.Itoa(o.Port), "--log", "info"},
		env:     []string{"GOSTOR_CONFIG=" + o.Dir, "HOME=" + o.Dir},
		dir:     o.Dir,
		logPath: p.LogPath,
	}
	p.startFn = func(ctx context.Context) error {
		if err := p.proc.start(); err != nil {
			return err
		}
		return WaitListeningIn(ns, p.Portal, 20*time.Second, func() bool { return !p.proc.exited() })
	}
	p.stopFn = func() error { return p.proc.stop(10 * time.Second) }
	if err := p.launch(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// StartGotgt is LaunchGotgt for tests: prerequisites fail under CI=true and
// skip otherwise; the peer is closed when the test ends.
func StartGotgt(t testing.TB, o GotgtOptions) *Peer {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "ip", "go")
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute)
	defer cancel()
	p, err := LaunchGotgt(ctx, o)
	if err != nil {
		t.Fatalf("start gotgt: %v", err)
	}
	p.attach(t)
	return p
}
