package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ParseIETD reads an ietd.conf (the configuration of the iSCSI Enterprise
// Target) into the model. Every keyword of ietd.conf(5) is either mapped,
// or reported: a warning when the setting does not change what initiators
// can do (tuning knobs), an error when serving without it would differ
// (unknown keywords, nullio LUNs, malformed values). Secrets are taken
// inline, as ietd writes them.
//
// Session-wide keys (digests, lengths, timers) apply to every target in
// this daemon; the first target that sets one decides and a different
// value in another target is a warning.
func ParseIETD(data []byte) (*File, Diags) {
	p := &ietdParser{f: &File{}, set: map[string]ietdSetting{}}
	p.f.Pos.Set("", 1, 1)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxFileSize)
	line := 0
	for sc.Scan() {
		line++
		if !utf8.Valid(sc.Bytes()) {
			// Names, secrets and paths are text; a stray byte would
			// otherwise become part of a CHAP secret nobody can type.
			col := 1 + utf8.RuneCount(sc.Bytes()[:invalidUTF8(sc.Bytes())])
			p.errf(line, col, "not valid UTF-8 text (save the file as UTF-8)")
			continue
		}
		p.line(line, sc.Text())
	}
	if err := sc.Err(); err != nil {
		p.errf(line+1, 1, "%v", err)
	}
	if len(p.f.Targets) == 0 && len(p.ds.Errs()) == 0 {
		p.errf(max(line, 1), 1, "no Target defined")
	}
	p.secretLengths()
	if len(p.f.Targets) > 0 {
		p.ds = append(p.ds, p.f.Validate()...)
	}
	return p.f, p.ds.sorted()
}

// invalidUTF8 returns the offset of the first byte of b that is not part
// of a valid UTF-8 sequence.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

type ietdSetting struct {
	line  int
	value string
}

type ietdParser struct {
	f   *File
	ds  Diags
	cur *Target
	// set remembers the first value of each session-wide key.
	set map[string]ietdSetting
}

