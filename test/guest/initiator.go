package guest

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// IscsidConf returns base (the kit's iscsid.conf) with settings applied:
// every active line for a key in settings is dropped and the settings are
// appended. iscsid.startup is always /bin/true: iscsid is started by the
// job (iscsid_start), never by iscsiadm through systemctl.
func IscsidConf(base []byte, settings []string) ([]byte, error) {
	all := append([]string{"iscsid.startup = /bin/true"}, settings...)
	keys := map[string]bool{}
	var tail bytes.Buffer
	tail.WriteString("\n# Settings from test/guest.\n")
	for _, s := range all {
		k, v, ok := strings.Cut(s, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || strings.ContainsAny(k, " \t\n") || strings.Contains(v, "\n") {
			return nil, fmt.Errorf("guest: bad iscsid.conf setting %q (want \"key = value\")", s)
		}
		keys[k] = true
		fmt.Fprintf(&tail, "%s = %s\n", k, v)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(base))
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if k, _, ok := strings.Cut(t, "="); ok && !strings.HasPrefix(t, "#") && keys[strings.TrimSpace(k)] {
			out.WriteString("# (replaced) " + line + "\n")
			continue
		}
		out.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("guest: iscsid.conf: %w", err)
	}
	out.Write(tail.Bytes())
	return out.Bytes(), nil
}

// Digests requests header and data digests ("CRC32C", "None", or a
// preference list such as "CRC32C,None") for new node records.
func Digests(header, data string) []string {
	return []string{
		"node.conn[0].iscsi.HeaderDigest = " + header,
		"node.conn[0].iscsi.DataDigest = " + data,
	}
}

// CHAP enables one-way CHAP for sessions with the given name and secret.
func CHAP(user, secret string) []string {
	return []string{
		"node.session.auth.authmethod = CHAP",
		"node.session.auth.username = " + user,
		"node.session.auth.password = " + secret,
	}
}

// MutualCHAP adds the target's credentials to CHAP (bidirectional).
func MutualCHAP(user, secret, userIn, secretIn string) []string {
	return append(CHAP(user, secret),
		"node.session.auth.username_in = "+userIn,
		"node.session.auth.password_in = "+secretIn)
}

// DiscoveryCHAP enables CHAP for SendTargets discovery sessions.
func DiscoveryCHAP(user, secret string) []string {
	return []string{
		"discovery.sendtargets.auth.authmethod = CHAP",
		"discovery.sendtargets.auth.username = " + user,
		"discovery.sendtargets.auth.password = " + secret,
	}
}

// ReplacementTimeout sets how long the kernel queues I/O for a lost
// session before failing it (open-iscsi default 120 s).
func ReplacementTimeout(seconds int) []string {
	return []string{"node.session.timeo.replacement_timeout = " + strconv.Itoa(seconds)}
}

// ioErrorRE matches kernel log lines that mean data did not get where it
// was going, or a filesystem found damage.
var ioErrorRE = regexp.MustCompile(`I/O error|blk_update_request|EXT4-fs error|EXT4-fs \(.*\): (?:error|previous I/O error|Remounting filesystem read-only)|Aborting journal|journal commit I/O error|rejecting I/O to offline device|Medium Error|Hardware Error|[Dd]igest (?:error|mismatch)|Buffer I/O error`)

