// Package k8s validates the Kubernetes manifests in deploy/kubernetes by
// strict decoding into the k8s.io/api types (unknown or duplicate fields
// fail) and by cross-checking the objects against each other and against
// the daemon's command line. It is a separate module so that the daemon's
// module does not depend on k8s.io/api; `make test` runs it. No cluster or
// network is needed.
package k8s

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const manifestDir = "../../deploy/kubernetes"

// objects are the decoded manifests, by kind.
type objects struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	secrets     map[string]*corev1.Secret
	pvcs        map[string]*corev1.PersistentVolumeClaim
}

// splitDocs splits a YAML stream at "---" lines.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// decodeStrict decodes one document into the type its apiVersion and kind
// name; anything outside the kinds the deployment uses is an error.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/Deployment":
		obj = new(appsv1.Deployment)
	case "v1/Service":
		obj = new(corev1.Service)
	case "v1/Secret":
		obj = new(corev1.Secret)
	case "v1/PersistentVolumeClaim":
		obj = new(corev1.PersistentVolumeClaim)
	default:
		return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

var (
	loadOnce sync.Once
	loaded   *objects
	loadErr  error
)

func load(t *testing.T) *objects {
	t.Helper()
	loadOnce.Do(func() { loaded, loadErr = loadDir(manifestDir) })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return loaded
}

func loadDir(dir string) (*objects, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no manifests in %s: %v", dir, err)
	}
	o := &objects{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		secrets: map[string]*corev1.Secret{}, pvcs: map[string]*corev1.PersistentVolumeClaim{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range splitDocs(b) {
			obj, err := decodeStrict(doc)
			if err != nil {
				return nil, fmt.Errorf("%s document %d: %w", filepath.Base(f), i+1, err)
			}
			var name string
			var dup bool
			switch v := obj.(type) {
			case *appsv1.Deployment:
				name, dup = v.Name, o.deployments[v.Name] != nil
				o.deployments[v.Name] = v
			case *corev1.Service:
				name, dup = v.Name, o.services[v.Name] != nil
				o.services[v.Name] = v
			case *corev1.Secret:
				name, dup = v.Name, o.secrets[v.Name] != nil
				o.secrets[v.Name] = v
			case *corev1.PersistentVolumeClaim:
				name, dup = v.Name, o.pvcs[v.Name] != nil
				o.pvcs[v.Name] = v
			}
			if dup {
				return nil, fmt.Errorf("%s: %T %q defined twice", filepath.Base(f), obj, name)
			}
			if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
				return nil, fmt.Errorf("%s: name %q: %v", filepath.Base(f), name, errs)
			}
		}
	}
	return o, nil
}

func TestStrictDecodingRejectsMistakes(t *testing.T) {
	good := `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i}]
      volumes:
        - name: v
          iscsi: {targetPortal: "10.0.0.1:3260", iqn: "iqn.2016-04.a:b", lun: 0, chapAuthSession: true}
`
	if _, err := decodeStrict([]byte(good)); err != nil {
		t.Fatalf("a valid Deployment was refused: %v", err)
	}
	for name, bad := range map[string]string{
		"misspelled field":     strings.Replace(good, "chapAuthSession", "chapAuthSesion", 1),
		"old API group":        strings.Replace(good, "apps/v1", "extensions/v1beta1", 1),
		"wrong type":           strings.Replace(good, "lun: 0", "lun: zero", 1),
		"duplicate key":        strings.Replace(good, "lun: 0", "lun: 0, lun: 1", 1),
		"field at wrong level": strings.Replace(good, "  selector:", "  replica: 1\n  selector:", 1),
	} {
		if _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestManifestsDecode(t *testing.T) {
	o := load(t)
	for _, d := range []string{"iscsi-target", "mysql-server"} {
		if o.deployments[d] == nil {
			t.Errorf("Deployment %q missing", d)
		}
	}
	for _, s := range []string{"iscsi-target", "mysql"} {
		if o.services[s] == nil {
			t.Errorf("Service %q missing", s)
		}
	}
	if o.secrets["chap-secret"] == nil || o.pvcs["iscsi-target-data"] == nil {
		t.Error("Secret chap-secret or PersistentVolumeClaim iscsi-target-data missing")
	}
}

// args returns the container's --name=value arguments.
func args(c *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, a := range c.Args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			m[k] = v
		}
	}
	return m
}

func container(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container %q", d.Name, name)
	return nil
}

