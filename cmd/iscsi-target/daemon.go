package main

// The daemon's running configuration: targets built from a config.File
// (from --config, or from the flags as a one-target file), and reload,
// which moves the running targets to a new file without touching what
// did not change.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
)

// removeWait bounds how long a reload waits for the commands of a removed
// LUN or the sessions of a removed target.
const removeWait = 30 * time.Second

// daemon holds the running targets. Reload and resize are serialised by mu.
type daemon struct {
	stateDir string
	log      *logrus.Entry
	srv      *target.Server
	// load reads the configuration again (SIGHUP, reload); nil when the
	// daemon runs from flags only.
	load func() (*config.File, config.Diags, error)
	// sec: which CHAP and access settings come from the command line.
	sec *securityFlags

	mu      sync.Mutex
	cur     *config.File
	targets map[string]*runTarget
}

// runTarget is one served target node and its LUs.
type runTarget struct {
	cfg    config.Target
	node   *target.Node
	router *scsi.Router
	luns   map[uint16]config.LUN
}

// openLU opens the backing store of l and builds its logical unit.
func (d *daemon) openLU(iqn string, l config.LUN) (*scsi.LU, error) {
	id := *l.ID
	dev, err := backstore.OpenFile(l.Path, backstore.FileOptions{
		ReadOnly:   l.ReadOnly,
		Direct:     l.Direct,
		CreateSize: int64(l.Size),
	})
	if err != nil {
		return nil, fmt.Errorf("target %s LUN %d: %w", iqn, id, err)
	}
	serial := l.Serial
	if serial == "" {
		serial = defaultSerial(iqn, id)
	}
	lu, err := scsi.NewLU(scsi.LUConfig{
		ID:        uint16(id),
		Device:    dev,
		BlockSize: uint32(l.BlockSize),
		ReadOnly:  l.ReadOnly,
		Thin:      l.Thin,
		Removable: l.Removable,
		Serial:    serial,
		// SANITIZE OVERWRITE throttle, bytes per second.
		SanitizeRate: int64(l.SanitizeRate),
		StatePath:    filepath.Join(d.stateDir, "lun-"+serial+".json"),
		// APTPL persistent reservations, one file per LU next to the
		// mode page file (scsi/pr_state.go).
		PRStatePath: filepath.Join(d.stateDir, "lun-"+serial+".pr.json"),
		Log:         d.log.WithField("target", iqn),
	})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("target %s LUN %d (%s): %w", iqn, id, l.Path, err)
	}
	return lu, nil
}

func (d *daemon) flags() *securityFlags {
	if d.sec == nil {
		d.sec = &securityFlags{getenv: os.Getenv}
	}
	return d.sec
}

// buildTarget opens every LU of t and returns the target, or closes what
// it opened and returns the error.
func (d *daemon) buildTarget(f *config.File, t config.Target) (*runTarget, error) {
	ns, err := d.flags().security(f, &t)
	if err != nil {
		return nil, err
	}
	var lus []*scsi.LU
	rt := &runTarget{cfg: t, luns: map[uint16]config.LUN{}}
	for _, l := range t.LUNs {
		lu, err := d.openLU(t.Name, l)
		if err != nil {
			closeLUs(lus, d.log)
			return nil, err
		}
		lus = append(lus, lu)
		rt.luns[uint16(*l.ID)] = l
	}
	r, err := scsi.NewRouter(lus)
	if err != nil {
		closeLUs(lus, d.log)
		return nil, err
	}
	rt.router = r
	rt.node = nodeFor(f, t, r, ns)
	return rt, nil
}

func nodeFor(f *config.File, t config.Target, r *scsi.Router, ns nodeSecurity) *target.Node {
	access := t.Access
	if access == "" {
		access = f.Access // per node, so a reload can change it
	}
	return &target.Node{Name: t.Name, Alias: t.Alias, Router: r, MaxSessions: t.MaxSessions, Auth: ns.auth, ACL: ns.acl,
		AccessMode: target.AccessMode(access)}
}

func closeLUs(lus []*scsi.LU, log *logrus.Entry) {
	for _, lu := range lus {
		if err := lu.Close(); err != nil {
			log.WithError(err).WithField("lun", lu.ID()).Error("closing LUN")
		}
	}
}

