//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
	"github.com/iscsi-target/iscsi-target/test/guest"
)

// kernelCHAPScript: discovery with CHAP, then one login per CHAP_A
// preference (node.session.auth.chap_algs) with mutual CHAP, each mounting
// the LUN (the first formats it and writes a file, the others verify it);
// then the node record gets the password with a trailing newline the way
// the Kubernetes iscsi plugin writes it (iscsiadm -o update -v "$value"),
// which must still log in; then a wrong secret and a wrong mutual secret,
// which must not.
const kernelCHAPScript = `set -eu -o pipefail
iscsid_start
iscsi_discover
node() { iscsiadm -m node -T "$IQN" -p "$ISCSI_PORTAL" "$@"; }
ms() { date +%s%3N; }
mkdir -p /mnt/lun
n=0
for alg in MD5 SHA1 SHA256 SHA3-256; do
	node -o update -n node.session.auth.chap_algs -v "$alg"
	t0=$(ms)
	iscsi_login "$IQN"
	t1=$(ms)
	echo "$alg=$((t1 - t0))" >> login-ms.txt
	dev=$(iscsi_disk "$IQN" "$LUN")
	if [ $n -eq 0 ]; then
		mkfs.ext4 -q -F "$dev"
		mount -t ext4 "$dev" /mnt/lun
		head -c 1M /dev/urandom > /mnt/lun/data.bin
		sha256sum /mnt/lun/data.bin > sum.txt
	else
		mount -t ext4 "$dev" /mnt/lun
		sha256sum -c --quiet sum.txt
	fi
	echo "$alg" >> mounted.txt
	umount /mnt/lun
	iscsi_logout "$IQN"
	log "logged in and mounted with $alg"
	n=$((n + 1))
done
# The Kubernetes plugin passes the Secret's value ("...\n") to iscsiadm.
node -o update -n node.session.auth.chap_algs -v MD5
node -o update -n node.session.auth.password -v "$CHAP_SECRET_NL"
# What iscsiadm stored: the value line, then an empty line from the newline.
grep -A1 '^node.session.auth.password = ' /etc/iscsi/nodes/"$IQN"/*/default | tail -n 1 | od -c | head -n 1 > k8s-record.txt
iscsi_login "$IQN"
echo ok > k8s-newline-login.txt
iscsi_logout "$IQN"
log "logged in with the Kubernetes-style secret"
rc=0
node -o update -n node.session.auth.password -v "$CHAP_WRONG"
iscsi_login "$IQN" > wrong.txt 2>&1 || rc=$?
echo "$rc" > wrong-rc.txt
node -o update -n node.session.auth.password -v "$CHAP_SECRET"
node -o update -n node.session.auth.password_in -v "$CHAP_WRONG"
rc=0
iscsi_login "$IQN" > wrong-mutual.txt 2>&1 || rc=$?
echo "$rc" > wrong-mutual-rc.txt
iscsid_stop
log "done"
`