func volume(t *testing.T, d *appsv1.Deployment, name string) *corev1.Volume {
	t.Helper()
	for i := range d.Spec.Template.Spec.Volumes {
		if v := &d.Spec.Template.Spec.Volumes[i]; v.Name == name {
			return v
		}
	}
	t.Fatalf("Deployment %s has no volume %q", d.Name, name)
	return nil
}

func TestDeploymentsAreSingleInstance(t *testing.T) {
	o := load(t)
	for name, d := range o.deployments {
		sel, tmpl := d.Spec.Selector, d.Spec.Template.Labels
		if sel == nil || len(sel.MatchLabels) == 0 {
			t.Errorf("%s: no selector", name)
			continue
		}
		for k, v := range sel.MatchLabels {
			if tmpl[k] != v {
				t.Errorf("%s: selector %s=%s does not match the template labels %v", name, k, v, tmpl)
			}
		}
		// Both hold a single-writer volume: one pod, never two at once.
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("%s: replicas %v, want 1", name, d.Spec.Replicas)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: strategy %q, want Recreate", name, d.Spec.Strategy.Type)
		}
	}
}

func TestMySQLVolume(t *testing.T) {
	o := load(t)
	mysql, tgt := o.deployments["mysql-server"], o.deployments["iscsi-target"]
	v := volume(t, mysql, "iscsivol")
	is := v.ISCSI
	if is == nil {
		t.Fatal("volume iscsivol is not an iscsi volume")
	}
	if !is.DiscoveryCHAPAuth || !is.SessionCHAPAuth || is.ReadOnly || is.FSType != "ext4" || is.Lun != 0 {
		t.Errorf("iscsi volume: chapAuthDiscovery %v chapAuthSession %v readOnly %v fsType %q lun %d; want true true false ext4 0",
			is.DiscoveryCHAPAuth, is.SessionCHAPAuth, is.ReadOnly, is.FSType, is.Lun)
	}
	ta := args(container(t, tgt, "iscsi-target"))
	if is.IQN != ta["iqn"] {
		t.Errorf("volume iqn %q, target serves %q", is.IQN, ta["iqn"])
	}
	// The portal is the target Service's fixed ClusterIP and iSCSI port,
	// and what SendTargets advertises.
	svc := o.services["iscsi-target"]
	host, port, err := net.SplitHostPort(is.TargetPortal)
	if err != nil {
		t.Fatalf("targetPortal %q: %v", is.TargetPortal, err)
	}
	if host != svc.Spec.ClusterIP || net.ParseIP(host) == nil {
		t.Errorf("targetPortal host %q, Service clusterIP %q", host, svc.Spec.ClusterIP)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
		t.Errorf("targetPortal port %s is not a port of Service iscsi-target", port)
	}
	if ta["advertise"] != is.TargetPortal {
		t.Errorf("--advertise %q, volume targetPortal %q", ta["advertise"], is.TargetPortal)
	}
	if is.SecretRef == nil || o.secrets[is.SecretRef.Name] == nil {
		t.Fatalf("secretRef %v does not name a Secret in the manifests", is.SecretRef)
	}
	m := container(t, mysql, "mysql")
	if len(m.VolumeMounts) != 1 || m.VolumeMounts[0].MountPath != "/var/lib/mysql" || m.VolumeMounts[0].SubPath == "" {
		t.Errorf("mysql mounts %+v: want /var/lib/mysql from a subPath of the volume", m.VolumeMounts)
	}
	for _, e := range m.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			s := o.secrets[ref.Name]
			if s == nil {
				t.Errorf("env %s: Secret %q missing", e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("env %s: Secret %q has no key %q", e.Name, ref.Name, ref.Key)
			}
		}
	}
}

func TestCHAPSecret(t *testing.T) {
	o := load(t)
	s := o.secrets["chap-secret"]
	if s.Type != "kubernetes.io/iscsi-chap" {
		t.Errorf("type %q, want kubernetes.io/iscsi-chap", s.Type)
	}
	// The keys the kubelet's iscsi plugin reads for chapAuthSession and
	// chapAuthDiscovery; the target reads the same through --chap-secret-dir.
	for _, k := range []string{"node.session.auth.username", "node.session.auth.password",
		"discovery.sendtargets.auth.username", "discovery.sendtargets.auth.password"} {
		v, ok := s.StringData[k]
		if !ok {
			t.Errorf("key %s missing", k)
			continue
		}
		if v != strings.TrimSpace(v) || v == "" {
			t.Errorf("key %s: value %q is empty or has surrounding whitespace", k, v)
		}
		if strings.HasSuffix(k, "password") && len(v) < 12 {
			t.Errorf("key %s: %d bytes; CHAP secrets need at least 12", k, len(v))
		}
	}
	if len(s.Data) != 0 {
		t.Error("use stringData (base64 data made with echo carries a newline)")
	}
}

