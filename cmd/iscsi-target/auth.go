package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/target"
)

// CHAP and initiator access flags of serve. Secrets never come from a
// command-line value: only from files, a Kubernetes Secret directory or
// these environment variables.
const (
	envCHAPSecret          = "ISCSI_TARGET_CHAP_SECRET"
	envMutualCHAPSecret    = "ISCSI_TARGET_MUTUAL_CHAP_SECRET"
	envDiscoveryCHAPSecret = "ISCSI_TARGET_DISCOVERY_CHAP_SECRET"
)

func authFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "chap-user", EnvVars: []string{"ISCSI_TARGET_CHAP_USER"}, Usage: "require CHAP for sessions: the initiator's `NAME` (secret from --chap-secret-file or $" + envCHAPSecret + ")"},
		&cli.StringFlag{Name: "chap-secret-file", Usage: "`FILE` holding the initiator's CHAP secret (surrounding whitespace is removed)"},
		&cli.StringFlag{Name: "mutual-chap-user", EnvVars: []string{"ISCSI_TARGET_MUTUAL_CHAP_USER"}, Usage: "mutual CHAP: the `NAME` the target answers with (secret from --mutual-chap-secret-file or $" + envMutualCHAPSecret + ")"},
		&cli.StringFlag{Name: "mutual-chap-secret-file", Usage: "`FILE` holding the target's mutual CHAP secret"},
		&cli.StringFlag{Name: "discovery-chap-user", EnvVars: []string{"ISCSI_TARGET_DISCOVERY_CHAP_USER"}, Usage: "require CHAP for discovery sessions: the initiator's `NAME` (secret from --discovery-chap-secret-file or $" + envDiscoveryCHAPSecret + ")"},
		&cli.StringFlag{Name: "discovery-chap-secret-file", Usage: "`FILE` holding the discovery CHAP secret"},
		&cli.StringFlag{Name: "chap-secret-dir", Usage: "`DIR` in the Kubernetes Secret layout (files node.session.auth.username/password, *_in for mutual CHAP, discovery.sendtargets.auth.*)"},
		&cli.StringFlag{Name: "chap-algorithms", Value: "SHA3-256,SHA256,SHA1,MD5", Usage: "CHAP algorithms allowed, in preference `ORDER` (names or IANA numbers 5-8)"},
		&cli.IntFlag{Name: "chap-min-secret-length", Value: chap.DefaultMinSecretLength, Usage: "refuse CHAP secrets shorter than `N` bytes"},
		&cli.DurationFlag{Name: "auth-failure-delay", Value: time.Second, Usage: "wait this long before answering a failed login (0 disables)"},
		&cli.StringSliceFlag{Name: "allow-initiator", Usage: "only initiator names matching `GLOB` may log in (repeatable)"},
		&cli.StringSliceFlag{Name: "deny-initiator", Usage: "initiator names matching `GLOB` may not log in (repeatable)"},
		&cli.StringFlag{Name: "initiators-allow", Usage: "ietd initiators.allow `FILE`"},
		&cli.StringFlag{Name: "initiators-deny", Usage: "ietd initiators.deny `FILE`"},
	}
}

// authSettings is the parsed form of the flags.
type authSettings struct {
	cfg target.AuthConfig
	acl *target.ACL
	// notes are logged at startup (never with secret values).
	notes []string
}

