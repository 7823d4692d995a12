package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestAdminSocket(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	entry := logrus.NewEntry(log)
	path := filepath.Join(t.TempDir(), "admin.sock")

	// A stale socket (left by a killed daemon) is replaced.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Word string }
		if err := adminDecode(r, &in); err != nil {
			adminError(w, http.StatusBadRequest, "bad request: %v", err)
			return
		}
		adminJSON(w, http.StatusOK, map[string]string{"word": strings.ToUpper(in.Word)})
	})
	a, err := startAdmin(path, mux, entry)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}

	var out map[string]string
	if err := adminCall(context.Background(), path, http.MethodPost, "/v1/echo", map[string]string{"Word": "lease"}, &out); err != nil {
		t.Fatal(err)
	}
	if out["word"] != "LEASE" {
		t.Errorf("answer %v", out)
	}
	err = adminCall(context.Background(), path, http.MethodPost, "/v1/echo", map[string]int{"Other": 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "bad request") {
		t.Errorf("unknown field: err %v, want the daemon's bad request message", err)
	}
	if err := adminCall(context.Background(), path, http.MethodGet, "/v1/nothing", nil, nil); err == nil {
		t.Error("unknown route answered without error")
	}

	// A second daemon on the same socket is refused; the first keeps it.
	if _, err := startAdmin(path, mux, entry); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("second daemon: err %v", err)
	}
	if err := adminCall(context.Background(), path, http.MethodPost, "/v1/echo", map[string]string{"Word": "x"}, &out); err != nil {
		t.Errorf("first daemon lost its socket: %v", err)
	}
}
