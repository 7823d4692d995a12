package guest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readCpio parses a newc archive into name -> (mode, data).
func readCpio(t *testing.T, b []byte) map[string]cpioEntry {
	t.Helper()
	out := map[string]cpioEntry{}
	for off := 0; ; {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("bad field %d at %d: %v", i, off, err)
			}
			return int(v)
		}
		mode, size, rmaj, rmin, nameSize := field(1), field(6), field(9), field(10), field(11)
		nameEnd := off + 110 + nameSize
		name := string(b[off+110 : nameEnd-1])
		if b[nameEnd-1] != 0 {
			t.Fatalf("name %q not NUL terminated", name)
		}
		dataStart := (nameEnd + 3) &^ 3
		dataEnd := dataStart + size
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = cpioEntry{mode: mode, data: b[dataStart:dataEnd], rdev: [2]int{rmaj, rmin}}
		off = (dataEnd + 3) &^ 3
	}
}

type cpioEntry struct {
	mode int
	data []byte
	rdev [2]int
}

func TestCpioWriter(t *testing.T) {
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	w.dir("bin")
	w.file("bin/a", 0o755, []byte("hello"))
	w.file("odd", 0o644, []byte("123"))
	w.symlink("bin/sh", "busybox")
	w.charDev("dev/console", 0o600, 5, 1)
	w.trailer()
	if w.err != nil {
		t.Fatal(w.err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", buf.Len())
	}
	got := readCpio(t, buf.Bytes())
	for _, tc := range []struct {
		name string
		mode int
		data string
	}{
		{"bin", modeDir | 0o755, ""},
		{"bin/a", modeReg | 0o755, "hello"},
		{"odd", modeReg | 0o644, "123"},
		{"bin/sh", modeLink | 0o777, "busybox"},
		{"dev/console", modeChr | 0o600, ""},
	} {
		e, ok := got[tc.name]
		if !ok {
			t.Errorf("%s missing", tc.name)
			continue
		}
		if e.mode != tc.mode || string(e.data) != tc.data {
			t.Errorf("%s: got mode %o data %q, want %o %q", tc.name, e.mode, e.data, tc.mode, tc.data)
		}
	}
	if got["dev/console"].rdev != [2]int{5, 1} {
		t.Errorf("dev/console rdev %v, want 5:1", got["dev/console"].rdev)
	}
	// An independent reader, when there is one.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -it: %v\n%s", err, out)
		}
		if got, want := strings.Fields(string(out)), []string{"bin", "bin/a", "odd", "bin/sh", "dev/console"}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("cpio lists %v, want %v", got, want)
		}
	}
}

func TestOrderModules(t *testing.T) {
	dep := `kernel/drivers/scsi/iscsi_tcp.ko: kernel/drivers/scsi/libiscsi_tcp.ko kernel/drivers/scsi/libiscsi.ko kernel/drivers/scsi/scsi_transport_iscsi.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/libiscsi_tcp.ko: kernel/drivers/scsi/libiscsi.ko
kernel/drivers/scsi/libiscsi.ko: kernel/drivers/scsi/scsi_transport_iscsi.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_transport_iscsi.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
`
	deps, byName, err := parseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		want    []string
		builtin map[string]bool
		order   []string
		wantErr bool
	}{
		{
			name: "dependencies first",
			want: []string{"iscsi_tcp"},
			order: []string{"kernel/drivers/scsi/scsi_mod.ko", "kernel/drivers/scsi/scsi_transport_iscsi.ko",
				"kernel/drivers/scsi/libiscsi.ko", "kernel/drivers/scsi/libiscsi_tcp.ko", "kernel/drivers/scsi/iscsi_tcp.ko"},
		},
		{
			name:  "dash and underscore match, no duplicates",
			want:  []string{"crc32c_intel", "scsi_mod", "scsi-mod"},
			order: []string{"kernel/arch/x86/crypto/crc32c-intel.ko", "kernel/drivers/scsi/scsi_mod.ko"},
		},
		{name: "built-in is skipped", want: []string{"ext4"}, builtin: map[string]bool{"ext4": true}},
		{name: "missing module", want: []string{"nope"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := orderModules(deps, byName, tc.builtin, tc.want)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if strings.Join(got, " ") != strings.Join(tc.order, " ") {
				t.Errorf("got %v, want %v", got, tc.order)
			}
		})
	}
}

