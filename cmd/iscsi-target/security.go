package main

// CHAP and access lists of the configuration model, turned into what the
// target package enforces per node (target.Node.Auth, target.Node.ACL) and
// for discovery sessions.

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/internal/config"
	"github.com/iscsi-target/iscsi-target/target"
)

// securityFlags records which CHAP and access settings the command line
// gave: those override the file.
type securityFlags struct {
	sessionCHAP   bool // --chap-user or --chap-secret-dir: session CHAP for every target
	discoveryCHAP bool
	acl           bool // --allow-initiator, --deny-initiator, --initiators-allow/deny
	algs          []chap.Algorithm
	minLen        int // 0: from the file
	getenv        func(string) string
}

func securityFlagsOf(c *cli.Context, sc *serveConfig) *securityFlags {
	sf := &securityFlags{getenv: os.Getenv}
	if sc.auth != nil {
		sf.sessionCHAP = sc.auth.cfg.Session != nil
		sf.discoveryCHAP = sc.auth.cfg.Discovery != nil
		sf.acl = sc.auth.acl != nil
	}
	if c.IsSet("chap-algorithms") {
		sf.algs, _ = chap.ParseAlgorithms(c.String("chap-algorithms")) // checked by parseAuth
	}
	if c.IsSet("chap-min-secret-length") {
		sf.minLen = c.Int("chap-min-secret-length")
	}
	return sf
}

// nodeSecurity is what one target enforces.
type nodeSecurity struct {
	auth *chap.TargetConfig
	acl  *target.ACL
}

// secret reads a Secret's value: inline, from a file or from the
// environment (surrounding whitespace removed from the latter two, as
// open-iscsi does).
func (sf *securityFlags) secret(s *config.Secret) (*chap.Credential, error) {
	var v []byte
	switch {
	case s.SecretFile != "":
		b, _, err := chap.ReadFile(s.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("CHAP user %s: %w", s.User, err)
		}
		v = b
	case s.SecretEnv != "":
		raw := sf.getenv(s.SecretEnv)
		if raw == "" {
			return nil, fmt.Errorf("CHAP user %s: environment variable %s is empty or unset", s.User, s.SecretEnv)
		}
		v, _ = chap.SecretFromEnv(raw)
	default:
		v = []byte(s.Secret)
	}
	return &chap.Credential{User: s.User, Secret: v}, nil
}

// chapConfig builds the CHAP of c (a target's, or discovery's when
// discovery is set); nil c means none.
func (sf *securityFlags) chapConfig(f *config.File, c *config.CHAP, discovery bool) (*chap.TargetConfig, error) {
	if c == nil {
		return nil, nil
	}
	tc := &chap.TargetConfig{Algorithms: sf.algs, MinSecretLength: f.CHAPMinSecretLength}
	if sf.minLen > 0 {
		tc.MinSecretLength = sf.minLen
	}
	if len(c.Algorithms) > 0 {
		algs, err := chap.ParseAlgorithms(strings.Join(c.Algorithms, ","))
		if err != nil {
			return nil, err
		}
		tc.Algorithms = algs
	}
	if c.SecretDir != "" {
		dc, err := chap.ReadDir(c.SecretDir)
		if err != nil {
			return nil, err
		}
		init, mutual := dc.Session, dc.SessionIn
		if discovery {
			init, mutual = dc.Discovery, dc.DiscoveryIn
		}
		if init == nil {
			return nil, fmt.Errorf("CHAP secret_dir %s holds no credentials for %s sessions", c.SecretDir, map[bool]string{true: "discovery", false: "normal"}[discovery])
		}
		tc.Initiator, tc.Target = *init, mutual
	} else {
		if len(c.Users) != 1 {
			return nil, fmt.Errorf("CHAP: one user per target is supported (%d given)", len(c.Users))
		}
		cred, err := sf.secret(&c.Users[0])
		if err != nil {
			return nil, err
		}
		tc.Initiator = *cred
		if c.Mutual != nil {
			if tc.Target, err = sf.secret(c.Mutual); err != nil {
				return nil, err
			}
		}
	}
	if err := tc.Validate(); err != nil {
		return nil, err
	}
	return tc, nil
}

// aclOf builds a target's access list (nil when it has none).
func aclOf(a config.ACL) (*target.ACL, error) {
	if a.IsZero() {
		return nil, nil
	}
	acl := &target.ACL{Allow: a.Allow, Deny: a.Deny}
	for _, x := range []struct {
		path string
		dst  *[]target.IETRule
	}{{a.AllowFile, &acl.IETAllow}, {a.DenyFile, &acl.IETDeny}} {
		if x.path == "" {
			continue
		}
		fh, err := os.Open(x.path)
		if err != nil {
			return nil, fmt.Errorf("access list: %w", err)
		}
		rules, err := target.ParseIETRules(fh, x.path)
		fh.Close()
		if err != nil {
			return nil, err
		}
		*x.dst = rules
	}
	if err := acl.Validate(); err != nil {
		return nil, err
	}
	return acl, nil
}

// security builds what target t enforces; the flags, when given, win.
func (sf *securityFlags) security(f *config.File, t *config.Target) (nodeSecurity, error) {
	var ns nodeSecurity
	var err error
	if !sf.sessionCHAP {
		if ns.auth, err = sf.chapConfig(f, t.CHAP, false); err != nil {
			return ns, fmt.Errorf("target %s: %w", t.Name, err)
		}
	}
	if !sf.acl {
		if ns.acl, err = aclOf(t.ACL); err != nil {
			return ns, fmt.Errorf("target %s: %w", t.Name, err)
		}
	}
	return ns, nil
}

// discovery builds the discovery CHAP of f; ok is false when the flags
// decide it.
func (sf *securityFlags) discovery(f *config.File) (*chap.TargetConfig, bool, error) {
	if sf.discoveryCHAP {
		return nil, false, nil
	}
	tc, err := sf.chapConfig(f, f.Discovery.CHAP, true)
	if err != nil {
		return nil, false, fmt.Errorf("discovery: %w", err)
	}
	return tc, true, nil
}
