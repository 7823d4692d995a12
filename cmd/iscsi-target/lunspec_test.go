package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iscsi-target/iscsi-target/internal/config"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  string
	}{
		{"512MiB", 512 << 20, ""},
		{"4GiB", 4 << 30, ""},
		{"1TB", 1e12, ""},
		{"1T", 1 << 40, ""},
		{"65536", 65536, ""},
		{"1.5GiB", 3 << 29, ""},
		{"10 MB", 10e6, ""},
		{"", 0, "want a number"},
		{"abc", 0, "want a number"},
		{"5XB", 0, "unknown unit"},
		{"0", 0, "positive"},
		{"0.3B", 0, "whole"},
		{"99999999TiB", 0, "positive"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %d, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestParseLUNSpec(t *testing.T) {
	cases := []struct {
		in   string
		want lunSpec
		err  string
	}{
		{"/d/x.img", lunSpec{Path: "/d/x.img", ID: -1}, ""},
		{"/d/x.img,size=1GiB,ro,thin,removable,blocksize=4096,serial=ABC-1,id=7,direct",
			lunSpec{Path: "/d/x.img", Size: 1 << 30, ReadOnly: true, Thin: true, Removable: true, BlockSize: 4096, Serial: "ABC-1", ID: 7, Direct: true}, ""},
		{"/dev/sdc,blocksize=512", lunSpec{Path: "/dev/sdc", BlockSize: 512, ID: -1}, ""},
		{",size=1GiB", lunSpec{}, "missing PATH"},
		{"/x,size=", lunSpec{}, "needs a value"},
		{"/x,size=12", lunSpec{}, "not a multiple of the block size 512"},
		{"/x,size=4097KiB,blocksize=4096", lunSpec{}, "not a multiple of the block size 4096"},
		{"/x,blocksize=1024", lunSpec{}, "must be 512 or 4096"},
		{"/x,ro=yes", lunSpec{}, "takes no value"},
		{"/x,thin,thin", lunSpec{}, "given twice"},
		{"/x,id=16384", lunSpec{}, "from 0 to 16383"},
		{"/x,id=-1", lunSpec{}, "from 0 to 16383"},
		{"/x,serial=has space", lunSpec{}, "printable ASCII"},
		{"/x,compress", lunSpec{}, `unknown option "compress"`},
		{"/x,,ro", lunSpec{}, "empty option"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseLUNSpec(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestAssignIDs(t *testing.T) {
	specs := []lunSpec{{ID: -1}, {ID: 0}, {ID: -1}, {ID: 5}, {ID: -1}}
	if err := assignIDs(specs); err != nil {
		t.Fatal(err)
	}
	want := []int{1, 0, 2, 5, 3}
	for i, s := range specs {
		if s.ID != want[i] {
			t.Fatalf("LUN %d got id %d, want %d (all: %+v)", i, s.ID, want[i], specs)
		}
	}
	dup := []lunSpec{{ID: 3}, {ID: -1}, {ID: 3}}
	if err := assignIDs(dup); err == nil || !strings.Contains(err.Error(), "both use LUN id 3") {
		t.Fatalf("duplicate ids: %v", err)
	}
}

func TestValidTargetName(t *testing.T) {
	for name, ok := range map[string]bool{
		"iqn.2026-11.io.iscsi-target:host1": true,
		"iqn.2016-04.world.srv:target00":    true,
		"eui.02004567a425678d":              true,
		"naa.52004567BA64678D":              true,
		"IQN.2026-11.io.example:upper":      false,
		"iqn.2026.io.example":               false,
		"iqn.2026-11.io.example:a,b":        false,
		"target0":                           false,
		"eui.123":                           false,
	} {
		if got := config.ValidName(name); got != ok {
			t.Errorf("config.ValidName(%q) = %v, want %v", name, got, ok)
		}
	}
}

func TestDefaultSerialStable(t *testing.T) {
	a := defaultSerial("iqn.2026-11.test:a", 0)
	if a != defaultSerial("iqn.2026-11.test:a", 0) || len(a) != 16 {
		t.Fatalf("serial %q not stable or not 16 hex digits", a)
	}
	if a == defaultSerial("iqn.2026-11.test:a", 1) || a == defaultSerial("iqn.2026-11.test:b", 0) {
		t.Fatal("serials collide across LUNs or targets")
	}
}

// run() returns exit code 2 with a message naming the bad input for usage
// errors, before touching any file.
func TestServeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--lun", filepath.Join(dir, "a.img") + ",size=1Q"}, `unknown unit "Q"`},
		{[]string{"--lun", filepath.Join(dir, "a.img") + ",bogus"}, `unknown option "bogus"`},
		{[]string{"--listen", "3260"}, `--listen "3260"`},
		{[]string{"--access", "many"}, "want single-writer or shared"},
		{[]string{"--iqn", "target0"}, "not an iSCSI name"},
		{[]string{"--log-format", "xml"}, "want text or json"},
		{[]string{"--advertise", "0.0.0.0:3260"}, "wildcard"},
		{[]string{"--lun", "/a,id=1", "--lun", "/b,id=1"}, "both use LUN id 1"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"--busy-poll", "2ms"}, "--busy-poll 2ms: want 0 (off) to 1ms"},
		{[]string{"--busy-poll", "-1us"}, "--busy-poll -1µs"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stderr := captureStderr(t, func() {
				args := append([]string{"iscsi-target", "serve", "--state-dir", dir}, tc.args...)
				if code := run(args); code != exitUsage {
					t.Errorf("exit code %d, want %d", code, exitUsage)
				}
			})
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr %q does not contain %q", stderr, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("usage errors created files: %v", entries)
	}
}

func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		done <- b.String()
	}()
	fn()
	os.Stderr = old
	w.Close()
	return <-done
}
