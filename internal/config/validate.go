package config

import (
	"fmt"
	"math"
	"net"
	"path"
	"strconv"
	"strings"
	"time"
)

// MaxLUNID is the largest LUN number (flat space addressing, SAM-5 §4.7.7).
const MaxLUNID = 16383

// Access modes.
const (
	AccessSingleWriter = "single-writer"
	AccessShared       = "shared"
)

// CHAPAlgorithms are the names accepted in chap.algorithms (case, "-"
// and "_" do not matter; IANA numbers 5-8 are accepted too).
var CHAPAlgorithms = []string{"SHA3-256", "SHA-256", "SHA-1", "MD5"}

// MaxBusyPoll is the longest busy_poll accepted (the target's own bound,
// target.MaxBusyPoll; a test in cmd/iscsi-target keeps the two equal).
const MaxBusyPoll = time.Millisecond

// DefaultCHAPMinSecretLength is the shortest secret accepted by default.
const DefaultCHAPMinSecretLength = 12

// chapAlgorithm normalises an algorithm name to its IANA number, or "".
func chapAlgorithm(s string) string {
	switch strings.NewReplacer("-", "", "_", "").Replace(strings.ToUpper(strings.TrimSpace(s))) {
	case "5", "MD5":
		return "5"
	case "6", "SHA1":
		return "6"
	case "7", "SHA256":
		return "7"
	case "8", "SHA3256":
		return "8"
	}
	return ""
}

// IsZero lets the YAML encoder omit empty sections (Pos is bookkeeping).
func (n Negotiation) IsZero() bool {
	n.Pos = Pos{}
	return len(n.HeaderDigest) == 0 && len(n.DataDigest) == 0 && n.MaxRecvDataSegmentLength == 0 &&
		n.MaxBurstLength == 0 && n.FirstBurstLength == 0 && n.MaxOutstandingR2T == 0 &&
		n.InitialR2T == nil && n.ImmediateData == nil && n.DefaultTime2Wait == nil && n.DefaultTime2Retain == nil
}

// IsZero lets the YAML encoder omit an empty discovery section.
func (d Discovery) IsZero() bool { return d.CHAP == nil }

// IsZero lets the YAML encoder omit an empty ACL.
func (a ACL) IsZero() bool {
	return len(a.Allow) == 0 && len(a.Deny) == 0 && a.AllowFile == "" && a.DenyFile == ""
}

// ValidName checks the iSCSI name forms of RFC 7143 §4.2.7.
func ValidName(n string) bool {
	l := strings.ToLower(n)
	if len(n) > 223 || n != l && !strings.HasPrefix(l, "naa.") {
		// iqn names are case-insensitive and should be lower case.
		return false
	}
	switch {
	case strings.HasPrefix(l, "iqn."):
		rest := l[4:]
		return len(rest) > 8 && rest[4] == '-' && !strings.ContainsAny(rest, " ,")
	case strings.HasPrefix(l, "eui."):
		return len(l) == 20
	case strings.HasPrefix(l, "naa."):
		return len(l) == 20 || len(l) == 36
	}
	return false
}

// CheckSerial enforces what VPD page 80h can carry: printable ASCII, at
// most 64 bytes.
func CheckSerial(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("serial %q: at most 64 characters", s)
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return fmt.Errorf("serial %q: only printable ASCII without spaces", s)
		}
	}
	return nil
}

// ParseSize accepts a byte count with an optional unit: binary KiB, MiB,
// GiB, TiB (also K, M, G, T), decimal KB, MB, GB, TB, or B.
func ParseSize(s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit (512MiB, 4GiB, 1TB)", orig)
	}
	mult := map[string]float64{
		"": 1, "B": 1,
		"K": 1 << 10, "KiB": 1 << 10, "KB": 1e3,
		"M": 1 << 20, "MiB": 1 << 20, "MB": 1e6,
		"G": 1 << 30, "GiB": 1 << 30, "GB": 1e9,
		"T": 1 << 40, "TiB": 1 << 40, "TB": 1e12,
	}
	m, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", orig, unit)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %v", orig, err)
	}
	v := f * m
	if v < 1 || v > math.MaxInt64/2 || v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid size %q: must be a whole, positive number of bytes", orig)
	}
	return int64(v), nil
}

// FormatSize writes n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

type validator struct{ ds Diags }

