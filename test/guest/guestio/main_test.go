package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRecord(t *testing.T) {
	b := make([]byte, recordSize)
	fillRecord(b, 0x1234, 7, 99)
	if msg := checkRecord(b, 0x1234, 7); msg != "" {
		t.Fatalf("fresh record: %s", msg)
	}
	for _, tc := range []struct {
		name      string
		run, seq  uint64
		corrupt   func([]byte)
		wantInMsg string
	}{
		{"other run", 0x9999, 7, nil, "run id"},
		{"other sequence", 0x1234, 8, nil, "sequence"},
		{"payload bit flip", 0x1234, 7, func(b []byte) { b[1000] ^= 1 }, "crc32c"},
		{"zeroed block", 0x1234, 7, func(b []byte) { clear(b) }, "magic"},
		{"foreign payload", 0x1234, 7, func(b []byte) { fillPayload(b[32:crcOffset], 0x1234, 8) }, "crc32c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := append([]byte(nil), b...)
			if tc.corrupt != nil {
				tc.corrupt(c)
			}
			if msg := checkRecord(c, tc.run, tc.seq); !strings.Contains(msg, tc.wantInMsg) {
				t.Errorf("got %q, want a message containing %q", msg, tc.wantInMsg)
			}
		})
	}
}

func TestWriteVerify(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "disk")
	// O_DIRECT needs a filesystem that supports it (not tmpfs).
	if f, err := os.OpenFile(dev, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o644); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			t.Skipf("O_DIRECT unsupported in %s", dir)
		}
		t.Fatal(err)
	} else {
		f.Close()
	}
	ack := filepath.Join(dir, "acks")
	sum := filepath.Join(dir, "write.json")
	if err := write([]string{"-dev", dev, "-ack", ack, "-max", "50", "-start", "3", "-summary", sum,
		"-progress", filepath.Join(dir, "progress")}); err != nil {
		t.Fatal(err)
	}
	var s Summary
	b, err := os.ReadFile(sum)
	if err != nil || json.Unmarshal(b, &s) != nil {
		t.Fatalf("summary: %v %s", err, b)
	}
	if s.Acked != 50 || s.Errors != 0 || s.StopReason != "max records" {
		t.Errorf("summary %+v", s)
	}
	out := filepath.Join(dir, "verify.json")
	if err := verify([]string{"-dev", dev, "-ack", ack, "-out", out}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Damage record 10 (block 13): verification must fail and name it.
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XX"), 13*recordSize+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := verify([]string{"-dev", dev, "-ack", ack, "-out", out}); err == nil {
		t.Fatal("verify passed a damaged record")
	}
	var v Verification
	b, _ = os.ReadFile(out)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.OK || v.Checked != 50 || v.Good != 49 || len(v.Bad) != 1 || !strings.HasPrefix(v.Bad[0], "seq 10:") {
		t.Errorf("verification %+v, want seq 10 bad and 49 good", v)
	}
}
