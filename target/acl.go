package target

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"path"
	"regexp"
	"strings"
)

// Access control by initiator name and address. A refused initiator gets
// Login Response 0x0202 (authorization failure, RFC 7143 §11.13.5) and
// does not see the target in SendTargets.

// ACL decides which initiators may log in to which target.
//
// An initiator is refused when its name matches a Deny pattern, or when
// Allow is not empty and its name matches no Allow pattern. The ietd rule
// files are then applied as ietd applied them: refused when a line of
// IETDeny matches and no line of IETAllow does; with no IETDeny rules the
// IETAllow rules alone refuse nobody.
type ACL struct {
	// Allow and Deny are glob patterns (path.Match syntax: *, ?, [...])
	// matched against the initiator name, ignoring case.
	Allow, Deny []string
	// IETAllow and IETDeny are parsed initiators.allow / initiators.deny
	// files (ParseIETRules).
	IETAllow, IETDeny []IETRule
}

// IETRule is one line of an ietd initiators.allow or initiators.deny file:
// a target name (or ALL) and the initiators it applies to.
type IETRule struct {
	Target  string // target name, or "ALL"
	entries []ietEntry
	line    int
}

type ietEntry struct {
	all    bool
	prefix netip.Prefix   // address or network
	name   *regexp.Regexp // initiator name (anchored, case-insensitive)
}

// Validate checks the glob patterns.
func (a *ACL) Validate() error {
	for _, p := range append(append([]string(nil), a.Allow...), a.Deny...) {
		if p == "" {
			return fmt.Errorf("iscsi: empty initiator pattern")
		}
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			return fmt.Errorf("iscsi: initiator pattern %q: %w", p, err)
		}
	}
	return nil
}

// Allowed reports whether initiator, connecting from addr, may use the
// target node named target; reason says why not.
func (a *ACL) Allowed(target, initiator string, addr netip.Addr) (bool, string) {
	if a == nil {
		return true, ""
	}
	name := strings.ToLower(initiator)
	for _, p := range a.Deny {
		if ok, _ := path.Match(strings.ToLower(p), name); ok {
			return false, fmt.Sprintf("initiator matches deny pattern %q", p)
		}
	}
	if len(a.Allow) > 0 {
		allowed := false
		for _, p := range a.Allow {
			if ok, _ := path.Match(strings.ToLower(p), name); ok {
				allowed = true
				break
			}
		}
		if !allowed {
			return false, "initiator matches no allow pattern"
		}
	}
	if len(a.IETDeny) > 0 {
		if line, ok := ietMatch(a.IETDeny, target, initiator, addr); ok {
			if _, allowed := ietMatch(a.IETAllow, target, initiator, addr); !allowed {
				return false, fmt.Sprintf("initiators.deny line %d matches and initiators.allow does not", line)
			}
		}
	}
	return true, ""
}

// ietMatch applies ietd's rule: the first line whose target is the node
// (or ALL) decides; the initiator matches when any entry of that line
// matches its address or name.
func ietMatch(rules []IETRule, target, initiator string, addr netip.Addr) (int, bool) {
	addr = addr.Unmap()
	for _, r := range rules {
		if r.Target != "ALL" && !strings.EqualFold(r.Target, target) {
			continue
		}
		for _, e := range r.entries {
			switch {
			case e.all:
				return r.line, true
			case e.name != nil:
				if e.name.MatchString(initiator) {
					return r.line, true
				}
			case e.prefix.IsValid():
				if addr.IsValid() && e.prefix.Contains(addr) {
					return r.line, true
				}
			}
		}
		return r.line, false
	}
	return 0, false
}

// ParseIETRules parses an ietd initiators.allow or initiators.deny file:
// one rule per line, "TARGET-NAME|ALL  ENTRY[, ENTRY...]", where an entry is
// ALL, an IPv4 or IPv6 address (IPv6 optionally in brackets), a network in
// CIDR form, or a regular expression matched against the whole initiator
// name (e.g. iqn\.2016-04\.world\.srv:.*). Blank lines and lines starting
// with # are skipped. name is used in error messages.
func ParseIETRules(r io.Reader, name string) ([]IETRule, error) {
	var rules []IETRule
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s:%d: want \"TARGET|ALL INITIATOR[,INITIATOR...]\"", name, n)
		}
		rule := IETRule{Target: fields[0], line: n}
		if strings.EqualFold(rule.Target, "ALL") {
			rule.Target = "ALL"
		}
		list := strings.Join(fields[1:], ",")
		for _, item := range strings.Split(list, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			e, err := parseIETEntry(item)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, n, err)
			}
			rule.entries = append(rule.entries, e)
		}
		if len(rule.entries) == 0 {
			return nil, fmt.Errorf("%s:%d: no initiators", name, n)
		}
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rules, nil
}

func parseIETEntry(s string) (ietEntry, error) {
	if strings.EqualFold(s, "ALL") {
		return ietEntry{all: true}, nil
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if i := strings.Index(s, "]/"); strings.HasPrefix(s, "[") && i > 0 {
		bare = s[1:i] + s[i+1:]
	}
	if p, err := netip.ParsePrefix(bare); err == nil {
		return ietEntry{prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(bare); err == nil {
		a = a.Unmap()
		return ietEntry{prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if looksLikeAddress(s) {
		return ietEntry{}, fmt.Errorf("bad address or network %q", s)
	}
	re, err := regexp.Compile("(?i)^(?:" + s + ")$")
	if err != nil {
		return ietEntry{}, fmt.Errorf("bad initiator name pattern %q: %v", s, err)
	}
	return ietEntry{name: re}, nil
}

// looksLikeAddress reports whether s can only be meant as an address:
// digits, dots and a slash, or a bracketed form.
func looksLikeAddress(s string) bool {
	if strings.HasPrefix(s, "[") {
		return true
	}
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' && r != '/' {
			return false
		}
	}
	return true
}
