//go:build e2e

package e2e

// libiscsi tests: the userspace initiator tools of Debian's libiscsi-bin
// (iscsi-ls, iscsi-inq, iscsi-readcapacity16, iscsi-test-cu) and qemu-img's
// libiscsi block driver against our daemon, started with harness.StartTarget.
//
//	go test -tags e2e -run 'TestLibiscsi' -v ./test/e2e/
//
// Missing tools skip the tests, or fail them when CI=true.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iscsi-target/iscsi-target/test/conformance"
	"github.com/iscsi-target/iscsi-target/test/e2e/harness"
)

// libiscsiInitiator is the one initiator name the tool tests use, so they
// also work in the default single-writer access mode.
const libiscsiInitiator = "iqn.2026-11.test:e2e-libiscsi"

// libiscsiStart builds (once per test binary) and starts our daemon with
// the given --lun specs and extra flags.
func libiscsiStart(t *testing.T, iqn string, luns []string, extra ...string) *harness.Target {
	t.Helper()
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	return harness.StartTarget(t, b, dir, harness.TargetOptions{IQN: iqn, LUNs: luns, Extra: extra})
}

// libiscsiRun runs a tool under a timeout and returns its stdout; a
// failure is fatal and shows both streams.
func libiscsiRun(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	harness.Bound(cmd, 5*time.Second)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v after %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err,
			time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	}
	return stdout.String()
}

// libiscsiField returns the value of the first "Key:value" line.
func libiscsiField(t *testing.T, out, key string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:\s*(.*?)\s*$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", key, out)
	}
	return m[1]
}

// lsSize is the size iscsi-ls -s prints for a LUN: READ CAPACITY(10) block
// length times the last LBA (one block short of the capacity), divided by
// 1024 while above 1024, with a k/M/G/T suffix.
func lsSize(size int64, bs int64) string {
	n := bs * (size/bs - 1)
	suffix := []string{"", "k", "M", "G", "T"}
	i := 0
	for ; i < 4 && n > 1024; i++ {
		n /= 1024
	}
	return strconv.FormatInt(n, 10) + suffix[i]
}

type libiscsiLUN struct {
	size   int64
	bs     int64
	serial string
}