func TestStripModuleSignature(t *testing.T) {
	body := []byte("\x7fELF module body")
	sig := bytes.Repeat([]byte{0xAB}, 300)
	info := make([]byte, 12)
	info[2] = 2 // PKEY_ID_PKCS7
	binary.BigEndian.PutUint32(info[8:], uint32(len(sig)))
	signed := append(append(append(append([]byte{}, body...), sig...), info...), moduleSigMagic...)
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"signed", signed, body},
		{"unsigned", body, body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stripModuleSignature(tc.in); !bytes.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// A length pointing before the start leaves the module alone.
	bad := append(append([]byte("x"), info...), moduleSigMagic...)
	if got := stripModuleSignature(bad); !bytes.Equal(got, bad) {
		t.Errorf("bogus signature length: got %q, want input unchanged", got)
	}
}

func TestIscsidConf(t *testing.T) {
	base := []byte("# comment\niscsid.startup = /bin/systemctl start iscsid.socket\nnode.session.timeo.replacement_timeout = 120\n# node.conn[0].iscsi.HeaderDigest = None\nnode.startup = manual\n")
	got, err := IscsidConf(base, append(ReplacementTimeout(15), Digests("CRC32C", "CRC32C,None")...))
	if err != nil {
		t.Fatal(err)
	}
	active := map[string][]string{}
	for _, l := range strings.Split(string(got), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		active[strings.TrimSpace(k)] = append(active[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	for k, want := range map[string]string{
		"iscsid.startup":                         "/bin/true",
		"node.session.timeo.replacement_timeout": "15",
		"node.conn[0].iscsi.HeaderDigest":        "CRC32C",
		"node.conn[0].iscsi.DataDigest":          "CRC32C,None",
		"node.startup":                           "manual",
	} {
		if v := active[k]; len(v) != 1 || v[0] != want {
			t.Errorf("%s: active values %q, want exactly %q", k, v, want)
		}
	}
	for _, bad := range []string{"no equals sign", " = value", "key with space = v", "k = v\nx = y"} {
		if _, err := IscsidConf(base, []string{bad}); err == nil {
			t.Errorf("setting %q: no error", bad)
		}
	}
}

func TestNetdevArg(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fwds    []Forward
		relay   string
		want    string
		wantErr bool
	}{
		{
			name: "default portal, socat",
			fwds: []Forward{{Host: "127.0.0.1:3260"}},
			want: "user,id=n0,restrict=on,net=10.0.2.0/24,host=10.0.2.2,guestfwd=tcp:10.0.2.100:3260-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:3260",
		},
		{
			name:  "two portals, relay",
			fwds:  []Forward{{Host: "127.0.0.1:1"}, {Guest: "10.0.2.101:3260", Host: "127.0.0.1:2"}},
			relay: "/x/fwdrelay",
			want:  "user,id=n0,restrict=on,net=10.0.2.0/24,host=10.0.2.2,guestfwd=tcp:10.0.2.100:3260-cmd:/x/fwdrelay 127.0.0.1:1,guestfwd=tcp:10.0.2.101:3260-cmd:/x/fwdrelay 127.0.0.1:2",
		},
		{name: "no forwards", want: "user,id=n0,restrict=on,net=10.0.2.0/24,host=10.0.2.2"},
		{name: "duplicate", fwds: []Forward{{Host: "127.0.0.1:1"}, {Guest: DefaultPortal, Host: "127.0.0.1:2"}}, wantErr: true},
		{name: "second without guest address", fwds: []Forward{{Host: "127.0.0.1:1"}, {Host: "127.0.0.1:2"}}, wantErr: true},
		{name: "comma in host", fwds: []Forward{{Host: "127.0.0.1:1,x"}}, wantErr: true},
		{name: "bad host", fwds: []Forward{{Host: "localhost"}}, wantErr: true},
		{name: "relay with space", fwds: []Forward{{Host: "127.0.0.1:1"}}, relay: "/a b", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := netdevArg(tc.fwds, tc.relay)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestIOErrorLines(t *testing.T) {
	dmesg := `[    5.5] sd 0:0:0:0: [sda] Write cache: enabled, read cache: enabled, supports DPO and FUA
[    8.1]  connection1:0: detected conn error (1020)
[   68.5] session1: session recovery timed out after 60 secs
[   68.5] sd 0:0:0:0: rejecting I/O to offline device
[   68.5] I/O error, dev sda, sector 0 op 0x1:(WRITE) flags 0x800 phys_seg 0 prio class 2
[   70.0] EXT4-fs error (device sda): ext4_find_entry:1658: inode #2: comm ls: reading directory lblock 0
[   70.1] EXT4-fs (sda): mounted filesystem with ordered data mode
[   71.0] Buffer I/O error on dev sda, logical block 0, lost async page write
`
	got := IOErrorLines(dmesg)
	if len(got) != 4 {
		t.Errorf("got %d lines, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
	if IOErrorLines("[ 1.0] sd 0:0:0:0: [sda] Attached SCSI disk\n") != nil {
		t.Errorf("clean log reported errors")
	}
}

func TestShellHelpers(t *testing.T) {
	for _, s := range []string{"plain", "it's", "a b\tc", "$(x)", ""} {
		out, err := exec.Command("bash", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shellQuote(%q) round trip: %q, %v", s, out, err)
		}
	}
	for name, ok := range map[string]bool{"IQN": true, "_x1": true, "1X": false, "A-B": false, "": false} {
		if validEnvName(name) != ok {
			t.Errorf("validEnvName(%q) = %v", name, !ok)
		}
	}
	// lib.sh must parse, and its functions must exist.
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(shellLib)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lib.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"log", "mark", "host_signal", "iscsiadm", "iscsid_start", "iscsid_stop", "iscsi_discover",
		"iscsi_login", "iscsi_logout", "iscsi_disk", "iscsi_negotiated", "iscsi_session_report", "disk_report"} {
		if !strings.Contains(shellLib, "\n"+f+"() {") {
			t.Errorf("lib.sh has no function %s", f)
		}
	}
}

func TestKitManifest(t *testing.T) {
	dir := t.TempDir()
	for p, b := range map[string]string{"vmlinux": "kernel", "initramfs.cpio": "initrd", "root/sbin/iscsiadm": "a", "root/sbin/iscsid": "d"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("iscsiadm", filepath.Join(dir, "root/sbin/link")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKit(dir); err == nil {
		t.Fatal("kit without manifest loaded")
	}
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeManifest(dir, &kitManifest{Format: kitFormat, KernelRelease: "r", Files: files}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKit(dir); err != nil {
		t.Fatalf("fresh kit: %v", err)
	}
	for _, tc := range []struct {
		name   string
		damage func()
	}{
		{"same size, other content", func() { _ = os.WriteFile(filepath.Join(dir, "vmlinux"), []byte("KERNEL"), 0o644) }},
		{"truncated", func() { _ = os.WriteFile(filepath.Join(dir, "initramfs.cpio"), []byte("in"), 0o644) }},
		{"missing", func() { _ = os.Remove(filepath.Join(dir, "root/sbin/iscsid")) }},
		{"link changed", func() {
			_ = os.Remove(filepath.Join(dir, "root/sbin/link"))
			_ = os.Symlink("iscsid", filepath.Join(dir, "root/sbin/link"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snapshot := map[string][]byte{}
			for _, f := range files {
				if f.Link == "" && !f.Dir {
					snapshot[f.Path], _ = os.ReadFile(filepath.Join(dir, f.Path))
				}
			}
			tc.damage()
			if _, err := loadKit(dir); err == nil {
				t.Errorf("damaged kit loaded")
			}
			for p, b := range snapshot {
				_ = os.WriteFile(filepath.Join(dir, p), b, 0o644)
			}
			_ = os.Remove(filepath.Join(dir, "root/sbin/link"))
			_ = os.Symlink("iscsiadm", filepath.Join(dir, "root/sbin/link"))
			if _, err := loadKit(dir); err != nil {
				t.Fatalf("restored kit: %v", err)
			}
		})
	}
}

func TestLockFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, p); err == nil {
		t.Fatal("second lock succeeded while the first is held")
	}
	unlock()
	unlock2, err := lockFile(context.Background(), p)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// TestFwdRelay runs fwdrelay the way slirp does (stdin is one end of a
// TCP connection) against a target that comes up only after the relay
// started, and checks bytes flow both ways.
func TestFwdRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tools, err := BuildTools(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The target's port, reserved and released: the relay must retry.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := tl.Addr().String()
	tl.Close()

	// slirp's side of the relay's stdin.
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	guestSide, err := net.Dial("tcp", sl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer guestSide.Close()
	relaySide, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := relaySide.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	relaySide.Close()
	cmd := exec.CommandContext(ctx, tools.Relay, "-wait", "10s", target)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-done }()

	// The guest talks before the target exists.
	if _, err := guestSide.Write([]byte("login")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	tl, err = net.Listen("tcp", target)
	if err != nil {
		t.Fatalf("re-listen %s: %v", target, err)
	}
	defer tl.Close()
	tc, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	_ = guestSide.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "login" {
		t.Fatalf("target read %q, %v; want login", got, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go func() { _, _ = tc.Write(big) }()
	back := make([]byte, len(big))
	if _, err := io.ReadFull(guestSide, back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("guest read %d bytes, %v; want the 1 MiB the target sent", len(back), err)
	}
	// Nothing but relayed bytes reaches the guest, and the target closing
	// ends the relay.
	tc.Close()
	if n, err := guestSide.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after target close: read %d, %v; want EOF", n, err)
	}
	select {
	case err := <-done:
		done <- err
	case <-time.After(5 * time.Second):
		t.Errorf("relay still running 5 s after the target closed")
	}
}