func TestTargetDeployment(t *testing.T) {
	o := load(t)
	d := o.deployments["iscsi-target"]
	c := container(t, d, "iscsi-target")
	a := args(c)
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q: want serve first", c.Args)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for flag, name := range map[string]string{"listen": "iscsi", "metrics-listen": "metrics"} {
		_, port, err := net.SplitHostPort(a[flag])
		if err != nil || port != strconv.Itoa(int(ports[name])) {
			t.Errorf("--%s %q does not listen on container port %s (%d)", flag, a[flag], name, ports[name])
		}
	}
	for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("probe for %s: %+v", path, probe)
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	data := volume(t, d, "data")
	if data.PersistentVolumeClaim == nil || o.pvcs[data.PersistentVolumeClaim.ClaimName] == nil {
		t.Errorf("volume data: %+v is not a claim from the manifests", data.VolumeSource)
	}
	lunPath, _, _ := strings.Cut(a["lun"], ",")
	if !strings.HasPrefix(lunPath, mounts["data"].MountPath+"/") || a["state-dir"] != mounts["data"].MountPath {
		t.Errorf("--lun %q and --state-dir %q must be on the claim mounted at %q", a["lun"], a["state-dir"], mounts["data"].MountPath)
	}
	chap := volume(t, d, "chap")
	if chap.Secret == nil || chap.Secret.SecretName != "chap-secret" || a["chap-secret-dir"] != mounts["chap"].MountPath {
		t.Errorf("--chap-secret-dir %q must be the chap-secret volume mounted at %q", a["chap-secret-dir"], mounts["chap"].MountPath)
	}
	if a["access"] != "single-writer" {
		t.Errorf("--access %q, want single-writer", a["access"])
	}
	sc, psc := c.SecurityContext, d.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.FSGroup == nil {
		t.Error("the pod must run as non-root with an fsGroup for the claim")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, all capabilities dropped", sc)
	}
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < 35 {
		t.Errorf("terminationGracePeriodSeconds %v: the target needs its 30 s shutdown timeout and a flush", g)
	}
}

