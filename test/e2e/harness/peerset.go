package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
)

// Peer names accepted by LaunchPeers and StartPeers.
const (
	PeerOurs  = "ours"
	PeerTGT   = "tgt"
	PeerGotgt = "gotgt"
)

// AllPeers is the default comparison order: ours first, then the references.
var AllPeers = []string{PeerOurs, PeerTGT, PeerGotgt}

// PeerSet is a group of running targets compared side by side.
type PeerSet struct {
	Peers []*Peer
}

// Get returns the peer called name, or nil.
func (s *PeerSet) Get(name string) *Peer {
	for _, p := range s.Peers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Names returns the peer names in order.
func (s *PeerSet) Names() []string {
	var n []string
	for _, p := range s.Peers {
		n = append(n, p.Name)
	}
	return n
}

// Close closes every peer (stopping daemons, deleting namespaces).
func (s *PeerSet) Close() error {
	var errs []error
	for i := len(s.Peers) - 1; i >= 0; i-- {
		errs = append(errs, s.Peers[i].Close())
	}
	return errors.Join(errs...)
}

// PeerSetOptions configures LaunchPeers.
type PeerSetOptions struct {
	// OursBin is a prebuilt daemon; when empty it is built from this tree
	// (with -race when OursRace) into a temporary directory.
	OursBin  string
	OursRace bool
	// OursExtra flags for our daemon.
	OursExtra []string
	// GotgtBin is a prebuilt gotgt; when empty SharedGotgt builds it.
	GotgtBin string
}

// LaunchPeers starts the named peers (PeerOurs, PeerTGT, PeerGotgt) with
// their conformance layouts. On error, the peers already started are
// closed.
func LaunchPeers(ctx context.Context, names []string, o PeerSetOptions) (*PeerSet, error) {
	s := &PeerSet{}
	for _, n := range names {
		var p *Peer
		var err error
		switch n {
		case PeerOurs:
			p, err = launchOursBuilt(ctx, o)
		case PeerTGT:
			p, err = LaunchTGT(ctx, TGTOptions{})
		case PeerGotgt:
			p, err = LaunchGotgt(ctx, GotgtOptions{Bin: o.GotgtBin})
		default:
			err = fmt.Errorf("unknown peer %q (want %s, %s or %s)", n, PeerOurs, PeerTGT, PeerGotgt)
		}
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.Peers = append(s.Peers, p)
	}
	return s, nil
}

// launchOursBuilt builds our daemon unless o.OursBin is set, and launches
// it; the peer's Close removes the build.
func launchOursBuilt(ctx context.Context, o PeerSetOptions) (*Peer, error) {
	if o.OursBin != "" {
		return LaunchOurs(ctx, OursOptions{Bin: o.OursBin, Extra: o.OursExtra})
	}
	dir, err := os.MkdirTemp("", "ours-build-")
	if err != nil {
		return nil, err
	}
	b := &Builder{Race: o.OursRace}
	bin, err := b.Build(dir)
	if err == nil {
		var p *Peer
		if p, err = LaunchOurs(ctx, OursOptions{Bin: bin, Extra: o.OursExtra}); err == nil {
			p.closers = append(p.closers, func() error { return os.RemoveAll(dir) })
			return p, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("ours: %w", err)
}

// PeerTools lists the host programs each peer needs.
func PeerTools(name string) []string {
	switch name {
	case PeerTGT:
		return TGTTools
	case PeerGotgt:
		return []string{"ip", "go"}
	}
	return []string{"go"}
}

// StartPeers is LaunchPeers for tests: it checks root and tools (fail under
// CI=true, skip otherwise) and closes the set when the test ends. Our
// daemon is started through StartTarget with the shared race build.
func StartPeers(t testing.TB, names ...string) *PeerSet {
	t.Helper()
	RequireRoot(t)
	for _, n := range names {
		RequireTools(t, PeerTools(n)...)
	}
	s := &PeerSet{}
	for _, n := range names {
		var p *Peer
		switch n {
		case PeerOurs:
			b, dir, err := SharedBuilder()
			if err != nil {
				t.Fatalf("build dir: %v", err)
			}
			p = StartOurs(t, b, dir, nil)
		case PeerTGT:
			p = StartTGT(t, TGTOptions{})
		case PeerGotgt:
			p = StartGotgt(t, GotgtOptions{})
		default:
			t.Fatalf("unknown peer %q", n)
		}
		s.Peers = append(s.Peers, p)
	}
	return s
}
