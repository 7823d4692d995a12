// Package config is the daemon's configuration model: a YAML file
// (go.yaml.in/yaml/v3) describing any number of targets with their LUNs,
// CHAP credentials, access lists and session limits, and the global
// portals, timers and negotiation limits. It also reads ietd.conf (see
// ietd.go). Only cmd/iscsi-target uses it; it opens no devices.
//
// Parsing never stops at the first problem: every error and warning is
// returned as a Diag with the line and column it refers to, so
// `iscsi-target config check` can list them all.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a configuration file.
const MaxFileSize = 4 << 20

// File is a parsed configuration.
type File struct {
	Pos `yaml:"-"`
	// Listen lists HOST:PORT addresses to accept connections on.
	Listen []string `yaml:"listen,omitempty"`
	// Advertise lists portals returned by SendTargets.
	Advertise []string `yaml:"advertise,omitempty"`
	// StateDir holds persistent state and the admin socket.
	StateDir string `yaml:"state_dir,omitempty"`
	// Access is the default access mode of targets: single-writer or shared.
	Access string `yaml:"access,omitempty"`
	// NOPInterval and NOPTimeout are the liveness timers (0 interval
	// disables pings).
	NOPInterval *time.Duration `yaml:"nop_interval,omitempty"`
	NOPTimeout  *time.Duration `yaml:"nop_timeout,omitempty"`
	// BusyPoll is how long a receiver polls its empty socket for the
	// next command before it sleeps (0 disables; nil: the default).
	BusyPoll *time.Duration `yaml:"busy_poll,omitempty"`
	// Negotiation limits what the target offers at login.
	Negotiation Negotiation `yaml:"negotiation,omitempty"`
	// CHAPMinSecretLength is the shortest CHAP secret accepted; 0 means
	// the default of 12 bytes.
	CHAPMinSecretLength int `yaml:"chap_min_secret_length,omitempty"`
	// Limits are the resource limits against hostile or broken peers;
	// zero values keep the defaults (or the flags).
	Limits Limits `yaml:"limits,omitempty"`
	// Discovery configures discovery (SendTargets) sessions.
	Discovery Discovery `yaml:"discovery,omitempty"`
	// Targets are the target nodes served.
	Targets []Target `yaml:"targets,omitempty"`
}

// Negotiation is what the target offers at login (RFC 7143 §13). Zero
// values leave the daemon's defaults.
type Negotiation struct {
	Pos                      `yaml:"-"`
	HeaderDigest             []string `yaml:"header_digest,omitempty"`
	DataDigest               []string `yaml:"data_digest,omitempty"`
	MaxRecvDataSegmentLength int      `yaml:"max_recv_data_segment_length,omitempty"`
	MaxBurstLength           int      `yaml:"max_burst_length,omitempty"`
	FirstBurstLength         int      `yaml:"first_burst_length,omitempty"`
	MaxOutstandingR2T        int      `yaml:"max_outstanding_r2t,omitempty"`
	DefaultTime2Wait         *int     `yaml:"default_time2wait,omitempty"`
	DefaultTime2Retain       *int     `yaml:"default_time2retain,omitempty"`
	InitialR2T               *bool    `yaml:"initial_r2t,omitempty"`
	ImmediateData            *bool    `yaml:"immediate_data,omitempty"`
}

// Discovery configures discovery sessions.
type Discovery struct {
	Pos  `yaml:"-"`
	CHAP *CHAP `yaml:"chap,omitempty"`
	// ACL filters which targets SendTargets shows to an initiator is the
	// targets' own ACL; discovery has none.
}

// Target is one target node.
type Target struct {
	Pos   `yaml:"-"`
	Name  string `yaml:"name,omitempty"`
	Alias string `yaml:"alias,omitempty"`
	// Access overrides File.Access for this target.
	Access string `yaml:"access,omitempty"`
	// MaxSessions bounds the normal sessions of the target; 0 is no limit.
	MaxSessions int   `yaml:"max_sessions,omitempty"`
	LUNs        []LUN `yaml:"luns,omitempty"`
	CHAP        *CHAP `yaml:"chap,omitempty"`
	ACL         ACL   `yaml:"acl,omitempty"`
}