// start builds every target of f. On error nothing stays open.
func (d *daemon) start(f *config.File) ([]*target.Node, error) {
	d.targets = map[string]*runTarget{}
	var nodes []*target.Node
	for _, t := range f.Targets {
		rt, err := d.buildTarget(f, t)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		d.targets[t.Name] = rt
		nodes = append(nodes, rt.node)
	}
	if _, _, err := d.flags().discovery(f); err != nil {
		d.closeAll()
		return nil, err
	}
	d.cur = f
	return nodes, nil
}

// attach gives the daemon its server and applies the file's discovery
// CHAP (unless the command line set it).
func (d *daemon) attach(srv *target.Server) error {
	d.srv = srv
	tc, ok, err := d.flags().discovery(d.cur)
	if err != nil || !ok {
		return err
	}
	return srv.SetDiscoveryAuth(tc)
}

// routers returns the routers of the running targets.
func (d *daemon) routers() []*scsi.Router {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*scsi.Router
	for _, rt := range d.targets {
		out = append(out, rt.router)
	}
	return out
}

// closeAll flushes and closes every LU (at shutdown, after the server).
func (d *daemon) closeAll() error {
	var errs []error
	for _, rt := range d.targets {
		if err := rt.router.Flush(context.Background()); err != nil {
			errs = append(errs, err)
		}
		if err := rt.router.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reloadResult tells the operator what a reload changed.
type reloadResult struct {
	AddedTargets   []string `json:"added_targets,omitempty"`
	RemovedTargets []string `json:"removed_targets,omitempty"`
	ChangedTargets []string `json:"changed_targets,omitempty"`
	AddedLUNs      []string `json:"added_luns,omitempty"`
	RemovedLUNs    []string `json:"removed_luns,omitempty"`
	Resized        []string `json:"resized_luns,omitempty"`
	ClosedSessions int      `json:"closed_sessions,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
}

// reload reads the configuration again and applies it.
func (d *daemon) reload() (*reloadResult, error) {
	if d.load == nil {
		// Flags only: nothing to re-read, but grown LUNs are picked up.
		d.mu.Lock()
		defer d.mu.Unlock()
		res := &reloadResult{Warnings: []string{"no --config file: only LUN sizes were re-read"}}
		for _, name := range d.sortedNames() {
			res.Resized = append(res.Resized, d.refresh(name, d.targets[name])...)
		}
		return res, nil
	}
	f, ds, err := d.load()
	if err == nil {
		err = ds.Err("config")
	}
	if err != nil {
		d.log.WithError(err).Error("reload refused; the running configuration stays")
		return nil, err
	}
	res, err := d.apply(f)
	for _, w := range ds {
		res.Warnings = append(res.Warnings, w.String())
	}
	if err != nil {
		d.log.WithError(err).Error("reload refused; the running configuration stays")
		return nil, err
	}
	return res, nil
}

func (d *daemon) sortedNames() []string {
	names := make([]string, 0, len(d.targets))
	for n := range d.targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// apply moves the running targets to f. Everything new is opened first:
// if any LU fails to open, nothing changes and the error is returned.
// Then targets and LUNs are added and removed; sessions of unchanged
// targets keep running.
func (d *daemon) apply(f *config.File) (*reloadResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := &reloadResult{}
	res.Warnings = append(res.Warnings, restartOnly(d.cur, f)...)

	// Phase 1: open everything new, so a bad file changes nothing.
	newTargets := map[string]*runTarget{}
	newLUs := map[string]map[uint16]*scsi.LU{}
	fail := func(err error) (*reloadResult, error) {
		for _, rt := range newTargets {
			rt.router.Close()
		}
		for _, m := range newLUs {
			for _, lu := range m {
				lu.Close()
			}
		}
		return nil, err
	}
	want := map[string]config.Target{}
	security := map[string]nodeSecurity{}
	discovery, setDiscovery, err := d.flags().discovery(f)
	if err != nil {
		return fail(err)
	}
	for _, t := range f.Targets {
		want[t.Name] = t
		rt := d.targets[t.Name]
		if rt == nil {
			nt, err := d.buildTarget(f, t)
			if err != nil {
				return fail(err)
			}
			newTargets[t.Name] = nt
			continue
		}
		// Secrets and access files are read again even when the file
		// did not change.
		ns, err := d.flags().security(f, &t)
		if err != nil {
			return fail(err)
		}
		security[t.Name] = ns
		for _, l := range t.LUNs {
			id := uint16(*l.ID)
			if old, ok := rt.luns[id]; ok && sameLUN(old, l) {
				continue
			}
			if old, ok := rt.luns[id]; ok && old.Path == l.Path {
				// Backing stores are locked by their opener: the LUN is
				// reopened with its new options after the old LU is
				// closed (applyLUNs). Should that fail, the LUN is gone
				// and the error logged.
				continue
			}
			lu, err := d.openLU(t.Name, l)
			if err != nil {
				return fail(err)
			}
			if newLUs[t.Name] == nil {
				newLUs[t.Name] = map[uint16]*scsi.LU{}
			}
			newLUs[t.Name][id] = lu
		}
	}

	// Phase 2: apply. Removed targets first (their LUN files may move to
	// a new target).
	for _, name := range d.sortedNames() {
		if _, ok := want[name]; ok {
			continue
		}
		rt := d.targets[name]
		if _, err := d.srv.RemoveNode(name); err != nil {
			d.log.WithError(err).WithField("target", name).Error("removing target")
		}
		done := make(chan struct{})
		timer := time.AfterFunc(removeWait, func() { close(done) })
		if !d.srv.WaitSessions(name, done) {
			d.log.WithField("target", name).Warn("sessions of the removed target did not end in time")
		}
		timer.Stop()
		if err := rt.router.Close(); err != nil {
			d.log.WithError(err).WithField("target", name).Error("closing LUNs of removed target")
		}
		delete(d.targets, name)
		res.RemovedTargets = append(res.RemovedTargets, name)
	}
	for _, t := range f.Targets {
		if nt := newTargets[t.Name]; nt != nil {
			if err := d.srv.AddNode(nt.node); err != nil {
				// Names were validated unique; this is a bug.
				d.log.WithError(err).WithField("target", t.Name).Error("adding target")
				nt.router.Close()
				continue
			}
			d.targets[t.Name] = nt
			res.AddedTargets = append(res.AddedTargets, t.Name)
			continue
		}
		rt := d.targets[t.Name]
		changed := d.applyLUNs(rt, t, newLUs[t.Name], res)
		node := nodeFor(f, t, rt.router, security[t.Name])
		if err := d.srv.ReplaceNode(node); err != nil {
			d.log.WithError(err).WithField("target", t.Name).Error("updating target")
		} else {
			rt.node = node
		}
		if nodeSettingsChanged(rt.cfg, t) || d.cur.Access != f.Access {
			changed = true
		}
		// Sessions the new access list refuses end; the others keep
		// running (a changed CHAP secret applies to the next login).
		name := t.Name
		closed := d.srv.CloseSessions(func(si target.SessionInfo) bool {
			return si.Target == name && !d.srv.Allowed(node, si.InitiatorName, si.RemoteAddr)
		}, "no longer allowed by the access list")
		res.ClosedSessions += closed
		rt.cfg = t
		if changed {
			res.ChangedTargets = append(res.ChangedTargets, t.Name)
		}
		res.Resized = append(res.Resized, d.refresh(t.Name, rt)...)
	}
	tm := timersOf(f)
	if err := d.srv.SetTimers(tm); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	if setDiscovery {
		if err := d.srv.SetDiscoveryAuth(discovery); err != nil {
			res.Warnings = append(res.Warnings, "discovery CHAP: "+err.Error())
		}
	}
	d.cur = f
	d.log.WithFields(logrus.Fields{
		"added_targets": len(res.AddedTargets), "removed_targets": len(res.RemovedTargets),
		"added_luns": len(res.AddedLUNs), "removed_luns": len(res.RemovedLUNs), "resized": len(res.Resized),
	}).Info("configuration reloaded")
	return res, nil
}

// applyLUNs removes, adds and replaces the LUs of a kept target.
func (d *daemon) applyLUNs(rt *runTarget, t config.Target, opened map[uint16]*scsi.LU, res *reloadResult) bool {
	log := d.log.WithField("target", t.Name)
	want := map[uint16]config.LUN{}
	for _, l := range t.LUNs {
		want[uint16(*l.ID)] = l
	}
	changed := false
	ids := make([]uint16, 0, len(rt.luns))
	for id := range rt.luns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		old := rt.luns[id]
		nl, keep := want[id]
		if keep && sameLUN(old, nl) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), removeWait)
		lu, err := rt.router.RemoveLU(ctx, id)
		cancel()
		if err != nil && lu == nil {
			log.WithError(err).WithField("lun", id).Error("removing LUN")
			continue
		}
		if err != nil {
			log.WithError(err).WithField("lun", id).Warn("removed LUN still busy; closing it anyway")
		}
		if err := lu.Close(); err != nil {
			log.WithError(err).WithField("lun", id).Error("closing removed LUN")
		}
		delete(rt.luns, id)
		res.RemovedLUNs = append(res.RemovedLUNs, fmt.Sprintf("%s/%d", t.Name, id))
		changed = true
	}
	for _, l := range t.LUNs {
		id := uint16(*l.ID)
		if _, ok := rt.luns[id]; ok {
			continue
		}
		lu := opened[id]
		if lu == nil {
			// Same path, other options: reopen now that the old LU is closed.
			var err error
			if lu, err = d.openLU(t.Name, l); err != nil {
				log.WithError(err).WithField("lun", id).Error("reopening LUN with new options")
				continue
			}
		}
		if err := rt.router.AddLU(lu); err != nil {
			log.WithError(err).WithField("lun", id).Error("adding LUN")
			lu.Close()
			continue
		}
		rt.luns[id] = l
		res.AddedLUNs = append(res.AddedLUNs, fmt.Sprintf("%s/%d", t.Name, id))
		changed = true
	}
	return changed
}

// refresh re-reads the size of every LU of rt and lists those that changed.
func (d *daemon) refresh(name string, rt *runTarget) []string {
	var out []string
	for _, lu := range rt.router.LUNs() {
		before := lu.Capacity()
		if err := lu.Refresh(); err != nil {
			d.log.WithError(err).WithFields(logrus.Fields{"target": name, "lun": lu.ID()}).Error("re-reading LUN size")
			continue
		}
		if lu.Capacity() != before {
			out = append(out, fmt.Sprintf("%s/%d", name, lu.ID()))
		}
	}
	return out
}

func sameLUN(a, b config.LUN) bool {
	a.Pos, b.Pos = config.Pos{}, config.Pos{}
	// Size only matters when the file is created; a grown file is picked
	// up by Refresh.
	a.Size, b.Size = 0, 0
	return reflect.DeepEqual(a, b)
}

// nodeSettingsChanged compares everything of a target but its LUNs.
func nodeSettingsChanged(a, b config.Target) bool {
	a.LUNs, b.LUNs = nil, nil
	x, _ := config.Marshal(&config.File{Targets: []config.Target{a}})
	y, _ := config.Marshal(&config.File{Targets: []config.Target{b}})
	return string(x) != string(y)
}

// restartOnly lists changes a reload cannot apply.
func restartOnly(a, b *config.File) []string {
	if a == nil {
		return nil
	}
	var out []string
	if !slices.Equal(a.Listen, b.Listen) {
		out = append(out, "listen changed: takes effect at the next restart")
	}
	if !slices.Equal(a.Advertise, b.Advertise) {
		out = append(out, "advertise changed: takes effect at the next restart")
	}
	if a.StateDir != b.StateDir {
		out = append(out, "state_dir changed: takes effect at the next restart")
	}
	na, nb := a.Negotiation, b.Negotiation
	na.Pos, nb.Pos = config.Pos{}, config.Pos{}
	if !reflect.DeepEqual(na, nb) {
		out = append(out, "negotiation changed: takes effect at the next restart")
	}
	if busyPollOf(a) != busyPollOf(b) {
		out = append(out, "busy_poll changed: takes effect at the next restart")
	}
	la, lb := a.Limits, b.Limits
	la.Pos, lb.Pos = config.Pos{}, config.Pos{}
	if !reflect.DeepEqual(la, lb) {
		out = append(out, "limits changed: take effect at the next restart")
	}
	return out
}

// busyPollOf returns f's busy-poll window as target.Config wants it:
// negative when the file turns polling off.
func busyPollOf(f *config.File) time.Duration {
	switch {
	case f.BusyPoll == nil:
		return target.DefaultBusyPoll
	case *f.BusyPoll == 0:
		return -1
	}
	return *f.BusyPoll
}

// timersOf returns the liveness timers of f with the daemon's defaults.
func timersOf(f *config.File) target.Timers {
	tm := target.Timers{NOPInterval: 5 * time.Second, NOPTimeout: 10 * time.Second}
	if f.NOPInterval != nil {
		tm.NOPInterval = *f.NOPInterval
	}
	if f.NOPTimeout != nil {
		tm.NOPTimeout = *f.NOPTimeout
	}
	if tm.NOPInterval == 0 {
		tm.NOPInterval = -1
	}
	return tm
}

// resize grows the backing file of a LUN (when size > 0) and re-reads
// its size; initiators get CAPACITY DATA HAS CHANGED.
func (d *daemon) resize(iqn string, id uint16, size int64) (uint64, uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rt := d.targets[iqn]
	if rt == nil {
		return 0, 0, fmt.Errorf("no target %q", iqn)
	}
	lu := rt.router.LU(id)
	l, ok := rt.luns[id]
	if lu == nil || !ok {
		return 0, 0, fmt.Errorf("target %s has no LUN %d", iqn, id)
	}
	if size > 0 {
		if size%int64(lu.BlockSize()) != 0 {
			return 0, 0, fmt.Errorf("size %d is not a multiple of the block size %d", size, lu.BlockSize())
		}
		st, err := os.Stat(l.Path)
		if err != nil {
			return 0, 0, err
		}
		if !st.Mode().IsRegular() {
			return 0, 0, fmt.Errorf("%s is not a regular file: grow the device (lvextend, ...) and run lun resize without --size", l.Path)
		}
		if size < st.Size() {
			return 0, 0, fmt.Errorf("%s is %d bytes: shrinking to %d would destroy data; refused", l.Path, st.Size(), size)
		}
		if l.ReadOnly {
			return 0, 0, fmt.Errorf("LUN %d is read-only", id)
		}
		if size > st.Size() {
			if err := os.Truncate(l.Path, size); err != nil {
				return 0, 0, err
			}
		}
	}
	if err := lu.Refresh(); err != nil {
		return 0, 0, err
	}
	d.log.WithFields(logrus.Fields{"target": iqn, "lun": id, "blocks": lu.Capacity()}).Info("LUN size re-read")
	return lu.Capacity(), lu.BlockSize(), nil
}

// fileFromFlags is the one-target model the serve flags describe.
func fileFromFlags(sc *serveConfig) *config.File {
	f := &config.File{
		Listen:    sc.listen,
		Advertise: sc.advertise,
		StateDir:  sc.stateDir,
		Access:    sc.access,
		Limits: config.Limits{MaxConnections: sc.maxConns, MaxConnectionsPerSource: sc.maxPerSrc,
			DataBufferBudget: config.Size(sc.budget)},
	}
	iv, tmo, bp := sc.nopIntv, sc.nopTmo, sc.busyPoll
	f.NOPInterval, f.NOPTimeout, f.BusyPoll = &iv, &tmo, &bp
	t := config.Target{Name: sc.iqn, MaxSessions: sc.maxSess}
	for _, s := range sc.luns {
		id := s.ID
		t.LUNs = append(t.LUNs, config.LUN{ID: &id, Path: s.Path, Size: config.Size(s.Size), ReadOnly: s.ReadOnly,
			Thin: s.Thin, Removable: s.Removable, BlockSize: int(s.BlockSize), Serial: s.Serial, Direct: s.Direct,
			SanitizeRate: config.Size(s.SanitizeRate)})
	}
	f.Targets = []config.Target{t}
	return f
}
