package scsi

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
)

// --- APTPL ---

func TestPRAPTPLRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lun0.pr.json")
	mod := func(c *LUConfig) { c.PRStatePath = path }
	e := newEnv(t, mod).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0x01))
	good(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0x05)) // APTPL and ALL_TG_PT
	good(t, e.prOut(e.nx2, SAReserve, PRExclusiveAccessRegsOnly, 0xB, 0, 0))
	good(t, e.prOut(e.nx, SARegister, 0, 0xA, 0xC, 0x01))

	e2 := newEnv(t, mod).login()
	if gen, keys := e2.readKeys(e2.nx); gen != 3 || !slices.Equal(keys, []uint64{0xC, 0xB}) {
		t.Fatalf("restored gen %d keys %x, want 3 [c b]", gen, keys)
	}
	if key, typ := e2.readRes(e2.nx); key != 0xB || typ != PRExclusiveAccessRegsOnly {
		t.Fatalf("restored reservation %#x %v", key, typ)
	}
	// The restored holder is the same I_T nexus.
	good(t, e2.runOn(e2.nx2, 0, cdb10(OpWrite10, 0, 0, 1), fill(512, 3), 0))
	nx3 := e2.nexus3()
	conflict(t, e2.runOn(nx3, 0, cdb10(OpRead10, 0, 0, 1), nil, 512))

	// APTPL=0 on a later REGISTER: nothing persists any more.
	good(t, e2.prOut(e2.nx, SARegister, 0, 0xC, 0xD, 0))
	e3 := newEnv(t, mod).login()
	if gen, keys := e3.readKeys(e3.nx); gen != 0 || len(keys) != 0 {
		t.Fatalf("after APTPL=0: gen %d keys %x, want nothing", gen, keys)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func TestPRAPTPLCorruptFile(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"garbage":    "{not json",
		"truncated":  `{"version":1,"aptpl":true,"generation":3,"registrations":[{"key":1,`,
		"version":    `{"version":9,"aptpl":true}`,
		"zero key":   `{"version":1,"aptpl":true,"registrations":[{"key":0,"initiator":"iqn.x","target":"t","isid":"800000000001"}]}`,
		"bad isid":   `{"version":1,"aptpl":true,"registrations":[{"key":1,"initiator":"iqn.x","target":"t","isid":"80"}]}`,
		"bad holder": `{"version":1,"aptpl":true,"registrations":[{"key":1,"initiator":"iqn.x","target":"t","isid":"800000000001"}],"reservation":{"type":1,"holder":4}}`,
		"bad type":   `{"version":1,"aptpl":true,"registrations":[{"key":1,"initiator":"iqn.x","target":"t","isid":"800000000001"}],"reservation":{"type":2,"holder":0}}`,
		"duplicate":  `{"version":1,"aptpl":true,"registrations":[{"key":1,"initiator":"iqn.x","target":"t","isid":"800000000001"},{"key":2,"initiator":"IQN.X","target":"t","isid":"800000000001"}]}`,
		"empty":      ``,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := NewLU(LUConfig{Device: backstore.NewMemory(1 << 20), Serial: "S1", PRStatePath: path})
			if err == nil {
				t.Fatal("NewLU accepted a corrupt state file")
			}
		})
	}
}

// TestPRAPTPLWriteFailure: a state file that cannot be written fails the
// command and leaves the state as it was.
func TestPRAPTPLWriteFailure(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "state")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *LUConfig) { c.PRStatePath = filepath.Join(sub, "pr.json") }).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0x01))
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	check(t, e.prOut(e.nx2, SARegister, 0, 0, 0xB, 0x01), StatusCheckCondition, KeyHardwareError, ASCInternalTargetFailure)
	check(t, e.prOut(e.nx, SAReserve, PRWriteExclusive, 0xA, 0, 0), StatusCheckCondition, KeyHardwareError, ASCInternalTargetFailure)
	if gen, keys := e.readKeys(e.nx); gen != 1 || !slices.Equal(keys, []uint64{0xA}) {
		t.Fatalf("gen %d keys %x after failed writes, want 1 [a]", gen, keys)
	}
	if _, typ := e.readRes(e.nx); typ != 0 {
		t.Fatalf("unsaved reservation %v is visible", typ)
	}
}

func TestPRAPTPLTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pr.json")
	stale := filepath.Join(dir, ".pr.json.tmp123")
	if err := os.WriteFile(stale, []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	newEnv(t, func(c *LUConfig) { c.PRStatePath = path })
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file kept: %v", err)
	}
}