func (p *ietdParser) errf(line, col int, format string, args ...any) {
	p.ds = append(p.ds, Diag{Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
}

func (p *ietdParser) warnf(line, col int, format string, args ...any) {
	p.ds = append(p.ds, Diag{Line: line, Column: col, Severity: Warning, Msg: fmt.Sprintf(format, args...)})
}

// ietdIgnored are keys that only tune ietd itself; they are reported as
// warnings with what happens instead.
var ietdIgnored = map[string]string{
	"maxconnections":           "one connection per session is supported (MaxConnections=1)",
	"maxxmitdatasegmentlength": "the initiator's MaxRecvDataSegmentLength decides the size of Data-In PDUs",
	"datapduinorder":           "Data PDUs are always in order (DataPDUInOrder=Yes)",
	"datasequenceinorder":      "data sequences are always in order (DataSequenceInOrder=Yes)",
	"errorrecoverylevel":       "error recovery level 0 is used",
	"wthreads":                 "I/O runs on the connection's goroutines",
	"queuedcommands":           "the command window is 128 per session",
	"isnsserver":               "iSNS is not supported",
	"isnsaccesscontrol":        "iSNS is not supported",
	"ifmarker":                 "markers are not supported",
	"ofmarker":                 "markers are not supported",
	"ifmarkint":                "markers are not supported",
	"ofmarkint":                "markers are not supported",
}

func (p *ietdParser) line(n int, raw string) {
	text, _, _ := strings.Cut(raw, "#")
	fields := strings.Fields(text)
	if len(fields) == 0 {
		return
	}
	col := strings.Index(raw, fields[0]) + 1
	key := strings.ToLower(fields[0])
	args := fields[1:]
	switch key {
	case "target":
		if len(args) != 1 {
			p.errf(n, col, "Target: want one target name")
			return
		}
		p.f.Targets = append(p.f.Targets, Target{Name: args[0]})
		p.cur = &p.f.Targets[len(p.f.Targets)-1]
		p.cur.Pos.Set("", n, col)
		p.cur.Pos.Set("name", n, col)
		return
	case "incominguser", "outgoinguser":
		p.user(n, col, key, fields[0], args)
		return
	}
	if note, ok := ietdIgnored[key]; ok {
		p.warnf(n, col, "%s is not supported and is ignored: %s", fields[0], note)
		return
	}
	if p.cur == nil {
		p.errf(n, col, "%s outside a Target block (only IncomingUser and OutgoingUser are global)", fields[0])
		return
	}
	t := p.cur
	one := func() (string, bool) {
		if len(args) != 1 {
			p.errf(n, col, "%s: want one value", fields[0])
			return "", false
		}
		return args[0], true
	}
	num := func(lo, hi int) (int, bool) {
		v, ok := one()
		if !ok {
			return 0, false
		}
		i, err := strconv.Atoi(v)
		if err != nil || i < lo || i > hi {
			p.errf(n, col, "%s %q: want a number from %d to %d", fields[0], v, lo, hi)
			return 0, false
		}
		return i, true
	}
	yesNo := func() (*bool, bool) {
		v, ok := one()
		if !ok {
			return nil, false
		}
		switch strings.ToLower(v) {
		case "yes":
			b := true
			return &b, true
		case "no":
			b := false
			return &b, true
		}
		p.errf(n, col, "%s %q: want Yes or No", fields[0], v)
		return nil, false
	}
	neg := &p.f.Negotiation
	switch key {
	case "lun":
		p.lun(n, col, raw, args)
	case "alias":
		if len(args) == 0 {
			p.errf(n, col, "Alias: want a name")
			return
		}
		t.Alias = strings.Join(args, " ")
		t.Pos.Set("alias", n, col)
	case "maxsessions":
		if v, ok := num(0, 1<<16); ok {
			t.MaxSessions = v
			t.Pos.Set("max_sessions", n, col)
		}
	case "headerdigest", "datadigest":
		v, ok := one()
		if !ok {
			return
		}
		var list []string
		for _, d := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "crc32c":
				list = append(list, "CRC32C")
			case "none":
				list = append(list, "None")
			default:
				p.errf(n, col, "%s %q: want CRC32C, None or both", fields[0], v)
				return
			}
		}
		if p.global(n, col, fields[0], v, key) {
			if key == "headerdigest" {
				neg.HeaderDigest = list
				neg.Pos.Set("header_digest", n, col)
			} else {
				neg.DataDigest = list
				neg.Pos.Set("data_digest", n, col)
			}
		}
	case "maxrecvdatasegmentlength", "maxburstlength", "firstburstlength":
		if v, ok := num(512, 1<<24-1); ok && p.global(n, col, fields[0], args[0], key) {
			switch key {
			case "maxrecvdatasegmentlength":
				neg.MaxRecvDataSegmentLength = v
				neg.Pos.Set("max_recv_data_segment_length", n, col)
			case "maxburstlength":
				neg.MaxBurstLength = v
				neg.Pos.Set("max_burst_length", n, col)
			default:
				neg.FirstBurstLength = v
				neg.Pos.Set("first_burst_length", n, col)
			}
		}
	case "maxoutstandingr2t":
		if v, ok := num(1, 65535); ok && p.global(n, col, fields[0], args[0], key) {
			neg.MaxOutstandingR2T = v
			neg.Pos.Set("max_outstanding_r2t", n, col)
		}
	case "defaultwait", "defaulttime2wait", "defaultretain", "defaulttime2retain":
		if v, ok := num(0, 3600); ok && p.global(n, col, fields[0], args[0], key) {
			if strings.Contains(key, "wait") {
				neg.DefaultTime2Wait = &v
				neg.Pos.Set("default_time2wait", n, col)
			} else {
				neg.DefaultTime2Retain = &v
				neg.Pos.Set("default_time2retain", n, col)
			}
		}
	case "initialr2t", "immediatedata":
		if b, ok := yesNo(); ok && p.global(n, col, fields[0], args[0], key) {
			if key == "initialr2t" {
				neg.InitialR2T = b
				neg.Pos.Set("initial_r2t", n, col)
			} else {
				neg.ImmediateData = b
				neg.Pos.Set("immediate_data", n, col)
			}
		}
	case "nopinterval", "noptimeout":
		if v, ok := num(0, 3600); ok && p.global(n, col, fields[0], args[0], key) {
			d := time.Duration(v) * time.Second
			if key == "nopinterval" {
				p.f.NOPInterval = &d
				p.f.Pos.Set("nop_interval", n, col)
			} else {
				if v == 0 {
					p.warnf(n, col, "NOPTimeout 0: a ping is declared lost after the default 10s")
					return
				}
				p.f.NOPTimeout = &d
				p.f.Pos.Set("nop_timeout", n, col)
			}
		}
	default:
		p.errf(n, col, "unknown keyword %s", fields[0])
	}
}

