package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture this runs on (sysconf(_SC_CLK_TCK) without cgo).
const clockTicks = 100

// ProcCPU returns the user+system CPU time a process has used, from
// /proc/PID/stat (fields 14 and 15; the process-wide totals over all its
// threads).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(b))
}

func parseProcStatCPU(s string) (time.Duration, error) {
	// The command name (field 2) is parenthesised and may hold spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bench: malformed /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("bench: short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: bad CPU fields in /proc/PID/stat")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ProcCtxSwitches returns the context switches (voluntary and not) of all
// of a process's live threads, from /proc/PID/task/*/status. Threads that
// exited are not counted.
func ProcCtxSwitches(pid int) (uint64, error) {
	dirs, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, d := range dirs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, d.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		total += parseCtxSwitches(string(b))
	}
	return total, nil
}

func parseCtxSwitches(s string) uint64 {
	var n uint64
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
			x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			n += x
		}
	}
	return n
}

// ProcRSS returns a process's resident set size in bytes (VmRSS).
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

func parseVmRSS(s string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("bench: no VmRSS")
}

// CPUStat is the aggregate "cpu" line of /proc/stat, in ticks.
type CPUStat struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Total is every tick counted.
func (c CPUStat) Total() uint64 {
	return c.User + c.Nice + c.System + c.Idle + c.IOWait + c.IRQ + c.SoftIRQ + c.Steal
}

// Busy is every tick not idle (idle and iowait).
func (c CPUStat) Busy() uint64 { return c.Total() - c.Idle - c.IOWait }

// ReadCPUStat reads /proc/stat.
func ReadCPUStat() (CPUStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUStat{}, err
	}
	return parseCPUStat(string(b))
}

func parseCPUStat(s string) (CPUStat, error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return CPUStat{}, err
			}
			v[i] = n
		}
		return CPUStat{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
	}
	return CPUStat{}, errors.New("bench: no cpu line in /proc/stat")
}

// Machine is the machine's CPU use over an interval, as fractions of all
// CPUs.
type Machine struct {
	Busy  float64 // everything not idle
	Steal float64 // taken by the hypervisor
}

// Between computes the machine's use from two snapshots.
func Between(a, b CPUStat) Machine {
	t := float64(b.Total() - a.Total())
	if t <= 0 {
		return Machine{}
	}
	return Machine{
		Busy:  float64(b.Busy()-a.Busy()) / t,
		Steal: float64(b.Steal-a.Steal) / t,
	}
}

// LoadAvg returns /proc/loadavg's first three fields.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

var (
	reQemuRun   = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)
	reIscsiPerf = regexp.MustCompile(`iops average ([0-9]+)`)
)

// parseQemuBench returns the run time qemu-img bench reports.
func parseQemuBench(out string) (time.Duration, error) {
	m := reQemuRun.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("bench: no run time in qemu-img output: %q", tailString(out, 300))
	}
	s, err := strconv.ParseFloat(m[1], 64)
	if err != nil || s <= 0 {
		return 0, fmt.Errorf("bench: bad qemu-img run time %q", m[1])
	}
	return time.Duration(s * float64(time.Second)), nil
}

// parseIscsiPerf returns the final average IOPS iscsi-perf prints (the
// last "iops average" on its output; the earlier ones are progress).
func parseIscsiPerf(out string) (float64, error) {
	m := reIscsiPerf.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("bench: no average in iscsi-perf output: %q", tailString(out, 300))
	}
	v, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	if err != nil {
		return 0, err
	}
	return v, nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