// LUN is one logical unit; the fields are those of the --lun SPEC.
type LUN struct {
	Pos `yaml:"-"`
	// ID is the LUN number; nil numbers LUNs in order, skipping used ones.
	ID        *int   `yaml:"id,omitempty"`
	Path      string `yaml:"path,omitempty"`
	Size      Size   `yaml:"size,omitempty"`
	ReadOnly  bool   `yaml:"ro,omitempty"`
	Thin      bool   `yaml:"thin,omitempty"`
	Removable bool   `yaml:"removable,omitempty"`
	BlockSize int    `yaml:"blocksize,omitempty"`
	Serial    string `yaml:"serial,omitempty"`
	Direct    bool   `yaml:"direct,omitempty"`
	// SanitizeRate caps SANITIZE OVERWRITE, bytes per second (0: no cap).
	SanitizeRate Size `yaml:"sanitize_rate,omitempty"`
}

// Limits bound what peers can make the daemon hold.
type Limits struct {
	Pos `yaml:"-"`
	// MaxConnections bounds the connections open at once (default 1024).
	MaxConnections int `yaml:"max_connections,omitempty"`
	// MaxConnectionsPerSource bounds them per source IP (default 64).
	MaxConnectionsPerSource int `yaml:"max_connections_per_source,omitempty"`
	// DataBufferBudget bounds command data buffers (default 256MiB).
	DataBufferBudget Size `yaml:"data_buffer_budget,omitempty"`
}

// CHAP holds the credentials of a target (or of discovery).
type CHAP struct {
	Pos `yaml:"-"`
	// Users is the initiator credential accepted (one per target).
	Users []Secret `yaml:"users,omitempty"`
	// SecretDir is a directory in the Kubernetes Secret layout
	// (node.session.auth.username / node.session.auth.password, and the
	// _in keys for mutual CHAP).
	SecretDir string `yaml:"secret_dir,omitempty"`
	// Mutual is the target's own credential (mutual CHAP).
	Mutual *Secret `yaml:"mutual,omitempty"`
	// Algorithms in preference order: SHA3-256, SHA-256, SHA-1, MD5.
	Algorithms []string `yaml:"algorithms,omitempty"`
}

// Secret is a CHAP user name and where its secret comes from: exactly one
// of Secret (inline; the file must not be readable by others), SecretFile
// or SecretEnv.
type Secret struct {
	Pos        `yaml:"-"`
	User       string `yaml:"user,omitempty"`
	Secret     string `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
	SecretEnv  string `yaml:"secret_env,omitempty"`
}

// ACL is the initiator access list of a target: initiator-name globs and
// ietd initiators.allow / initiators.deny files.
type ACL struct {
	Pos       `yaml:"-"`
	Allow     []string `yaml:"allow,omitempty"`
	Deny      []string `yaml:"deny,omitempty"`
	AllowFile string   `yaml:"allow_file,omitempty"`
	DenyFile  string   `yaml:"deny_file,omitempty"`
}

// Size is a byte count written as a number or with a unit (4GiB, 1TB).
type Size int64

// UnmarshalYAML accepts an integer or a string with a unit.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &posError{n.Line, n.Column, "size: want a number of bytes or a string such as 4GiB"}
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return &posError{n.Line, n.Column, err.Error()}
	}
	*s = Size(v)
	return nil
}

// MarshalYAML writes the size in the largest binary unit that divides it.
func (s Size) MarshalYAML() (any, error) { return FormatSize(int64(s)), nil }

// Pos records where a mapping and each of its keys are in the file.
type Pos struct {
	Line, Column int
	keys         map[string][2]int
}

// At returns the line and column of key (or of the mapping when key is
// absent or empty).
func (p Pos) At(key string) (int, int) {
	if lc, ok := p.keys[key]; ok {
		return lc[0], lc[1]
	}
	return p.Line, p.Column
}

// Set records the position of a mapping or of one of its keys (used by
// parsers of other formats, such as ietd.conf).
func (p *Pos) Set(key string, line, col int) {
	if key == "" {
		p.Line, p.Column = line, col
		return
	}
	if p.keys == nil {
		p.keys = map[string][2]int{}
	}
	p.keys[key] = [2]int{line, col}
}

func (p *Pos) pos() *Pos { return p }

type positioned interface{ pos() *Pos }

// posError is a decoding error at a position.
type posError struct {
	line, col int
	msg       string
}

func (e *posError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// Severity of a Diag.
type Severity int

const (
	Error Severity = iota
	Warning
)

// Diag is one problem found in a configuration file.
type Diag struct {
	Line, Column int
	Severity     Severity
	Msg          string
}

func (d Diag) String() string {
	sev := "error"
	if d.Severity == Warning {
		sev = "warning"
	}
	if d.Line == 0 {
		return fmt.Sprintf("%s: %s", sev, d.Msg)
	}
	return fmt.Sprintf("%d:%d: %s: %s", d.Line, d.Column, sev, d.Msg)
}

// Diags is a list of problems, sorted by position.
type Diags []Diag

// Errs returns only the errors.
func (ds Diags) Errs() Diags {
	var out Diags
	for _, d := range ds {
		if d.Severity == Error {
			out = append(out, d)
		}
	}
	return out
}

// Err returns an error listing every error in ds prefixed by name, or nil.
func (ds Diags) Err(name string) error {
	errs := ds.Errs()
	if len(errs) == 0 {
		return nil
	}
	var b strings.Builder
	for i, d := range errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(name + ":" + d.String())
	}
	return errors.New(b.String())
}

func (ds Diags) sorted() Diags {
	sort.SliceStable(ds, func(i, j int) bool {
		if ds[i].Line != ds[j].Line {
			return ds[i].Line < ds[j].Line
		}
		return ds[i].Column < ds[j].Column
	})
	return ds
}

// Format reports which syntax a file uses.
type Format int

const (
	FormatYAML Format = iota
	FormatIETD
)

// yamlStart matches the first meaningful line of a YAML file: "key:",
// "- item", "---", or a flow collection.
var yamlStart = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_-]*\s*:(\s|$)|-(\s|$)|---|\{|\[)`)