// parseAuth reads the CHAP and access flags, the secret files and the
// environment. getenv is os.Getenv outside tests.
func parseAuth(c *cli.Context, getenv func(string) string) (*authSettings, error) {
	as := &authSettings{}
	algs, err := chap.ParseAlgorithms(c.String("chap-algorithms"))
	if err != nil {
		return nil, usageError("--chap-algorithms: %v", err)
	}
	minLen := c.Int("chap-min-secret-length")
	if minLen < 1 || minLen > chap.MaxSecretLength {
		return nil, usageError("--chap-min-secret-length %d: want 1-%d", minLen, chap.MaxSecretLength)
	}
	if minLen < chap.DefaultMinSecretLength {
		as.notes = append(as.notes, fmt.Sprintf("CHAP secrets down to %d bytes accepted (--chap-min-secret-length); short secrets can be guessed off-line from one recorded login", minLen))
	}
	d := c.Duration("auth-failure-delay")
	if d < 0 || d > time.Minute {
		return nil, usageError("--auth-failure-delay %v: want 0-1m", d)
	}
	as.cfg.FailureDelay = d
	if d == 0 {
		as.cfg.FailureDelay = -1
	}

	var session, mutual, discovery, discoveryMutual *chap.Credential
	if dir := c.String("chap-secret-dir"); dir != "" {
		for _, f := range []string{"chap-user", "chap-secret-file", "mutual-chap-user", "mutual-chap-secret-file", "discovery-chap-user", "discovery-chap-secret-file"} {
			if c.IsSet(f) {
				return nil, usageError("--%s cannot be combined with --chap-secret-dir", f)
			}
		}
		dc, err := chap.ReadDir(dir)
		if err != nil {
			return nil, usageError("--chap-secret-dir: %v", err)
		}
		session, mutual, discovery, discoveryMutual = dc.Session, dc.SessionIn, dc.Discovery, dc.DiscoveryIn
		if len(dc.Trimmed) > 0 {
			as.notes = append(as.notes, fmt.Sprintf("removed surrounding whitespace (e.g. the newline of `echo value | base64`) from %s in %s, as open-iscsi does", strings.Join(dc.Trimmed, ", "), dir))
		}
	} else {
		var err error
		if session, err = credential(c, getenv, &as.notes, "chap-user", "chap-secret-file", envCHAPSecret); err != nil {
			return nil, err
		}
		if mutual, err = credential(c, getenv, &as.notes, "mutual-chap-user", "mutual-chap-secret-file", envMutualCHAPSecret); err != nil {
			return nil, err
		}
		if discovery, err = credential(c, getenv, &as.notes, "discovery-chap-user", "discovery-chap-secret-file", envDiscoveryCHAPSecret); err != nil {
			return nil, err
		}
	}
	if mutual != nil && session == nil {
		return nil, usageError("mutual CHAP needs initiator CHAP too (--chap-user)")
	}
	build := func(kind string, init, tgt *chap.Credential) (*chap.TargetConfig, error) {
		if init == nil {
			return nil, nil
		}
		tc := &chap.TargetConfig{Algorithms: algs, Initiator: *init, Target: tgt, MinSecretLength: minLen}
		if err := tc.Validate(); err != nil {
			return nil, usageError("%s CHAP: %v", kind, err)
		}
		return tc, nil
	}
	if as.cfg.Session, err = build("session", session, mutual); err != nil {
		return nil, err
	}
	if as.cfg.Discovery, err = build("discovery", discovery, discoveryMutual); err != nil {
		return nil, err
	}

	acl := &target.ACL{Allow: c.StringSlice("allow-initiator"), Deny: c.StringSlice("deny-initiator")}
	if err := acl.Validate(); err != nil {
		return nil, usageError("%v", err)
	}
	for _, x := range []struct {
		flag string
		dst  *[]target.IETRule
	}{{"initiators-allow", &acl.IETAllow}, {"initiators-deny", &acl.IETDeny}} {
		p := c.String(x.flag)
		if p == "" {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, usageError("--%s: %v", x.flag, err)
		}
		rules, err := target.ParseIETRules(f, p)
		f.Close()
		if err != nil {
			return nil, usageError("--%s: %v", x.flag, err)
		}
		*x.dst = rules
	}
	if len(acl.Allow)+len(acl.Deny)+len(acl.IETAllow)+len(acl.IETDeny) > 0 {
		as.acl = acl
	}
	if len(acl.IETAllow) > 0 && len(acl.IETDeny) == 0 {
		as.notes = append(as.notes, "--initiators-allow without --initiators-deny refuses nobody (ietd semantics: deny rules refuse, allow rules make exceptions)")
	}
	return as, nil
}

// credential reads one user flag and its secret from the file flag or the
// environment variable. Both absent means no credential.
func credential(c *cli.Context, getenv func(string) string, notes *[]string, userFlag, fileFlag, env string) (*chap.Credential, error) {
	user := strings.TrimSpace(c.String(userFlag))
	file := c.String(fileFlag)
	envVal := getenv(env)
	if user == "" {
		if file != "" || envVal != "" {
			return nil, usageError("--%s or $%s given without --%s", fileFlag, env, userFlag)
		}
		return nil, nil
	}
	var secret []byte
	switch {
	case file != "" && envVal != "":
		return nil, usageError("both --%s and $%s are set; use one", fileFlag, env)
	case file != "":
		s, trimmed, err := chap.ReadFile(file)
		if err != nil {
			return nil, usageError("--%s: %v", fileFlag, err)
		}
		if trimmed {
			*notes = append(*notes, fmt.Sprintf("removed surrounding whitespace from the secret in %s, as open-iscsi does", file))
		}
		secret = s
	case envVal != "":
		s, trimmed := chap.SecretFromEnv(envVal)
		if trimmed {
			*notes = append(*notes, fmt.Sprintf("removed surrounding whitespace from $%s, as open-iscsi does", env))
		}
		secret = s
	default:
		return nil, usageError("--%s needs a secret: --%s FILE or $%s (secrets are never taken from the command line)", userFlag, fileFlag, env)
	}
	return &chap.Credential{User: user, Secret: secret}, nil
}

// logAuth reports the authentication setup at startup, without secrets.
func logAuth(log *logrus.Entry, as *authSettings) {
	for _, n := range as.notes {
		log.Warn(n)
	}
	describe := func(kind string, tc *chap.TargetConfig) {
		if tc == nil {
			log.WithField("sessions", kind).Info("authentication: none")
			return
		}
		algs := make([]string, len(tc.Algorithms))
		for i, a := range tc.Algorithms {
			algs[i] = a.String()
		}
		f := logrus.Fields{"sessions": kind, "user": tc.Initiator.User, "algorithms": strings.Join(algs, ",")}
		if tc.Target != nil {
			f["mutual_user"] = tc.Target.User
		}
		log.WithFields(f).Info("authentication: CHAP")
	}
	describe("normal", as.cfg.Session)
	describe("discovery", as.cfg.Discovery)
	if as.acl != nil {
		log.WithFields(logrus.Fields{"allow": as.acl.Allow, "deny": as.acl.Deny,
			"ietd_allow_rules": len(as.acl.IETAllow), "ietd_deny_rules": len(as.acl.IETDeny)}).Info("initiator access control")
	}
}
