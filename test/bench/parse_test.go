package bench

import (
	"math"
	"os"
	"testing"
	"time"
)

func TestParseQemuBench(t *testing.T) {
	out := "Sending 20000 read requests, 4096 bytes each, 32 in parallel (starting at offset 0, step size 165900288)\nRun completed in 0.168 seconds.\n"
	d, err := parseQemuBench(out)
	if err != nil || d != 168*time.Millisecond {
		t.Fatalf("got %v, %v", d, err)
	}
	if _, err := parseQemuBench("qemu-img: Could not open 'iscsi://...': Failed to connect"); err == nil {
		t.Fatal("an error output parsed as a result")
	}
}

func TestParseIscsiPerf(t *testing.T) {
	// Progress lines end in \r; the final average is the last one.
	out := "00:00:02 - lba 955781, iops current 102162 (399 MB/s), iops average 102162 (399 MB/s), in_flight 32, busy 0\r" +
		"00:00:01 - lba 571753, iops current 122903 (480 MB/s), iops average 112533 (439 MB/s), in_flight 32, busy 0\r" +
		"iops average 115250 (450 MB/s)\n\nfinished.\n"
	v, err := parseIscsiPerf(out)
	if err != nil || v != 115250 {
		t.Fatalf("got %v, %v", v, err)
	}
	if _, err := parseIscsiPerf("connect failed"); err == nil {
		t.Fatal("no average parsed as a result")
	}
}

func TestParseProc(t *testing.T) {
	stat := "4242 (iscsi target) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	cpu, err := parseProcStatCPU(stat)
	if err != nil || cpu != 3250*time.Millisecond {
		t.Fatalf("utime+stime: got %v, %v; want 3.25s", cpu, err)
	}
	rss, err := parseVmRSS("Name:\tx\nVmPeak:\t 9999 kB\nVmRSS:\t   2048 kB\n")
	if err != nil || rss != 2<<20 {
		t.Fatalf("VmRSS: got %d, %v", rss, err)
	}
	a, err := parseCPUStat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := parseCPUStat("cpu  200 0 100 900 50 0 0 50 0 0\n")
	m := Between(a, b)
	// 300 ticks elapsed: 100 user + 50 system + 50 steal busy, 100 idle.
	if math.Abs(m.Busy-2.0/3) > 1e-9 || math.Abs(m.Steal-1.0/6) > 1e-9 {
		t.Fatalf("got %+v, want busy 2/3, steal 1/6", m)
	}
}

func TestMedianAndPercentile(t *testing.T) {
	ss := []Sample{{IOPS: 30}, {IOPS: 10}, {IOPS: 20}, {IOPS: 99, Error: "failed"}}
	if got := median(ss, func(s Sample) float64 { return s.IOPS }); got != 20 {
		t.Fatalf("median %v, want 20 (errors excluded)", got)
	}
	var l []time.Duration
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i))
	}
	if p50, p99 := percentile(l, 50), percentile(l, 99); p50 != 50 || p99 != 99 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
}

func TestParseCtxSwitches(t *testing.T) {
	s := "Name:\tiscsi-target\nvoluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t34\nVmRSS:\t 100 kB\n"
	if got := parseCtxSwitches(s); got != 1234 {
		t.Fatalf("parseCtxSwitches = %d, want 1234", got)
	}
	n, err := ProcCtxSwitches(os.Getpid())
	if err != nil || n == 0 {
		t.Fatalf("ProcCtxSwitches(self) = %d, %v", n, err)
	}
}