// TestLibiscsiTools checks discovery, INQUIRY (standard and VPD) and READ
// CAPACITY(16) for a 512-byte and a 4096-byte LUN.
func TestLibiscsiTools(t *testing.T) {
	harness.RequireTools(t, "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
	const iqn = "iqn.2026-11.test:e2e-tools"
	luns := []libiscsiLUN{
		{64 << 20, 512, "E2E-SER-512"},
		{96 << 20, 4096, "E2E-SER-4K"},
	}
	dir := t.TempDir()
	var specs []string
	for i, l := range luns {
		specs = append(specs, fmt.Sprintf("%s,size=%dMiB,blocksize=%d,serial=%s",
			filepath.Join(dir, fmt.Sprintf("lun%d.img", i)), l.size>>20, l.bs, l.serial))
	}
	tg := libiscsiStart(t, iqn, specs)
	base := "iscsi://" + tg.Portal

	t.Run("ls", func(t *testing.T) {
		out := libiscsiRun(t, 30*time.Second, "iscsi-ls", "-i", libiscsiInitiator, "-s", base)
		if !strings.Contains(out, "Target:"+iqn+" ") {
			t.Errorf("iscsi-ls does not list %s:\n%s", iqn, out)
		}
		for i, l := range luns {
			want := fmt.Sprintf("Lun:%-4d Type:DIRECT_ACCESS (Size:%s)", i, lsSize(l.size, l.bs))
			if !strings.Contains(out, want) {
				t.Errorf("iscsi-ls: want line %q in:\n%s", want, out)
			}
		}
	})

	for i, l := range luns {
		url := fmt.Sprintf("%s/%s/%d", base, iqn, i)
		t.Run(fmt.Sprintf("lun%d-bs%d", i, l.bs), func(t *testing.T) {
			std := libiscsiRun(t, 30*time.Second, "iscsi-inq", "-i", libiscsiInitiator, url)
			for key, want := range map[string]string{
				"Peripheral Qualifier":   "CONNECTED",
				"Peripheral Device Type": "DIRECT_ACCESS",
				"Removable":              "0",
			} {
				if got := libiscsiField(t, std, key); got != want {
					t.Errorf("INQUIRY %s = %q, want %q", key, got, want)
				}
			}
			for _, key := range []string{"Vendor", "Product", "Revision"} {
				if libiscsiField(t, std, key) == "" {
					t.Errorf("INQUIRY %s is empty", key)
				}
			}

			pages := libiscsiRun(t, 30*time.Second, "iscsi-inq", "-i", libiscsiInitiator, "-e", "1", "-c", "0", url)
			for _, p := range []string{"Page:0x00 SUPPORTED_VPD_PAGES", "Page:0x80 UNIT_SERIAL_NUMBER", "Page:0x83 DEVICE_IDENTIFICATION"} {
				if !strings.Contains(pages, p) {
					t.Errorf("VPD 0x00 lacks %q:\n%s", p, pages)
				}
			}
			sn := libiscsiRun(t, 30*time.Second, "iscsi-inq", "-i", libiscsiInitiator, "-e", "1", "-c", "128", url)
			if got := strings.Trim(libiscsiField(t, sn, "Unit Serial Number"), "[] "); got != l.serial {
				t.Errorf("VPD 0x80 serial = %q, want %q", got, l.serial)
			}
			id := libiscsiRun(t, 30*time.Second, "iscsi-inq", "-i", libiscsiInitiator, "-e", "1", "-c", "131", url)
			if !strings.Contains(id, "DEVICE DESIGNATOR #0") || !strings.Contains(id, "Association:(0) LOGICAL_UNIT") {
				t.Errorf("VPD 0x83 has no logical-unit designator:\n%s", id)
			}

			rc := libiscsiRun(t, 30*time.Second, "iscsi-readcapacity16", "-i", libiscsiInitiator, url)
			checks := map[string]string{
				"RETURNED LOGICAL BLOCK ADDRESS": strconv.FormatInt(l.size/l.bs-1, 10),
				"LOGICAL BLOCK LENGTH IN BYTES":  strconv.FormatInt(l.bs, 10),
				"Total size":                     strconv.FormatInt(l.size, 10),
			}
			for key, want := range checks {
				if got := libiscsiField(t, rc, key); got != want {
					t.Errorf("READ CAPACITY(16) %s = %s, want %s\n%s", key, got, want, rc)
				}
			}
		})
	}
}

// libiscsiImage writes size random bytes to path and returns their SHA-256.
func libiscsiImage(t *testing.T, path string, size int64, seed uint64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'e', '2', 'e'})
	if _, err := io.CopyN(io.MultiWriter(f, h), r, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func libiscsiFileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestLibiscsiQemuImgRoundTrip copies a random 64 MiB image onto a LUN with
// qemu-img's libiscsi driver and back, and compares SHA-256 sums: 512- and
// 4096-byte blocks, and with header digests (CRC32C) negotiated.
func TestLibiscsiQemuImgRoundTrip(t *testing.T) {
	harness.RequireTools(t, "qemu-img")
	const size = 64 << 20
	const iqn = "iqn.2026-11.test:e2e-qemu"
	dir := t.TempDir()
	cases := []struct {
		name   string
		lun    int
		digest string
	}{
		{"bs512", 0, ""},
		{"bs4096", 1, ""},
		{"bs512-crc32c", 2, "crc32c"},
	}
	specs := []string{
		filepath.Join(dir, "lun0.img") + ",size=64MiB",
		filepath.Join(dir, "lun1.img") + ",size=64MiB,blocksize=4096",
		filepath.Join(dir, "lun2.img") + ",size=64MiB",
	}
	tg := libiscsiStart(t, iqn, specs)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s",
				tg.Portal, iqn, c.lun, libiscsiInitiator)
			if c.digest != "" {
				opts += ",header-digest=" + c.digest
				libiscsiCheckDigest(t, opts)
			}
			src := filepath.Join(t.TempDir(), "src.img")
			back := filepath.Join(t.TempDir(), "back.img")
			want := libiscsiImage(t, src, size, uint64(i+1))
			start := time.Now()
			libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "--target-image-opts", src, opts)
			up := time.Since(start)
			start = time.Now()
			libiscsiRun(t, 3*time.Minute, "qemu-img", "convert", "--image-opts", opts, "-O", "raw", back)
			down := time.Since(start)
			if got := libiscsiFileSum(t, back); got != want {
				t.Fatalf("read-back image differs: sha256 %x, wrote %x", got, want)
			}
			st, err := os.Stat(back)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != size {
				t.Fatalf("read-back size %d, want %d", st.Size(), size)
			}
			t.Logf("64 MiB to the LUN in %v, back in %v", up.Round(time.Millisecond), down.Round(time.Millisecond))
		})
	}
}