func TestServicesSelectPods(t *testing.T) {
	o := load(t)
	for name, s := range o.services {
		var match *appsv1.Deployment
		for _, d := range o.deployments {
			ok := len(s.Spec.Selector) > 0
			for k, v := range s.Spec.Selector {
				ok = ok && d.Spec.Template.Labels[k] == v
			}
			if ok {
				match = d
			}
		}
		if match == nil {
			t.Errorf("Service %s selects no Deployment's pods", name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.String() == "" {
				continue
			}
			found := false
			for _, c := range match.Spec.Template.Spec.Containers {
				for _, cp := range c.Ports {
					found = found || cp.Name == p.TargetPort.String() || strconv.Itoa(int(cp.ContainerPort)) == p.TargetPort.String()
				}
			}
			if !found {
				t.Errorf("Service %s port %d: targetPort %s is no container port of %s", name, p.Port, p.TargetPort.String(), match.Name)
			}
		}
	}
	if m := o.services["mysql"]; m.Spec.Type != corev1.ServiceTypeNodePort || m.Spec.Ports[0].NodePort != 32306 {
		t.Errorf("mysql Service: type %s nodePort %d; the clients use NodePort 32306", m.Spec.Type, m.Spec.Ports[0].NodePort)
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildDaemon builds the daemon from the repository once per test binary.
func buildDaemon(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			buildErr = err
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "iscsi-target-k8s-test")
		if buildErr != nil {
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(buildDir, "iscsi-target"), "./cmd/iscsi-target")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "iscsi-target")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// awaitedFlags are flags the manifests use whose implementation is on its
// way on another branch; the test fails once they exist, so the entry
// cannot outlive its reason.
var awaitedFlags = map[string]string{}

// TestTargetArgsAreServeFlags builds the daemon from the repository and
// checks that every flag the target Deployment passes exists.
func TestTargetArgsAreServeFlags(t *testing.T) {
	bin := buildDaemon(t)
	help, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, help)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllSubmatch(help, -1) {
		flags = append(flags, string(m[1]))
	}
	if !bytes.Contains(help, []byte("--lun")) {
		t.Fatalf("serve --help lists no --lun:\n%s", help)
	}
	c := container(t, load(t).deployments["iscsi-target"], "iscsi-target")
	for k := range args(c) {
		if slices.Contains(flags, k) {
			continue
		}
		if issue, ok := awaitedFlags[k]; ok {
			t.Logf("--%s is not a serve flag yet: it arrives with %s (remove it from awaitedFlags then)", k, issue)
			continue
		}
		t.Errorf("--%s is not a flag of iscsi-target serve", k)
	}
	for k := range awaitedFlags {
		if slices.Contains(flags, k) {
			t.Errorf("--%s exists now: remove it from awaitedFlags", k)
		}
	}
}

// TestTargetStartsWithManifestArgs runs the daemon with the target
// container's arguments, the claim and the chap-secret Secret laid out as
// the kubelet would mount them (in temporary directories), and the
// listeners moved to loopback: it must become ready on the readiness
// probe's path, serve the LUN the MySQL volume names, and stop cleanly.
func TestTargetStartsWithManifestArgs(t *testing.T) {
	o := load(t)
	d := o.deployments["iscsi-target"]
	c := container(t, d, "iscsi-target")
	bin := buildDaemon(t)
	tmp := t.TempDir()

	// Volume mounts become directories; the Secret becomes one file per key.
	paths := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(tmp, m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		paths[m.MountPath] = dir
		if v := volume(t, d, m.Name); v.Secret != nil {
			for k, val := range o.secrets[v.Secret.SecretName].StringData {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(val), 0o400); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	portal, metricsAddr := free(), free()
	var argv []string
	for _, a := range c.Args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--listen":
			v = portal
		case "--metrics-listen":
			v = metricsAddr
		}
		for mount, dir := range paths {
			v = strings.ReplaceAll(v, mount, dir)
		}
		if v != "" {
			a = k + "=" + v
		}
		argv = append(argv, a)
	}
	cmd := exec.Command(bin, argv...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon %q log:\n%s", argv, log.String())
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	probe := "http://" + metricsAddr + c.ReadinessProbe.HTTPGet.Path
	ready := false
	for i := 0; i < 300 && !ready; i++ {
		select {
		case err := <-done:
			t.Fatalf("daemon exited: %v", err)
		default:
		}
		if resp, err := client.Get(probe); err == nil {
			ready = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
		if !ready {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !ready {
		t.Fatalf("%s never answered 200", probe)
	}
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	is := volume(t, o.deployments["mysql-server"], "iscsivol").ISCSI
	want := fmt.Sprintf(`iscsi_target_lun_capacity_bytes{lun="%d",target="%s"} 4.294967296e+09`, is.Lun, is.IQN)
	if !bytes.Contains(body, []byte(want)) {
		t.Errorf("/metrics lacks %s", want)
	}
	// The Secret took effect: a login without CHAP is refused with
	// authentication failure (status 0x0201).
	if class, detail := loginWithoutCHAP(t, portal, is.IQN); class != 2 || detail != 1 {
		t.Errorf("login without CHAP: status %02x%02x, want 0201", class, detail)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// loginWithoutCHAP sends one Login Request (security stage, AuthMethod=None,
// RFC 7143 §11.12) and returns the response's status class and detail.
func loginWithoutCHAP(t *testing.T, portal, iqn string) (byte, byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", portal, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	text := "InitiatorName=iqn.2026-11.test:k8s-manifest\x00SessionType=Normal\x00TargetName=" + iqn + "\x00AuthMethod=None\x00"
	data := []byte(text)
	for len(data)%4 != 0 {
		data = append(data, 0)
	}
	bhs := make([]byte, 48)
	bhs[0] = 0x43 // immediate Login Request
	bhs[1] = 0x81 // T=1, CSG=0 (security), NSG=1
	bhs[5], bhs[6], bhs[7] = 0, byte(len(text)>>8), byte(len(text))
	copy(bhs[8:14], []byte{0x80, 0, 0, 0, 0, 1}) // ISID
	bhs[19] = 1                                  // initiator task tag
	if _, err := nc.Write(append(bhs, data...)); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 48)
	if _, err := io.ReadFull(nc, resp); err != nil {
		t.Fatalf("login response: %v", err)
	}
	if resp[0]&0x3f != 0x23 {
		t.Fatalf("answer opcode %#x, want a Login Response", resp[0]&0x3f)
	}
	return resp[36], resp[37]
}
