package pdu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// corpusSeeds are the checked-in seed inputs of FuzzBHS: one framed PDU of
// every initiator opcode (with and without digests, with an Extended CDB
// AHS) and of the malformed shapes the robustness probes use.
func corpusSeeds(t testing.TB) map[string]struct {
	wire []byte
	dig  uint8
} {
	seeds := map[string]struct {
		wire []byte
		dig  uint8
	}{}
	add := func(name string, h BHS, ahs, data []byte, dig uint8) {
		d := Digests{Header: dig&1 != 0, Data: dig&2 != 0}
		seeds[name] = struct {
			wire []byte
			dig  uint8
		}{frame(h, ahs, data, d), dig}
	}
	var h BHS
	login := bhsFrom(t, goldenLogin)
	add("login", login, nil, []byte("InitiatorName=iqn.2026-11.test:probe\x00TargetName=iqn.2026-11.test:t\x00SessionType=Normal\x00"), 0)
	(&SCSICommand{Final: true, Write: true, Attr: AttrSimple, InitiatorTaskTag: 7, ExpectedDataTransferLn: 512, CmdSN: 5}).Marshal(&h)
	h[32] = 0x2a
	h[40] = 1
	add("write10-immediate", h, nil, make([]byte, 512), 3)
	ahs := []byte{0, 17, 1, 0, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 0, 0, 0, 0}
	(&SCSICommand{Final: true, Attr: AttrSimple, InitiatorTaskTag: 8}).Marshal(&h)
	h[32] = 0x7f
	add("cdb32-ahs", h, ahs, nil, 1)
	(&DataOut{Final: true, InitiatorTaskTag: 7, TargetTransferTag: 0x10001, DataSN: 27, BufferOffset: 1536}).Marshal(&h)
	add("dataout-bad-datasn", h, nil, make([]byte, 512), 0)
	(&NOPOut{InitiatorTaskTag: 0x11, TargetTransferTag: ReservedTag, CmdSN: 3}).Marshal(&h)
	add("nopout-nonimmediate", h, nil, []byte("ping"), 0)
	(&TextRequest{Final: true, InitiatorTaskTag: 0x70, TargetTransferTag: ReservedTag}).Marshal(&h)
	add("text-sendtargets", h, nil, []byte("SendTargets=All\x00"), 2)
	(&TaskMgmtRequest{Immediate: true, Function: TMFLogicalUnitReset, ReferencedTaskTag: ReservedTag}).Marshal(&h)
	add("tmf-lun-reset", h, nil, nil, 0)
	(&LogoutRequest{Immediate: true, Reason: LogoutCloseSession}).Marshal(&h)
	add("logout", h, nil, nil, 0)
	(&SNACKRequest{Type: 1}).Marshal(&h)
	add("snack", h, nil, nil, 0)
	big := login
	big.SetLengths(0, 1<<24-1)
	seeds["oversize-segment"] = struct {
		wire []byte
		dig  uint8
	}{big[:], 0}
	return seeds
}

// TestFuzzCorpus keeps testdata/fuzz/FuzzBHS in step with corpusSeeds; run
// with PDU_WRITE_FUZZ_CORPUS=1 to regenerate it.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzBHS")
	for name, s := range corpusSeeds(t) {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint8(%d)\n", strconv.Quote(string(s.wire)), s.dig)
		path := filepath.Join(dir, name)
		if os.Getenv("PDU_WRITE_FUZZ_CORPUS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale; regenerate with PDU_WRITE_FUZZ_CORPUS=1", path)
		}
	}
}