// libiscsiCheckDigest runs qemu-img info under strace and requires the
// target's Login Response to accept HeaderDigest=CRC32C, so the digest
// round trip really runs with digests.
func libiscsiCheckDigest(t *testing.T, opts string) {
	t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		harness.Unavailable(t, "strace is needed to verify the negotiated HeaderDigest")
	}
	trace := filepath.Join(t.TempDir(), "strace.txt")
	libiscsiRun(t, time.Minute, "strace", "-f", "-qq", "-e", "trace=read,recvfrom,recvmsg", "-s", "8192",
		"-o", trace, "qemu-img", "info", "--image-opts", opts)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	got := regexp.MustCompile(`HeaderDigest=[A-Za-z0-9,]+`).FindAllString(string(b), -1)
	if len(got) == 0 || got[0] != "HeaderDigest=CRC32C" {
		t.Fatalf("target answered %v to HeaderDigest=CRC32C, want HeaderDigest=CRC32C", got)
	}
}

// TestLibiscsiConformance runs every libiscsi suite (family ALL, 51
// suites), each in its own iscsi-test-cu process against one daemon
// (restarted only if it crashes), each on the LUN kind that gives it full
// coverage (plain, ro, removable, thin, thin with 4096-byte blocks), and
// compares the outcome with the checked-in floor
// test/conformance/testdata/expected-ours.json: any failure, crash, skip
// outside the table's allowed ones, or genuine-pass regression fails the
// suite's subtest.
func TestLibiscsiConformance(t *testing.T) {
	harness.RequireTools(t, "iscsi-test-cu", "iscsi-inq")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cat, err := conformance.LoadCatalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := conformance.LoadExpected(filepath.Join("..", "conformance", "testdata", "expected-ours.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, dir, err := harness.SharedBuilder()
	if err != nil {
		t.Fatalf("build dir: %v", err)
	}
	p := harness.StartOurs(t, b, dir, nil)
	outDir := t.TempDir()
	if d := os.Getenv("E2E_ARTIFACTS"); d != "" {
		outDir = filepath.Join(d, "libiscsi-conformance")
	}
	opts := conformance.Options{
		Catalog:  cat,
		Suites:   cat.Suites, // every suite, in --list order (the order the table was measured in)
		OutDir:   outDir,
		Progress: t.Logf,
	}
	res, err := conformance.RunPeer(ctx, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep := &conformance.Report{Generated: time.Now().UTC(), Method: conformance.MethodOf(opts),
		Targets: []*conformance.TargetResult{res}}
	var tbl strings.Builder
	_ = rep.WriteText(&tbl)
	t.Logf("libiscsi conformance, our daemon:\n%s", tbl.String())

	if len(exp.Suites) != len(cat.Suites) {
		t.Errorf("the expected table lists %d suites, iscsi-test-cu has %d", len(exp.Suites), len(cat.Suites))
	}
	problems, improvements := conformance.Compare(exp, res)
	bySuite := map[string][]string{}
	for _, pr := range problems {
		bySuite[pr.Suite] = append(bySuite[pr.Suite], pr.Detail)
	}
	for _, s := range res.Suites {
		t.Run(s.Suite, func(t *testing.T) {
			for _, d := range bySuite[s.Suite] {
				t.Error(d)
			}
			if s.ParseWarning != "" {
				t.Errorf("parse: %s", s.ParseWarning)
			}
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(outDir, s.Suite+".out")); err == nil {
					t.Logf("iscsi-test-cu %s output (%s):\n%s", s.Suite, s.URL, libiscsiTail(string(b), 120))
				}
			}
		})
		delete(bySuite, s.Suite)
	}
	for suite, ds := range bySuite { // expected but not run
		t.Errorf("%s: %s", suite, strings.Join(ds, "; "))
	}
	for _, m := range improvements {
		t.Logf("improvement: %s", m)
	}
}

func libiscsiTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
