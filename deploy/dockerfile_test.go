package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile returns the instructions of ../Dockerfile (continuation
// lines joined, comments dropped) as [keyword, rest] pairs.
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	cur := ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur += s + " "
			continue
		}
		cur += trimmed
		kw, rest, _ := strings.Cut(cur, " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		cur = ""
	}
	return out
}

// subcommandFlags returns the long flags `iscsi-target <cmd> --help` lists.
func subcommandFlags(t *testing.T, bin, cmd string) []string {
	t.Helper()
	out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", cmd, err, out)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	return flags
}

func checkArgs(t *testing.T, bin, where string, argv []string) {
	t.Helper()
	if len(argv) == 0 {
		t.Fatalf("%s: no subcommand", where)
	}
	flags := subcommandFlags(t, bin, argv[0])
	for _, a := range argv[1:] {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			if !slices.Contains(flags, name) {
				t.Errorf("%s: --%s is not a flag of %s", where, name, argv[0])
			}
		}
	}
}

// TestDockerfile checks what can be checked without a Docker daemon: a
// static build, a distroless final stage, a non-root user, and that the
// HEALTHCHECK and CMD lines use commands and flags the binary has.
func TestDockerfile(t *testing.T) {
	bin := buildDaemon(t)
	var froms []string
	var user, entry string
	var cmd, health []string
	cgoOff := false
	for _, ins := range dockerfile(t) {
		switch ins[0] {
		case "FROM":
			froms = append(froms, ins[1])
		case "USER":
			user = ins[1]
		case "RUN":
			if strings.Contains(ins[1], "go build") && strings.Contains(ins[1], "CGO_ENABLED=0") {
				cgoOff = true
			}
		case "ENTRYPOINT":
			var v []string
			if err := json.Unmarshal([]byte(ins[1]), &v); err != nil || len(v) != 1 {
				t.Fatalf("ENTRYPOINT %s: want a JSON array with the binary", ins[1])
			}
			entry = v[0]
		case "CMD":
			if err := json.Unmarshal([]byte(ins[1]), &cmd); err != nil {
				t.Fatalf("CMD %s: %v", ins[1], err)
			}
		case "HEALTHCHECK":
			_, js, ok := strings.Cut(ins[1], "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %s: no CMD", ins[1])
			}
			if err := json.Unmarshal([]byte(js), &health); err != nil {
				t.Fatalf("HEALTHCHECK CMD %s: %v", js, err)
			}
		}
	}
	if !cgoOff {
		t.Error("the binary is not built with CGO_ENABLED=0 (static)")
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[len(froms)-1], "gcr.io/distroless/static") {
		t.Errorf("final stage %v: want gcr.io/distroless/static", froms)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: want a non-root user", user)
	}
	if entry != "/usr/local/bin/iscsi-target" {
		t.Errorf("ENTRYPOINT %q", entry)
	}
	if len(health) < 2 || health[0] != entry || health[1] != "health" {
		t.Errorf("HEALTHCHECK %q: want the binary's health command", health)
	}
	checkArgs(t, bin, "HEALTHCHECK", health[1:])
	checkArgs(t, bin, "CMD", cmd)
	if !slices.Contains(cmd, "--metrics-listen") {
		t.Error("CMD: the metrics listener must listen beyond loopback for scrapes")
	}
}
