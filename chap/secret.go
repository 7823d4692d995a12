package chap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Secrets are never taken from a command line. They come from a file, an
// environment variable (read by the command, not here) or a directory of
// files in the layout of a Kubernetes Secret of type kubernetes.io/iscsi-chap.
//
// Whitespace policy: surrounding whitespace (spaces, tabs, CR, LF) is removed
// from every user name and secret read from a file, a directory or the
// environment. open-iscsi does the same to every value in its node records
// and iscsid.conf (idbm reads each line and strips surrounding whitespace),
// so a Secret made with `echo password | base64` ("password\n"), which the
// Kubernetes iscsi plugin hands to `iscsiadm -o update` unchanged, ends up as
// "password" on the wire. Keeping the newline would make such deployments
// fail; a secret that really ends in whitespace cannot be used with
// open-iscsi at all.

// DefaultMinSecretLength is the default minimum secret length: 12 bytes
// (96 bits). Anyone who records one CHAP exchange can guess the secret
// off-line, so short secrets are refused unless the operator lowers this.
const DefaultMinSecretLength = 12

// MaxSecretLength is the longest secret accepted; open-iscsi stores at
// most 255 bytes.
const MaxSecretLength = 255

// maxFile bounds the size of a secret or user file.
const maxFile = 4096

// Kubernetes Secret keys (kubernetes.io/iscsi-chap).
const (
	KeySessionUser       = "node.session.auth.username"
	KeySessionPassword   = "node.session.auth.password"
	KeySessionUserIn     = "node.session.auth.username_in"
	KeySessionPasswordIn = "node.session.auth.password_in"
	KeyDiscoveryUser     = "discovery.sendtargets.auth.username"
	KeyDiscoveryPassword = "discovery.sendtargets.auth.password"
	KeyDiscoveryUserIn   = "discovery.sendtargets.auth.username_in"
	KeyDiscoveryPassIn   = "discovery.sendtargets.auth.password_in"
	sessionPrefix        = "node.session.auth."
	discoveryPrefix      = "discovery.sendtargets.auth."
)

// Trim removes surrounding whitespace from a credential value and reports
// whether anything was removed (see the whitespace policy above).
func Trim(b []byte) ([]byte, bool) {
	t := bytes.TrimSpace(b)
	return t, len(t) != len(b)
}

// CheckUser checks a CHAP user name: not empty, at most 255 bytes, and no
// NUL or control characters (it travels as a text value, RFC 7143 §6.1).
func CheckUser(u string) error {
	if u == "" {
		return errors.New("chap: empty user name")
	}
	if len(u) > 255 {
		return fmt.Errorf("chap: user name of %d bytes is longer than 255", len(u))
	}
	for i := 0; i < len(u); i++ {
		if u[i] < ' ' || u[i] == 0x7f {
			return fmt.Errorf("chap: user name %q contains a control character", u)
		}
	}
	return nil
}

// CheckSecret checks a secret's length against min and MaxSecretLength.
func CheckSecret(s []byte, min int) error {
	switch {
	case len(s) == 0:
		return errors.New("chap: empty secret")
	case len(s) < min:
		return fmt.Errorf("chap: secret is %d bytes, at least %d required (use a longer random secret, or lower the minimum with --chap-min-secret-length)", len(s), min)
	case len(s) > MaxSecretLength:
		return fmt.Errorf("chap: secret is %d bytes, at most %d allowed", len(s), MaxSecretLength)
	}
	return nil
}

// ReadFile reads a user name or secret from path (at most 4 KiB) and trims
// surrounding whitespace; trimmed reports whether any was removed.
func ReadFile(path string) (value []byte, trimmed bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("chap: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, false, fmt.Errorf("chap: reading %s: %w", path, err)
	}
	if len(b) > maxFile {
		return nil, false, fmt.Errorf("chap: %s is larger than %d bytes", path, maxFile)
	}
	v, trimmed := Trim(b)
	if len(v) == 0 {
		return nil, trimmed, fmt.Errorf("chap: %s is empty", path)
	}
	return v, trimmed, nil
}

// DirCredentials are the credentials found in a Secret directory.
type DirCredentials struct {
	// Session and Discovery hold the initiator's credentials
	// (*.username / *.password); nil when absent.
	Session, Discovery *Credential
	// SessionIn and DiscoveryIn are the mutual CHAP credentials the target
	// answers with (*.username_in / *.password_in); nil when absent.
	SessionIn, DiscoveryIn *Credential
	// Trimmed lists the keys whose values had surrounding whitespace
	// removed (for a log line; the values are not included).
	Trimmed []string
}

// ReadDir reads a directory in the Kubernetes Secret layout: one file per
// key, named node.session.auth.username, node.session.auth.password,
// node.session.auth.username_in, node.session.auth.password_in and the same
// under discovery.sendtargets.auth. A user without its password (or the
// reverse) is an error; other files are ignored.
func ReadDir(dir string) (*DirCredentials, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("chap: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("chap: %s is not a directory", dir)
	}
	dc := &DirCredentials{}
	pair := func(userKey, passKey string) (*Credential, error) {
		u, ut, uerr := ReadFile(filepath.Join(dir, userKey))
		p, pt, perr := ReadFile(filepath.Join(dir, passKey))
		uMissing, pMissing := errors.Is(uerr, os.ErrNotExist), errors.Is(perr, os.ErrNotExist)
		switch {
		case uMissing && pMissing:
			return nil, nil
		case uMissing:
			return nil, fmt.Errorf("chap: %s has %s but no %s", dir, passKey, userKey)
		case pMissing:
			return nil, fmt.Errorf("chap: %s has %s but no %s", dir, userKey, passKey)
		case uerr != nil:
			return nil, uerr
		case perr != nil:
			return nil, perr
		}
		if ut {
			dc.Trimmed = append(dc.Trimmed, userKey)
		}
		if pt {
			dc.Trimmed = append(dc.Trimmed, passKey)
		}
		return &Credential{User: string(u), Secret: p}, nil
	}
	for _, x := range []struct {
		dst  **Credential
		u, p string
	}{
		{&dc.Session, KeySessionUser, KeySessionPassword},
		{&dc.SessionIn, KeySessionUserIn, KeySessionPasswordIn},
		{&dc.Discovery, KeyDiscoveryUser, KeyDiscoveryPassword},
		{&dc.DiscoveryIn, KeyDiscoveryUserIn, KeyDiscoveryPassIn},
	} {
		c, err := pair(x.u, x.p)
		if err != nil {
			return nil, err
		}
		*x.dst = c
	}
	if dc.Session == nil && dc.Discovery == nil {
		if dc.SessionIn != nil || dc.DiscoveryIn != nil {
			return nil, fmt.Errorf("chap: %s has only *_in (mutual) credentials", dir)
		}
		return nil, fmt.Errorf("chap: %s has no %susername/password or %susername/password files", dir, sessionPrefix, discoveryPrefix)
	}
	return dc, nil
}

// SecretFromEnv trims an environment value by the whitespace policy; it
// exists so the command applies the same policy to every source.
func SecretFromEnv(v string) ([]byte, bool) {
	t := strings.TrimSpace(v)
	return []byte(t), len(t) != len(v)
}