func (v *validator) err(p Pos, key, format string, args ...any) {
	l, c := p.At(key)
	v.ds = append(v.ds, Diag{Line: l, Column: c, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warn(p Pos, key, format string, args ...any) {
	l, c := p.At(key)
	v.ds = append(v.ds, Diag{Line: l, Column: c, Severity: Warning, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks every value and numbers LUNs without an id (in order,
// skipping used numbers). It returns all problems found.
func (f *File) Validate() Diags {
	v := &validator{}
	for i, l := range f.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			v.err(f.Pos, "listen", "listen[%d] %q: %v (use HOST:PORT, [::1]:3260 for IPv6)", i, l, err)
		}
	}
	for i, a := range f.Advertise {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			v.err(f.Pos, "advertise", "advertise[%d] %q: %v", i, a, err)
		} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			v.err(f.Pos, "advertise", "advertise[%d] %q: a wildcard address cannot be reached by initiators", i, a)
		}
	}
	v.access(f.Pos, f.Access)
	if f.NOPTimeout != nil && *f.NOPTimeout <= 0 {
		v.err(f.Pos, "nop_timeout", "nop_timeout must be > 0")
	}
	if f.BusyPoll != nil && (*f.BusyPoll < 0 || *f.BusyPoll > MaxBusyPoll) {
		v.err(f.Pos, "busy_poll", "busy_poll must be between 0 (off) and %v", MaxBusyPoll)
	}
	v.negotiation(&f.Negotiation)
	if l := &f.Limits; l.MaxConnections < 0 || l.MaxConnectionsPerSource < 0 {
		v.err(l.Pos, "max_connections", "limits: max_connections and max_connections_per_source must be >= 1 (0: default)")
	}
	if l := &f.Limits; l.DataBufferBudget != 0 && l.DataBufferBudget < 1<<20 {
		v.err(l.Pos, "data_buffer_budget", "limits: data_buffer_budget must be at least 1MiB")
	}
	if f.CHAPMinSecretLength < 0 || f.CHAPMinSecretLength > 255 {
		v.err(f.Pos, "chap_min_secret_length", "chap_min_secret_length %d outside [1, 255]", f.CHAPMinSecretLength)
	}
	if f.Discovery.CHAP != nil {
		v.chap(f.Discovery.CHAP, "discovery.chap")
	}
	if len(f.Targets) == 0 {
		v.err(f.Pos, "targets", "no targets")
	}
	names := map[string]int{}
	paths := map[string]string{}
	for i := range f.Targets {
		t := &f.Targets[i]
		where := fmt.Sprintf("targets[%d]", i)
		switch {
		case t.Name == "":
			v.err(t.Pos, "name", "%s: name is required", where)
		case !ValidName(t.Name):
			v.err(t.Pos, "name", "%s: name %q is not an iSCSI name (iqn.YYYY-MM.reverse.domain[:id], eui.<16 hex> or naa.<hex>, lower case)", where, t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				v.err(t.Pos, "name", "%s: target %s already defined as targets[%d]", where, t.Name, j)
			}
			names[t.Name] = i
			where = "target " + t.Name
		}
		for _, r := range t.Alias {
			if r < 0x20 || r > 0x7e {
				v.err(t.Pos, "alias", "%s: alias must be printable ASCII", where)
				break
			}
		}
		v.access(t.Pos, t.Access)
		if t.MaxSessions < 0 {
			v.err(t.Pos, "max_sessions", "%s: max_sessions must be >= 0 (0: no limit)", where)
		}
		if t.CHAP != nil {
			v.chap(t.CHAP, where+" chap")
		}
		v.acl(&t.ACL, where)
		if len(t.LUNs) == 0 {
			v.warn(t.Pos, "luns", "%s has no LUNs", where)
		}
		v.luns(t, where, paths)
	}
	return v.ds
}

func (v *validator) access(p Pos, a string) {
	switch a {
	case "", AccessSingleWriter, AccessShared:
	default:
		v.err(p, "access", "access %q: want single-writer or shared", a)
	}
}

func (v *validator) negotiation(n *Negotiation) {
	for _, k := range []struct {
		key  string
		list []string
	}{{"header_digest", n.HeaderDigest}, {"data_digest", n.DataDigest}} {
		for _, d := range k.list {
			if d != "CRC32C" && d != "None" {
				v.err(n.Pos, k.key, "negotiation.%s: %q is not CRC32C or None", k.key, d)
			}
		}
	}
	for _, k := range []struct {
		key string
		val int
	}{
		{"max_recv_data_segment_length", n.MaxRecvDataSegmentLength},
		{"max_burst_length", n.MaxBurstLength},
		{"first_burst_length", n.FirstBurstLength},
	} {
		if k.val != 0 && (k.val < 512 || k.val > 1<<24-1) {
			v.err(n.Pos, k.key, "negotiation.%s %d outside [512, 16777215]", k.key, k.val)
		}
	}
	for _, k := range []struct {
		key string
		val *int
	}{{"default_time2wait", n.DefaultTime2Wait}, {"default_time2retain", n.DefaultTime2Retain}} {
		if k.val != nil && (*k.val < 0 || *k.val > 3600) {
			v.err(n.Pos, k.key, "negotiation.%s %d outside [0, 3600]", k.key, *k.val)
		}
	}
	if n.MaxOutstandingR2T < 0 || n.MaxOutstandingR2T > 65535 {
		v.err(n.Pos, "max_outstanding_r2t", "negotiation.max_outstanding_r2t %d outside [1, 65535]", n.MaxOutstandingR2T)
	}
}

func (v *validator) chap(c *CHAP, where string) {
	if len(c.Users) == 0 && c.SecretDir == "" {
		v.err(c.Pos, "", "%s: give users or secret_dir", where)
	}
	if len(c.Users) > 0 && c.SecretDir != "" {
		v.err(c.Pos, "secret_dir", "%s: give either users or secret_dir, not both", where)
	}
	if len(c.Users) > 1 {
		v.err(c.Pos, "users", "%s: one user per target is supported (%d given)", where, len(c.Users))
	}
	seen := map[string]bool{}
	for i := range c.Users {
		u := &c.Users[i]
		v.secret(u, fmt.Sprintf("%s.users[%d]", where, i))
		if seen[u.User] {
			v.err(u.Pos, "user", "%s: user %q listed twice", where, u.User)
		}
		seen[u.User] = true
	}
	if c.Mutual != nil {
		v.secret(c.Mutual, where+".mutual")
	}
	algs := map[string]bool{}
	for _, a := range c.Algorithms {
		n := chapAlgorithm(a)
		if n == "" {
			v.err(c.Pos, "algorithms", "%s: algorithm %q: want %s", where, a, strings.Join(CHAPAlgorithms, ", "))
		} else if algs[n] {
			v.err(c.Pos, "algorithms", "%s: algorithm %q listed twice", where, a)
		}
		algs[n] = true
	}
}

func (v *validator) secret(s *Secret, where string) {
	if s.User == "" {
		v.err(s.Pos, "user", "%s: user is required", where)
	}
	n := 0
	for _, x := range []string{s.Secret, s.SecretFile, s.SecretEnv} {
		if x != "" {
			n++
		}
	}
	if n != 1 {
		v.err(s.Pos, "", "%s: give exactly one of secret, secret_file, secret_env", where)
	}
}

func (v *validator) acl(a *ACL, where string) {
	for _, k := range []struct {
		key  string
		list []string
	}{{"allow", a.Allow}, {"deny", a.Deny}} {
		for _, g := range k.list {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				v.err(a.Pos, k.key, "%s acl.%s: %q is not a valid glob", where, k.key, g)
			}
		}
	}
}

func (v *validator) luns(t *Target, where string, paths map[string]string) {
	used := map[int]int{}
	for i := range t.LUNs {
		l := &t.LUNs[i]
		if l.ID == nil {
			continue
		}
		if *l.ID < 0 || *l.ID > MaxLUNID {
			v.err(l.Pos, "id", "%s luns[%d]: id %d outside [0, %d]", where, i, *l.ID, MaxLUNID)
			continue
		}
		if j, dup := used[*l.ID]; dup {
			v.err(l.Pos, "id", "%s luns[%d]: LUN id %d already used by luns[%d]", where, i, *l.ID, j)
		}
		used[*l.ID] = i
	}
	next := 0
	for i := range t.LUNs {
		l := &t.LUNs[i]
		if l.ID == nil {
			for _, taken := used[next]; taken; _, taken = used[next] {
				next++
			}
			id := next
			l.ID = &id
			used[id] = i
		}
		lw := fmt.Sprintf("%s LUN %d", where, *l.ID)
		if l.Path == "" {
			v.err(l.Pos, "path", "%s: path is required", lw)
		} else if other, dup := paths[l.Path]; dup {
			v.err(l.Pos, "path", "%s: %s is already served as %s", lw, l.Path, other)
		} else {
			paths[l.Path] = lw
		}
		bs := int64(512)
		switch l.BlockSize {
		case 0, 512:
		case 4096:
			bs = 4096
		default:
			v.err(l.Pos, "blocksize", "%s: blocksize %d: must be 512 or 4096", lw, l.BlockSize)
		}
		if l.Size < 0 || l.Size%Size(bs) != 0 {
			v.err(l.Pos, "size", "%s: size %d is not a multiple of the block size %d", lw, l.Size, bs)
		}
		if l.Serial != "" {
			if err := CheckSerial(l.Serial); err != nil {
				v.err(l.Pos, "serial", "%s: %v", lw, err)
			}
		}
	}
}
