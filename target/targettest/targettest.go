// Package targettest runs an in-process iSCSI target on 127.0.0.1:0 over
// memory LUNs, and provides a raw-PDU initiator to drive it, in the style of
// net/http/httptest. It is for tests only.
package targettest

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
)

// LUN describes one memory-backed logical unit.
type LUN struct {
	Size      int64 // bytes; default 16 MiB
	BlockSize uint32
	ReadOnly  bool
	Thin      bool
	Removable bool
}

// Options configures Start.
type Options struct {
	// IQN of the target node; default iqn.2026-11.test:target.
	IQN string
	// LUNs; default one 16 MiB LUN.
	LUNs []LUN
	// Configure may adjust the server configuration before it starts.
	Configure func(*target.Config)
	// Wrap, if set, may replace LUN i's memory device (for example with a
	// fault-injecting backstore/faulty.Device) before the LU is created.
	Wrap func(i int, dev backstore.Device) backstore.Device
	// Quiet logs at info level instead of debug (benchmarks and
	// allocation tests: debug logging allocates per command).
	Quiet bool
}

// Target is a running in-process target.
type Target struct {
	Addr    string
	IQN     string
	Server  *target.Server
	Router  *scsi.Router
	Devices []*backstore.Memory
	Log     *LogBuffer
	ln      net.Listener
	done    chan error
}

// LogBuffer collects the target's log lines for assertions.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Contains reports whether the log contains s.
func (l *LogBuffer) Contains(s string) bool { return strings.Contains(l.String(), s) }

// Start starts a target and stops it when the test ends.
func Start(t testing.TB, o Options) *Target {
	t.Helper()
	if o.IQN == "" {
		o.IQN = "iqn.2026-11.test:target"
	}
	if len(o.LUNs) == 0 {
		o.LUNs = []LUN{{}}
	}
	logs := &LogBuffer{}
	lg := logrus.New()
	lg.Out = logs
	lg.SetLevel(logrus.DebugLevel)
	if o.Quiet {
		lg.SetLevel(logrus.InfoLevel)
	}
	log := logrus.NewEntry(lg)
	tg := &Target{IQN: o.IQN, Log: logs, done: make(chan error, 1)}
	var lus []*scsi.LU
	for i, l := range o.LUNs {
		if l.Size == 0 {
			l.Size = 16 << 20
		}
		dev := backstore.NewMemory(l.Size)
		tg.Devices = append(tg.Devices, dev)
		var bdev backstore.Device = dev
		if o.Wrap != nil {
			bdev = o.Wrap(i, dev)
		}
		lu, err := scsi.NewLU(scsi.LUConfig{
			ID:        uint16(i),
			Device:    bdev,
			BlockSize: l.BlockSize,
			ReadOnly:  l.ReadOnly,
			Thin:      l.Thin,
			Removable: l.Removable,
			Serial:    fmt.Sprintf("test%04d", i),
			Log:       log.WithField("lun", i),
		})
		if err != nil {
			t.Fatalf("LUN %d: %v", i, err)
		}
		lus = append(lus, lu)
	}
	r, err := scsi.NewRouter(lus)
	if err != nil {
		t.Fatal(err)
	}
	tg.Router = r
	cfg := target.Config{
		Nodes: []*target.Node{{Name: o.IQN, Router: r}},
		Log:   log,
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	srv, err := target.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg.Server, tg.ln, tg.Addr = srv, ln, ln.Addr().String()
	go func() { tg.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		select {
		case <-tg.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
		_ = r.Close()
		if t.Failed() {
			t.Logf("target log:\n%s", tail(logs.String(), 80))
		}
	})
	return tg
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
