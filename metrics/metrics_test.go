package metrics_test

import (
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/iscsi-target/iscsi-target/metrics"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

func rw10(op byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

// session logs in to tg and clears the power-on unit attention.
func session(t *testing.T, tg *targettest.Target) *targettest.Client {
	t.Helper()
	c, err := targettest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(targettest.LoginOptions{Target: tg.IQN}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Command([]byte{0, 0, 0, 0, 0, 0}, nil, 0, targettest.CommandOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, mfs []*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("%s: no sample with labels %v", name, want)
	}
	t.Fatalf("no metric family %s", name)
	return 0
}

func TestCollectorValuesAndLint(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{LUNs: []targettest.LUN{{}, {Size: 8 << 20}}})
	reg := metrics.NewRegistry(tg.Server, "v-test")
	c := session(t, tg)
	data := make([]byte, 32<<10)
	for i := 0; i < 3; i++ {
		if r, err := c.Command(rw10(0x2a, uint32(i*64), 64), data, 0, targettest.CommandOptions{}); err != nil || r.Status != 0 {
			t.Fatalf("write: %+v %v", r, err)
		}
	}
	if r, err := c.Command(rw10(0x28, 0, 16), nil, 8<<10, targettest.CommandOptions{}); err != nil || r.Status != 0 {
		t.Fatalf("read: %+v %v", r, err)
	}
	if r, err := c.Command(rw10(0x28, 1<<30, 1), nil, 512, targettest.CommandOptions{}); err != nil || r.Status != 2 {
		t.Fatalf("read beyond the end: %+v %v", r, err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	lun0 := map[string]string{"target": tg.IQN, "lun": "0"}
	with := func(m map[string]string, k, v string) map[string]string {
		n := map[string]string{k: v}
		for a, b := range m {
			n[a] = b
		}
		return n
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"iscsi_target_written_bytes_total", lun0, 3 * 32 << 10},
		{"iscsi_target_read_bytes_total", lun0, 8 << 10},
		{"iscsi_target_scsi_commands_total", with(lun0, "class", "write"), 3},
		{"iscsi_target_scsi_commands_total", with(lun0, "class", "read"), 2},
		{"iscsi_target_scsi_command_duration_seconds", with(lun0, "class", "write"), 3},
		{"iscsi_target_scsi_errors_total", with(lun0, "sense_key", "illegal_request"), 1},
		{"iscsi_target_scsi_errors_total", with(lun0, "sense_key", "unit_attention"), 1},
		{"iscsi_target_scsi_commands_total", map[string]string{"lun": "1", "class": "write"}, 0},
		{"iscsi_target_lun_capacity_bytes", map[string]string{"lun": "1"}, 8 << 20},
		{"iscsi_target_sessions", map[string]string{"target": tg.IQN}, 1},
		{"iscsi_target_logins_total", map[string]string{"result": "success"}, 1},
		{"iscsi_target_logins_total", map[string]string{"result": "authentication_failed"}, 0},
		{"iscsi_target_connections", nil, 1},
		{"iscsi_target_chap_failures_total", nil, 0},
		{"iscsi_target_lease_held", map[string]string{"target": tg.IQN}, 1},
		{"iscsi_target_lease_holder_alive", map[string]string{"target": tg.IQN}, 1},
		{"iscsi_target_lease_epoch", map[string]string{"target": tg.IQN}, 1},
		{"iscsi_target_lease_takeovers_total", map[string]string{"target": tg.IQN}, 0},
		{"iscsi_target_fenced_nexuses", map[string]string{"target": tg.IQN}, 0},
		{"iscsi_target_build_info", map[string]string{"version": "v-test"}, 1},
	} {
		if got := value(t, mfs, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v: got %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := value(t, mfs, "iscsi_target_data_buffer_limit_bytes", nil); got <= 0 {
		t.Errorf("data buffer limit %v, want the configured budget", got)
	}
	if got := value(t, mfs, "iscsi_target_connections_refused_total", map[string]string{"limit": "max_connections"}); got != 0 {
		t.Errorf("connections refused: %v", got)
	}
	// The runtime and process collectors are registered.
	value(t, mfs, "go_goroutines", nil)
	value(t, mfs, "process_open_fds", nil)

	// No label carries the initiator's name.
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), c.InitiatorName) {
					t.Errorf("%s has the initiator name in label %s", mf.GetName(), lp.GetName())
				}
			}
		}
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHealthAndReadiness(t *testing.T) {
	tg := targettest.Start(t, targettest.Options{})
	health := metrics.NewHealth(tg.Server)
	h := metrics.NewHandler(metrics.NewRegistry(tg.Server, "v"), health, nil)

	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before SetReady: %d %q", code, body)
	}
	health.SetReady(true)
	session(t, tg) // the listener accepts by now
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, body := get(t, h, "/metrics"); code != 200 || !strings.Contains(body, "iscsi_target_sessions{target=") {
		t.Errorf("/metrics: %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, h, "/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
	_ = tg.Server.Close()
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz after Close: %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz after Close: %d", code)
	}
}