// IOErrorLines returns the kernel log lines that report I/O errors or
// filesystem damage.
func IOErrorLines(dmesg string) []string {
	var out []string
	for _, l := range strings.Split(dmesg, "\n") {
		if ioErrorRE.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// ParseKeyValues parses "key=value" lines (as written by disk_report).
func ParseKeyValues(b []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// shellLib is /job/lib.sh, sourced before every job script. The functions
// work under "set -eu -o pipefail". Functions:
//
//	log MSG...                   print MSG with the guest uptime
//	mark NAME [TEXT]             atomically create $JOB/NAME (the host polls markers)
//	host_signal NAME             true once the host created $JOB/NAME
//	iscsiadm ARGS...             the kit's iscsiadm
//	iscsid_start                 write /etc/iscsi config, start iscsid (log: $JOB/iscsid.log)
//	iscsi_discover [PORTAL]      SendTargets discovery; output also in $JOB/discovery.txt
//	iscsi_login IQN [PORTAL]     log in through PORTAL (creates the node record if the
//	                             target advertised an address the guest cannot reach,
//	                             unless ISCSI_REQUIRE_DISCOVERED=1: then that fails)
//	iscsi_logout IQN [PORTAL]    log out that session
//	iscsi_disk IQN LUN [SECS]    wait for and print the /dev/sdX of LUN in IQN's session
//	iscsi_negotiated KEY         KEY's negotiated value (HeaderDigest, MaxBurstLength, ...)
//	iscsi_session_report FILE    iscsiadm -m session -P 3 into $JOB/FILE
//	disk_report DEV              key=value lines: what the kernel made of the LUN
//	iscsid_stop                  log out everything and stop iscsid
//
// Defaults: PORTAL is $ISCSI_PORTAL (10.0.2.100:3260 unless forwarded
// elsewhere).
const shellLib = `# lib.sh: helpers for guest jobs (generated by test/guest).
log() { printf '[%s] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

mark() {
	local n=$1; shift
	printf '%s\n' "$*" > "$JOB/.$n.tmp" && mv -f "$JOB/.$n.tmp" "$JOB/$n"
}

host_signal() { [ -e "$JOB/$1" ]; }

iscsiadm() { LD_LIBRARY_PATH=$KIT_LIBRARY_PATH "$KIT_ROOT/sbin/iscsiadm" "$@"; }

iscsid_start() {
	mkdir -p /etc/iscsi /run/lock/iscsi || return 1
	cp "$JOB/iscsid.conf" /etc/iscsi/iscsid.conf || return 1
	printf 'InitiatorName=%s\n' "$INITIATOR_NAME" > /etc/iscsi/initiatorname.iscsi
	# iscsid signals its whole process group when it exits: own session.
	setsid env LD_LIBRARY_PATH="$KIT_LIBRARY_PATH" "$KIT_ROOT/sbin/iscsid" -f -d "$GUEST_ISCSID_DEBUG" \
		</dev/null >>"$JOB/iscsid.log" 2>&1 &
	ISCSID_PID=$!
	local i rc
	for i in $(seq 100); do
		rc=0
		iscsiadm -m session >/dev/null 2>&1 || rc=$?
		# 20: cannot connect to iscsid; 0 or 21 (no sessions): it answers.
		if [ $rc -ne 20 ]; then log "iscsid up (pid $ISCSID_PID)"; return 0; fi
		kill -0 $ISCSID_PID 2>/dev/null || break
		sleep 0.1
	done
	log "iscsid did not come up"; cat "$JOB/iscsid.log" >&2; return 1
}

iscsid_stop() {
	iscsiadm -m node --logoutall=all >/dev/null 2>&1 || true
	[ -n "${ISCSID_PID:-}" ] || return 0
	kill $ISCSID_PID 2>/dev/null || true
	local i
	for i in $(seq 50); do kill -0 $ISCSID_PID 2>/dev/null || return 0; sleep 0.1; done
	kill -9 $ISCSID_PID 2>/dev/null || true
}

iscsi_discover() {
	local portal=${1:-$ISCSI_PORTAL}
	iscsiadm -m discovery -t sendtargets -p "$portal" | tee -a "$JOB/discovery.txt"
	return ${PIPESTATUS[0]}
}

iscsi_login() {
	local iqn=$1 portal=${2:-$ISCSI_PORTAL}
	if ! iscsiadm -m node -T "$iqn" -p "$portal" >/dev/null 2>&1; then
		if [ "${ISCSI_REQUIRE_DISCOVERED:-0}" = 1 ]; then
			log "discovery did not record $iqn at $portal (the target advertised another address)" >&2
			return 1
		fi
		log "no node record for $iqn at $portal (discovery advertised another address): creating it"
		iscsiadm -m node -o new -T "$iqn" -p "$portal" >/dev/null || return 1
	fi
	iscsiadm -m node -T "$iqn" -p "$portal" --login
}

iscsi_logout() {
	local iqn=$1 portal=${2:-$ISCSI_PORTAL}
	iscsiadm -m node -T "$iqn" -p "$portal" --logout
}

iscsi_disk() {
	local iqn=$1 lun=$2 secs=${3:-60} i s d
	for i in $(seq $((secs * 10))); do
		for s in /sys/class/iscsi_session/session*; do
			[ "$(cat "$s/targetname" 2>/dev/null)" = "$iqn" ] || continue
			for d in "$s"/device/target*/*:*:*:"$lun"/block/sd*; do
				[ -e "$d" ] || continue
				d=/dev/${d##*/}
				if [ -b "$d" ]; then echo "$d"; return 0; fi
			done
		done
		sleep 0.1
	done
	log "no disk for $iqn LUN $lun after ${secs}s" >&2
	return 1
}

iscsi_negotiated() {
	iscsiadm -m session -P 2 2>/dev/null | sed -n "s/^[[:space:]]*$1: //p" | head -n 1
}

iscsi_session_report() { iscsiadm -m session -P 3 > "$JOB/$1" 2>&1; }

disk_report() {
	local dev=${1#/dev/} f
	local q=/sys/block/$dev
	echo "device=/dev/$dev"
	echo "size_bytes=$(( $(cat "$q/size") * 512 ))"
	for f in logical_block_size physical_block_size minimum_io_size optimal_io_size max_sectors_kb \
		max_hw_sectors_kb max_segments discard_max_bytes discard_max_hw_bytes discard_granularity \
		write_zeroes_max_bytes write_cache fua rotational nr_requests scheduler; do
		echo "$f=$(cat "$q/queue/$f" 2>/dev/null)"
	done
	echo "queue_depth=$(cat "$q/device/queue_depth" 2>/dev/null)"
	echo "scsi_level=$(cat "$q/device/scsi_level" 2>/dev/null)"
	echo "vendor=$(cat "$q/device/vendor" 2>/dev/null)"
	echo "model=$(cat "$q/device/model" 2>/dev/null)"
	echo "rev=$(cat "$q/device/rev" 2>/dev/null)"
	echo "timeout=$(cat "$q/device/timeout" 2>/dev/null)"
	for f in cache_type FUA provisioning_mode protection_type thin_provisioning zeroing_mode max_write_same_blocks; do
		echo "$f=$(cat "$q"/device/scsi_disk/*/$f 2>/dev/null)"
	done
	echo "dmesg_write_cache=$(dmesg | grep "\[$dev\] Write cache" | tail -n 1 | sed 's/.*\] Write cache/Write cache/')"
}
`