// secretLengths keeps ietd's behaviour for short secrets: ietd accepted
// any length, this daemon refuses secrets under 12 bytes unless
// chap_min_secret_length says otherwise. The import lowers it to the
// shortest secret of the file, loudly.
func (p *ietdParser) secretLengths() {
	shortest, line, col := 0, 0, 0
	check := func(c *CHAP) {
		if c == nil {
			return
		}
		list := append([]Secret(nil), c.Users...)
		if c.Mutual != nil {
			list = append(list, *c.Mutual)
		}
		for _, s := range list {
			if n := len(s.Secret); n > 0 && n < DefaultCHAPMinSecretLength && (shortest == 0 || n < shortest) {
				shortest, line, col = n, s.Line, s.Column
			}
		}
	}
	check(p.f.Discovery.CHAP)
	for i := range p.f.Targets {
		check(p.f.Targets[i].CHAP)
	}
	if shortest == 0 {
		return
	}
	p.f.CHAPMinSecretLength = shortest
	p.f.Pos.Set("chap_min_secret_length", line, col)
	p.warnf(line, col, "CHAP secret of %d bytes: shorter than the %d this daemon requires by default; chap_min_secret_length set to %d to keep ietd's behaviour (a short secret can be guessed off-line from one recorded login: change it)",
		shortest, DefaultCHAPMinSecretLength, shortest)
}

// global records a session-wide key; a second target with another value
// is a warning and the first value stays.
func (p *ietdParser) global(n, col int, name, value, key string) bool {
	prev, ok := p.set[key]
	if !ok {
		p.set[key] = ietdSetting{n, value}
		return true
	}
	if !strings.EqualFold(prev.value, value) {
		p.warnf(n, col, "%s %s: this setting applies to all targets here; the value %s from line %d is used", name, value, prev.value, prev.line)
	}
	return false
}

func (p *ietdParser) user(n, col int, key, name string, args []string) {
	if len(args) == 0 {
		// ietd: a bare IncomingUser clears the list; nothing to clear here.
		p.warnf(n, col, "%s without user and secret has no effect", name)
		return
	}
	if len(args) != 2 {
		p.errf(n, col, "%s: want a user name and a secret (ietd secrets cannot contain spaces)", name)
		return
	}
	var c **CHAP
	if p.cur == nil {
		c = &p.f.Discovery.CHAP
		if p.f.Discovery.CHAP == nil {
			p.f.Discovery.Pos.Set("", n, col)
			p.f.Discovery.Pos.Set("chap", n, col)
		}
	} else {
		c = &p.cur.CHAP
		if *c == nil {
			p.cur.Pos.Set("chap", n, col)
		}
	}
	if *c == nil {
		*c = &CHAP{}
		(*c).Pos.Set("", n, col)
	}
	s := Secret{User: args[0], Secret: args[1]}
	s.Pos.Set("", n, col)
	s.Pos.Set("user", n, col+len(name)+1)
	if key == "incominguser" {
		(*c).Users = append((*c).Users, s)
		(*c).Pos.Set("users", n, col)
		return
	}
	if (*c).Mutual != nil {
		p.errf(n, col, "OutgoingUser given twice (the target has one identity for mutual CHAP)")
		return
	}
	(*c).Mutual = &s
	(*c).Pos.Set("mutual", n, col)
}

