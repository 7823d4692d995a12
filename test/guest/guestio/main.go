// Command guestio runs inside the test guest: a synchronous record writer
// whose every acknowledged write can be verified later, for target crash
// and restart tests.
//
//	guestio write  -dev /dev/sda -ack /job/acks -progress /job/progress -stop /job/stop ...
//	guestio verify -dev /dev/sda -ack /job/acks -out /job/verify.json
//
// Records are 4 KiB, one per block, at block START+seq. Each holds a magic,
// the writer's run id, its sequence number, a payload derived from both and
// a CRC32C over everything before it. A record counts as acknowledged when
// pwrite with O_DIRECT|O_DSYNC returned; only then is it appended to the
// ack log (on the 9p job share, so the host sees it at once).
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	recordSize = 4096
	magic      = "IREC0001"
	crcOffset  = recordSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guestio write|verify [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "write":
		err = write(os.Args[2:])
	case "verify":
		err = verify(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestio:", err)
		os.Exit(1)
	}
}

// fillRecord writes record seq of run into b.
func fillRecord(b []byte, run, seq uint64, now int64) {
	copy(b[0:8], magic)
	binary.BigEndian.PutUint64(b[8:16], run)
	binary.BigEndian.PutUint64(b[16:24], seq)
	binary.BigEndian.PutUint64(b[24:32], uint64(now))
	fillPayload(b[32:crcOffset], run, seq)
	binary.BigEndian.PutUint32(b[crcOffset:], crc32.Checksum(b[:crcOffset], castagnoli))
}

// fillPayload fills p from a splitmix64 stream seeded by run and seq.
func fillPayload(p []byte, run, seq uint64) {
	x := run ^ (seq * 0x9E3779B97F4A7C15)
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		binary.BigEndian.PutUint64(w[:], z)
		copy(p[i:], w[:])
	}
}

// checkRecord explains what is wrong with b as record seq of run, or
// returns "".
func checkRecord(b []byte, run, seq uint64) string {
	if string(b[0:8]) != magic {
		return fmt.Sprintf("bad magic %q", b[0:8])
	}
	if got := crc32.Checksum(b[:crcOffset], castagnoli); got != binary.BigEndian.Uint32(b[crcOffset:]) {
		return fmt.Sprintf("crc32c %08x, stored %08x", got, binary.BigEndian.Uint32(b[crcOffset:]))
	}
	if r := binary.BigEndian.Uint64(b[8:16]); r != run {
		return fmt.Sprintf("run id %016x, want %016x (stale record)", r, run)
	}
	if s := binary.BigEndian.Uint64(b[16:24]); s != seq {
		return fmt.Sprintf("sequence %d, want %d (misplaced write)", s, seq)
	}
	want := make([]byte, crcOffset-32)
	fillPayload(want, run, seq)
	if !bytes.Equal(b[32:crcOffset], want) {
		return "payload differs"
	}
	return ""
}

// alignedBuffer returns a page-aligned buffer for O_DIRECT.
func alignedBuffer(n int) ([]byte, error) {
	return syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
}

// Summary is what write reports in -summary.
type Summary struct {
	Run          string  `json:"run"`
	Acked        uint64  `json:"acked"`
	Errors       int     `json:"errors"`
	FirstError   string  `json:"first_error,omitempty"`
	MaxLatencyMs float64 `json:"max_latency_ms"`
	MaxLatSeq    uint64  `json:"max_latency_seq"`
	Stalls       []Stall `json:"stalls,omitempty"`
	Seconds      float64 `json:"seconds"`
	StopReason   string  `json:"stop_reason"`
}

// Stall is one write that took longer than -stall.
type Stall struct {
	Seq       uint64  `json:"seq"`
	StartSec  float64 `json:"start_s"`
	LatencyMs float64 `json:"latency_ms"`
}