// Detect tells an ietd.conf from a YAML file by its first meaningful line:
// YAML starts with "key:", "-", "---" or a flow collection; ietd.conf with
// a keyword and a space ("Target iqn....").
func Detect(data []byte) Format {
	for _, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		if yamlStart.MatchString(s) {
			return FormatYAML
		}
		return FormatIETD
	}
	return FormatYAML
}

// Load reads a configuration file in either format. It returns the model
// (nil when the file could not be parsed at all) and every diagnostic; a
// file with inline secrets that others may read gets a warning. Relative
// ACL file names of an ietd.conf resolve next to it.
func Load(path string) (*File, Format, Diags, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > MaxFileSize {
		return nil, 0, nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, 0, nil, err
	}
	format := Detect(data)
	var cf *File
	var ds Diags
	if format == FormatIETD {
		cf, ds = ParseIETD(data)
	} else {
		cf, ds = Parse(data)
	}
	if cf != nil && cf.HasInlineSecrets() && st.Mode().Perm()&0o077 != 0 {
		ds = append(ds, Diag{Severity: Warning, Msg: fmt.Sprintf(
			"%s holds CHAP secrets but its mode is %04o: make it readable by its owner only (chmod 600)", path, st.Mode().Perm())})
	}
	return cf, format, ds.sorted(), nil
}

// HasInlineSecrets reports whether any CHAP secret is written in the file.
func (f *File) HasInlineSecrets() bool {
	check := func(c *CHAP) bool {
		if c == nil {
			return false
		}
		for _, u := range c.Users {
			if u.Secret != "" {
				return true
			}
		}
		return c.Mutual != nil && c.Mutual.Secret != ""
	}
	if check(f.Discovery.CHAP) {
		return true
	}
	for i := range f.Targets {
		if check(f.Targets[i].CHAP) {
			return true
		}
	}
	return false
}

// Parse decodes and validates a YAML configuration. Unknown keys, wrong
// types and invalid values are errors with their line numbers.
func Parse(data []byte) (*File, Diags) {
	if d, ok := oddLineBreak(data); ok {
		return nil, Diags{d}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Diags{yamlDiag(err)}
	}
	f := &File{}
	if len(root.Content) == 0 {
		return f, Diags{{Line: 1, Column: 1, Msg: "empty configuration: no targets"}}
	}
	var ds Diags
	decodeStrict(root.Content[0], reflect.ValueOf(f).Elem(), "", &ds)
	if len(ds.Errs()) > 0 {
		return f, ds.sorted()
	}
	ds = append(ds, f.Validate()...)
	return f, ds.sorted()
}