// lun parses "Lun N Path=...,Type=fileio|blockio[,IOMode=wb|wt|ro][,ScsiId=..][,ScsiSN=..][,BlockSize=..]".
func (p *ietdParser) lun(n, col int, raw string, args []string) {
	if len(args) < 2 {
		p.errf(n, col, "Lun: want \"Lun N Path=FILE,Type=fileio|blockio\"")
		return
	}
	id, err := strconv.Atoi(args[0])
	if err != nil || id < 0 || id > MaxLUNID {
		p.errf(n, col, "Lun %q: want a LUN number from 0 to %d", args[0], MaxLUNID)
		return
	}
	l := LUN{ID: &id}
	l.Pos.Set("", n, col)
	for _, k := range []string{"id", "path", "size", "ro", "direct", "serial", "blocksize"} {
		l.Pos.Set(k, n, col)
	}
	params := strings.Join(args[1:], "")
	opts := map[string]string{}
	var order []string
	for _, kv := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			p.errf(n, col, "Lun %d: %q is not Key=Value", id, kv)
			return
		}
		if _, dup := opts[k]; dup {
			p.errf(n, col, "Lun %d: %s given twice", id, k)
			return
		}
		opts[k] = v
		order = append(order, k)
	}
	for _, k := range order {
		v := opts[k]
		switch k {
		case "path":
			l.Path = v
		case "type":
			switch strings.ToLower(v) {
			case "fileio":
			case "blockio":
				// blockio bypasses the page cache.
				l.Direct = true
			case "nullio":
				p.errf(n, col, "Lun %d: Type=nullio (a LUN without storage) is not supported", id)
			default:
				p.errf(n, col, "Lun %d: Type=%s: want fileio or blockio", id, v)
			}
		case "iomode":
			switch strings.ToLower(v) {
			case "wb":
			case "ro":
				l.ReadOnly = true
			case "wt":
				p.warnf(n, col, "Lun %d: IOMode=wt: writes are acknowledged from the page cache as with wb; the write cache is reported (WCE=1) so initiators flush with SYNCHRONIZE CACHE and FUA, which are honoured", id)
			default:
				p.errf(n, col, "Lun %d: IOMode=%s: want wb, wt or ro", id, v)
			}
		case "scsisn":
			if err := CheckSerial(v); err != nil || v == "" {
				p.errf(n, col, "Lun %d: ScsiSN=%s: printable ASCII without spaces, 1 to 64 characters", id, v)
			}
			l.Serial = v
		case "scsiid":
			p.warnf(n, col, "Lun %d: ScsiId=%s is not used: the device identifier (VPD page 83h) is derived from the serial number (ScsiSN)", id, v)
		case "blocksize":
			bs, err := strconv.Atoi(v)
			if err != nil {
				p.errf(n, col, "Lun %d: BlockSize=%s: want 512 or 4096", id, v)
			}
			l.BlockSize = bs
		default:
			p.errf(n, col, "Lun %d: unknown parameter %s", id, k)
		}
	}
	if _, ok := opts["path"]; !ok {
		p.errf(n, col, "Lun %d: Path= is required", id)
		return
	}
	if _, ok := opts["type"]; !ok {
		p.warnf(n, col, "Lun %d: no Type=; fileio is used", id)
	}
	p.cur.LUNs = append(p.cur.LUNs, l)
	p.cur.Pos.Set("luns", n, col)
}
