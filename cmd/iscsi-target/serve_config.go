package main

// serve's configuration: the --config file (YAML or ietd.conf) with the
// flags given on the command line on top, or the flags alone as a
// one-target configuration.

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/target"
)

// loadConfigFile reads a YAML file or an ietd.conf (detected by its
// content). An ietd.conf gets the initiators.allow/deny next to it.
func loadConfigFile(path string) (*config.File, config.Diags, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, nil, err
	}
	if config.Detect(data) == config.FormatIETD {
		f, ds, err := loadIETD(path, "", "")
		if err != nil {
			return nil, nil, err
		}
		_, _, lds, err := config.Load(path) // for the file-mode warning
		if err == nil {
			for _, d := range lds {
				if d.Line == 0 {
					ds = append(ds, d)
				}
			}
		}
		return f, ds, nil
	}
	f, _, ds, err := config.Load(path)
	return f, ds, err
}

// effectiveConfig returns the configuration serve runs: the --config file
// with the flags set on the command line applied on top, or the flags
// alone. reload re-reads the file and applies the same flags (nil without
// --config).
func effectiveConfig(c *cli.Context, sc *serveConfig) (*config.File, func() (*config.File, config.Diags, error), error) {
	path := c.String("config")
	if path == "" {
		f := fileFromFlags(sc)
		if ds := f.Validate(); ds.Err("flags") != nil {
			return nil, nil, &exitError{code: exitUsage, err: ds.Err("flags")}
		}
		return f, nil, nil
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	load := func() (*config.File, config.Diags, error) {
		f, ds, err := loadConfigFile(path)
		if err != nil || len(ds.Errs()) > 0 {
			return f, ds, err
		}
		overrideFromFlags(c, sc, f)
		// The flags may have changed the model: check it again.
		ds = append(ds, f.Validate().Errs()...)
		return f, ds, nil
	}
	f, ds, err := load()
	if err != nil {
		return nil, nil, &exitError{code: exitUsage, err: err}
	}
	if err := ds.Err(path); err != nil {
		return nil, nil, &exitError{code: exitUsage, err: err}
	}
	for _, d := range ds {
		sc.warnings = append(sc.warnings, fmt.Sprintf("%s:%s", path, d))
	}
	return f, load, nil
}

// overrideFromFlags applies the serve flags given on the command line to
// the file's model: flags win.
func overrideFromFlags(c *cli.Context, sc *serveConfig, f *config.File) {
	if c.IsSet("listen") {
		f.Listen = sc.listen
	}
	if c.IsSet("advertise") {
		f.Advertise = sc.advertise
	}
	if c.IsSet("state-dir") {
		f.StateDir = sc.stateDir
	}
	if c.IsSet("access") {
		f.Access = sc.access
	}
	if c.IsSet("nop-interval") {
		v := sc.nopIntv
		f.NOPInterval = &v
	}
	if c.IsSet("nop-timeout") {
		v := sc.nopTmo
		f.NOPTimeout = &v
	}
	if c.IsSet("busy-poll") {
		v := sc.busyPoll
		f.BusyPoll = &v
	}
	if len(f.Listen) == 0 {
		f.Listen = sc.listen
	}
	// Resource limits: a flag given wins, else the file's value, else the
	// flag's default.
	if c.IsSet("max-connections") || f.Limits.MaxConnections == 0 {
		f.Limits.MaxConnections = sc.maxConns
	}
	if c.IsSet("max-connections-per-source") || f.Limits.MaxConnectionsPerSource == 0 {
		f.Limits.MaxConnectionsPerSource = sc.maxPerSrc
	}
	if c.IsSet("data-buffer-budget") || f.Limits.DataBufferBudget == 0 {
		f.Limits.DataBufferBudget = config.Size(sc.budget)
	}
	if c.IsSet("max-sessions") {
		// A limit on the command line applies to targets without their own.
		for i := range f.Targets {
			if f.Targets[i].MaxSessions == 0 {
				f.Targets[i].MaxSessions = sc.maxSess
			}
		}
	}
	if c.IsSet("lun") {
		// --lun (with --iqn, or the default name) defines that target's
		// LUNs, replacing the file's.
		t := fileFromFlags(sc).Targets[0]
		for i := range f.Targets {
			if f.Targets[i].Name == t.Name {
				f.Targets[i].LUNs = t.LUNs
				return
			}
		}
		f.Targets = append(f.Targets, t)
	}
}

// offerOf is the negotiation offer of f (zero fields: the defaults).
func offerOf(f *config.File) target.Offer {
	n := f.Negotiation
	o := target.Offer{
		HeaderDigests:            n.HeaderDigest,
		DataDigests:              n.DataDigest,
		MaxRecvDataSegmentLength: n.MaxRecvDataSegmentLength,
		MaxBurstLength:           n.MaxBurstLength,
		FirstBurstLength:         n.FirstBurstLength,
		MaxOutstandingR2T:        n.MaxOutstandingR2T,
	}
	if n.InitialR2T != nil {
		o.InitialR2T = *n.InitialR2T
	}
	if n.ImmediateData != nil {
		o.DisableImmediateData = !*n.ImmediateData
	}
	if n.DefaultTime2Wait != nil {
		o.DefaultTime2Wait = *n.DefaultTime2Wait
	}
	if n.DefaultTime2Retain != nil {
		o.DefaultTime2Retain = *n.DefaultTime2Retain
	}
	return o
}