func write(args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	dev := fs.String("dev", "", "block device or file")
	start := fs.Uint64("start", 0, "first block (4 KiB units)")
	max := fs.Uint64("max", 1<<20, "stop after this many acknowledged records")
	minAcked := fs.Uint64("min", 0, "do not stop on -stop before this many records")
	ack := fs.String("ack", "", "ack log (appended)")
	progress := fs.String("progress", "", "progress file, rewritten after every record")
	stop := fs.String("stop", "", "stop when this file exists")
	maxDur := fs.Duration("max-duration", 5*time.Minute, "stop after this long")
	maxErrors := fs.Int("max-errors", 20, "give up after this many failed writes")
	stallThr := fs.Duration("stall", time.Second, "record writes slower than this as stalls")
	summary := fs.String("summary", "", "write a JSON summary here")
	_ = fs.Parse(args)
	if *dev == "" || *ack == "" {
		return errors.New("write: -dev and -ack are required")
	}
	f, err := os.OpenFile(*dev, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT|syscall.O_DSYNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, err := alignedBuffer(recordSize)
	if err != nil {
		return err
	}
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return err
	}
	run := binary.BigEndian.Uint64(rb[:])
	al, err := os.OpenFile(*ack, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer al.Close()
	if _, err := fmt.Fprintf(al, "run %016x start %d size %d\n", run, *start, recordSize); err != nil {
		return err
	}
	var pf *os.File
	if *progress != "" {
		if pf, err = os.OpenFile(*progress, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return err
		}
		defer pf.Close()
	}
	s := Summary{Run: fmt.Sprintf("%016x", run)}
	t0 := time.Now()
	report := func() {
		if pf != nil {
			// Fixed width: the host may read while this is rewritten.
			line := fmt.Sprintf("acked=%012d errors=%06d maxlat_ms=%010.1f\n", s.Acked, s.Errors, s.MaxLatencyMs)
			_, _ = pf.WriteAt([]byte(line), 0)
		}
	}
	report()
	var seq uint64
	for {
		if s.Acked >= *max {
			s.StopReason = "max records"
			break
		}
		if time.Since(t0) > *maxDur {
			s.StopReason = "max duration"
			break
		}
		if s.Errors >= *maxErrors {
			s.StopReason = "too many errors"
			break
		}
		if *stop != "" && s.Acked >= *minAcked {
			if _, err := os.Stat(*stop); err == nil {
				s.StopReason = "stop file"
				break
			}
		}
		ws := time.Now()
		fillRecord(buf, run, seq, ws.UnixNano())
		n, err := f.WriteAt(buf, int64(*start+seq)*recordSize)
		lat := time.Since(ws)
		if err == nil && n != recordSize {
			err = fmt.Errorf("short write %d", n)
		}
		if err != nil {
			s.Errors++
			if s.FirstError == "" {
				s.FirstError = fmt.Sprintf("seq %d after %v: %v", seq, lat, err)
			}
			fmt.Fprintf(os.Stderr, "guestio: write seq %d failed after %v: %v\n", seq, lat, err)
			report()
			time.Sleep(200 * time.Millisecond)
			continue // retry the same record
		}
		ms := float64(lat.Microseconds()) / 1000
		if ms > s.MaxLatencyMs {
			s.MaxLatencyMs, s.MaxLatSeq = ms, seq
		}
		if lat >= *stallThr {
			s.Stalls = append(s.Stalls, Stall{Seq: seq, StartSec: ws.Sub(t0).Seconds(), LatencyMs: ms})
			fmt.Printf("stall: seq %d took %.1f ms\n", seq, ms)
		}
		if _, err := fmt.Fprintf(al, "%d %.3f %.3f\n", seq, ws.Sub(t0).Seconds(), ms); err != nil {
			return fmt.Errorf("ack log: %w", err)
		}
		s.Acked++
		seq++
		report()
	}
	s.Seconds = time.Since(t0).Seconds()
	report()
	fmt.Printf("write: run %s acked %d errors %d max latency %.1f ms (seq %d) stop: %s\n",
		s.Run, s.Acked, s.Errors, s.MaxLatencyMs, s.MaxLatSeq, s.StopReason)
	if *summary != "" {
		b, _ := json.MarshalIndent(s, "", "  ")
		if err := os.WriteFile(*summary, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Verification is what verify reports in -out.
type Verification struct {
	Run     string   `json:"run"`
	Checked int      `json:"checked"`
	Good    int      `json:"good"`
	Bad     []string `json:"bad,omitempty"`
	OK      bool     `json:"ok"`
}

func verify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	dev := fs.String("dev", "", "block device or file")
	ack := fs.String("ack", "", "ack log written by write")
	out := fs.String("out", "", "write a JSON report here")
	_ = fs.Parse(args)
	if *dev == "" || *ack == "" {
		return errors.New("verify: -dev and -ack are required")
	}
	run, start, seqs, err := readAcks(*ack)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, err := alignedBuffer(recordSize)
	if err != nil {
		return err
	}
	v := Verification{Run: fmt.Sprintf("%016x", run)}
	for _, seq := range seqs {
		v.Checked++
		n, err := f.ReadAt(buf, int64(start+seq)*recordSize)
		msg := ""
		switch {
		case err != nil:
			msg = err.Error()
		case n != recordSize:
			msg = fmt.Sprintf("short read %d", n)
		default:
			msg = checkRecord(buf, run, seq)
		}
		if msg == "" {
			v.Good++
			continue
		}
		if len(v.Bad) < 50 {
			v.Bad = append(v.Bad, fmt.Sprintf("seq %d: %s", seq, msg))
		}
	}
	v.OK = v.Checked > 0 && v.Good == v.Checked
	fmt.Printf("verify: run %s checked %d good %d bad %d\n", v.Run, v.Checked, v.Good, v.Checked-v.Good)
	for _, b := range v.Bad {
		fmt.Println("verify: BAD", b)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !v.OK {
		return fmt.Errorf("verify: %d of %d acknowledged records bad", v.Checked-v.Good, v.Checked)
	}
	return nil
}

func readAcks(path string) (run, start uint64, seqs []uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, nil, fmt.Errorf("%s: empty", path)
	}
	var size int
	if _, err := fmt.Sscanf(sc.Text(), "run %x start %d size %d", &run, &start, &size); err != nil || size != recordSize {
		return 0, 0, nil, fmt.Errorf("%s: bad header %q", path, sc.Text())
	}
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		s, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		seqs = append(seqs, s)
	}
	return run, start, seqs, sc.Err()
}