// oddLineBreak finds the first line break YAML counts but editors and
// this package's line numbers do not: a carriage return not followed by a
// line feed, NEL (U+0085), LINE SEPARATOR (U+2028) or PARAGRAPH SEPARATOR
// (U+2029). With one of them in the file every later position the YAML
// parser reports would be off, so the file is refused where it occurs.
func oddLineBreak(data []byte) (Diag, bool) {
	line, col := 1, 1
	for i := 0; i < len(data); {
		c := data[i]
		name, size := "", 1
		switch {
		case c == '\n':
			line, col = line+1, 1
			i++
			continue
		case c == '\r' && (i+1 == len(data) || data[i+1] != '\n'):
			name = "a carriage return (CR) without a line feed"
		case c == 0xc2 && i+1 < len(data) && data[i+1] == 0x85:
			name, size = "NEL (U+0085)", 2
		case c == 0xe2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xa8 || data[i+2] == 0xa9):
			name, size = "a Unicode line or paragraph separator (U+2028/U+2029)", 3
		}
		if name != "" {
			return Diag{Line: line, Column: col, Msg: name + " is a line break in YAML but not in most editors; save the file with LF or CRLF line endings"}, true
		}
		if c&0xc0 != 0x80 { // count characters, not UTF-8 continuation bytes
			col++
		}
		i += size
	}
	return Diag{}, false
}

func yamlDiag(err error) Diag {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	d := Diag{Msg: msg}
	if strings.HasPrefix(msg, "line ") {
		var n int
		if _, e := fmt.Sscanf(msg, "line %d:", &n); e == nil {
			d.Line, d.Column = n, 1
			_, rest, _ := strings.Cut(msg, ":")
			d.Msg = strings.TrimSpace(rest)
		}
	}
	return d
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
	posType      = reflect.TypeOf(Pos{})
)

// decodeStrict decodes n into v (a struct, slice, pointer or scalar),
// reporting unknown keys, duplicate keys and type errors at their
// positions; it records key positions in each struct's Pos.
func decodeStrict(n *yaml.Node, v reflect.Value, path string, ds *Diags) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	errAt := func(format string, args ...any) {
		*ds = append(*ds, Diag{Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...)})
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // absent: the zero value
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		decodeStrict(n, nv.Elem(), path, ds)
		v.Set(nv)
		return
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			errAt("%s: want a mapping (key: value)", orRoot(path))
			return
		}
		t := v.Type()
		fields := map[string]int{}
		var known []string
		for i := 0; i < t.NumField(); i++ {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = i
			known = append(known, tag)
		}
		var p *Pos
		if pp, ok := v.Addr().Interface().(positioned); ok {
			p = pp.pos()
			p.Line, p.Column = n.Line, n.Column
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := k.Value
			if seen[key] {
				*ds = append(*ds, Diag{Line: k.Line, Column: k.Column, Msg: fmt.Sprintf("%s: key %q given twice", orRoot(path), key)})
				continue
			}
			seen[key] = true
			fi, ok := fields[key]
			if !ok {
				*ds = append(*ds, Diag{Line: k.Line, Column: k.Column, Msg: fmt.Sprintf("%s: unknown key %q (known: %s)", orRoot(path), key, strings.Join(known, ", "))})
				continue
			}
			if p != nil {
				p.Set(key, k.Line, k.Column)
			}
			decodeStrict(val, v.Field(fi), join(path, key), ds)
		}
		return
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errAt("%s: want a list", path)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			decodeStrict(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i), ds)
		}
		v.Set(s)
		return
	}
	if n.Kind != yaml.ScalarNode {
		errAt("%s: want a single value", path)
		return
	}
	switch v.Type() {
	case sizeType:
		var s Size
		if err := s.UnmarshalYAML(n); err != nil {
			errAt("%s: %s", path, err.(*posError).msg)
			return
		}
		v.Set(reflect.ValueOf(s))
		return
	case durationType:
		d, err := time.ParseDuration(n.Value)
		if err != nil || d < 0 {
			errAt("%s: %q is not a duration (use 5s, 500ms, 1m)", path, n.Value)
			return
		}
		v.SetInt(int64(d))
		return
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" {
			errAt("%s: want a string, got %s (quote it)", path, n.Value)
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Tag != "!!bool" || n.Decode(&b) != nil {
			errAt("%s: want true or false, got %q", path, n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int:
		var i int
		if n.Tag != "!!int" || n.Decode(&i) != nil {
			errAt("%s: want an integer, got %q", path, n.Value)
			return
		}
		v.SetInt(int64(i))
	default:
		errAt("%s: unsupported value", path)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "configuration"
	}
	return path
}

// Marshal writes f as YAML (what import-ietd prints).
func Marshal(f *File) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