// TestKernelCHAP: the Linux initiator logs in with each CHAP algorithm
// (MD5, SHA1, SHA256, SHA3-256 in node.session.auth.chap_algs) and mutual
// CHAP, after CHAP-protected discovery, and mounts the LUN each time; the
// daemon reads its secrets from a Kubernetes Secret directory whose values
// end in a newline (echo value | base64). A wrong secret and a wrong
// mutual secret fail. One guest boot.
func TestKernelCHAP(t *testing.T) {
	if p := os.Getenv(kernelPeerEnv); p != "" && p != "ours" {
		t.Skipf("%s=%s: the CHAP test runs against our daemon only", kernelPeerEnv, p)
	}
	g, _ := kernelGuest(t)
	secrets := t.TempDir()
	for k, v := range map[string]string{
		"node.session.auth.username":          chapUser,
		"node.session.auth.password":          chapSecret,
		"node.session.auth.username_in":       chapTargetUser,
		"node.session.auth.password_in":       chapTargetSecret,
		"discovery.sendtargets.auth.username": chapDiscUser,
		"discovery.sendtargets.auth.password": chapDiscSecret,
	} {
		// As mounted from a Secret made with `echo value | base64`.
		if err := os.WriteFile(filepath.Join(secrets, k), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	img := filepath.Join(t.TempDir(), "lun0.img")
	tg := harness.StartTarget(t, b, dir, harness.TargetOptions{
		IQN:  "iqn.2026-11.test:kernel-chap",
		LUNs: []string{fmt.Sprintf("%s,size=%dMiB", img, kernelLUNSize>>20)},
		Extra: []string{"--advertise", guest.DefaultPortal, "--chap-secret-dir", secrets,
			"--allow-initiator", guest.DefaultInitiatorName},
	})
	hp := harness.OursPeer(tg, map[harness.LUNKind]int{harness.KindPlain: 0})
	peer := &kernelPeer{Peer: hp, LU: hp.LUs[harness.KindPlain], Advertises: true}
	jobDir := kernelJobDir(t)
	kernelKeepTargetLog(t, peer, jobDir)
	settings := append(guest.MutualCHAP(chapUser, chapSecret, chapTargetUser, chapTargetSecret),
		guest.DiscoveryCHAP(chapDiscUser, chapDiscSecret)...)
	res := kernelRun(t, g, guest.JobSpec{
		Script:    kernelCHAPScript,
		Forwards:  kernelForwards(peer),
		Initiator: guest.Initiator{Settings: append(guest.ReplacementTimeout(20), settings...)},
		Env: kernelEnv(peer, "CHAP_SECRET", chapSecret, "CHAP_SECRET_NL", chapSecret+"\n",
			"CHAP_WRONG", chapWrongSecret),
		Dir:     jobDir,
		Timeout: 6 * time.Minute,
	})
	t.Logf("job timeline:\n%s", res.Stdout)
	if res.ExitCode != 0 {
		t.Fatalf("guest job exit code %d, want 0; stderr:\n%s", res.ExitCode, kernelTail(res.Stderr, 30))
	}
	kernelCheckDiscovery(t, peer, res)
	kernelCheckDmesg(t, res)
	mounted, _ := res.File("mounted.txt")
	if got := strings.Fields(string(mounted)); strings.Join(got, ",") != "MD5,SHA1,SHA256,SHA3-256" {
		t.Errorf("mounted with %v, want MD5, SHA1, SHA256, SHA3-256", got)
	}
	if ms, err := res.File("login-ms.txt"); err == nil {
		t.Logf("iscsiadm --login wall time in the TCG guest (ms): %s", strings.Join(strings.Fields(string(ms)), " "))
	}
	if _, err := res.File("k8s-newline-login.txt"); err != nil {
		t.Error("login with the Kubernetes-style secret (trailing newline) failed")
	}
	if rec, err := res.File("k8s-record.txt"); err == nil {
		t.Logf("node record line after the password (od -c): %s", strings.TrimSpace(string(rec)))
	}
	for _, f := range []string{"wrong-rc.txt", "wrong-mutual-rc.txt"} {
		b, _ := res.File(f)
		if rc, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || rc == 0 {
			out, _ := res.File(strings.TrimSuffix(f, "-rc.txt") + ".txt")
			t.Errorf("%s: login exit code %q, want a failure; output:\n%s", f, b, out)
		}
	}
	log := tg.Log()
	// The target picked each algorithm the initiator asked for.
	for _, alg := range []string{"MD5", "SHA1", "SHA256", "SHA3-256"} {
		re := regexp.MustCompile(`CHAP authentication succeeded" algorithm=` + regexp.QuoteMeta(alg) + ` .*initiator="` + regexp.QuoteMeta(guest.DefaultInitiatorName))
		if !re.MatchString(log) {
			t.Errorf("daemon log has no CHAP success with %s", alg)
		}
	}
	if !strings.Contains(log, "wrong CHAP_R") || !strings.Contains(log, "status=0x0201") {
		t.Error("daemon log lacks the refused wrong-secret login")
	}
	if !strings.Contains(log, "removed surrounding whitespace") {
		t.Error("daemon did not report the trimmed Secret values")
	}
	chapNoLeak(t, "TestKernelCHAP", log)
}
