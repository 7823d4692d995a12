// Package metrics exports a target.Server's statistics to Prometheus and
// serves the /metrics, /healthz and /readyz endpoints.
//
// The target and scsi packages count events in atomics and offer
// snapshots (target.Server.Stats, scsi.Router.Stats); the Collector here
// reads a snapshot at each scrape and turns it into constant metrics, so
// nothing on the I/O path knows about Prometheus and a scrape costs one
// snapshot. Every metric is declared in this file, under the namespace
// iscsi_target. Label values come from closed sets (command class, sense
// key, login result) or from the configuration (target name, LUN); an
// initiator name, ISID or address is never a label.
package metrics

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iscsi-target/iscsi-target/scsi"
	"github.com/iscsi-target/iscsi-target/target"
)

const namespace = "iscsi_target"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

// Metric descriptions. Keep README.md's metric list in step.
var (
	descBuildInfo = desc("build_info", "Build information of the running daemon; always 1.", "version", "goversion")

	descConnections         = desc("connections", "Open iSCSI TCP connections, login phase included.")
	descConnectionsAccepted = desc("connections_accepted_total", "Accepted iSCSI TCP connections.")
	descSessions            = desc("sessions", "Normal iSCSI sessions logged in to the target.", "target")
	descDiscoverySessions   = desc("discovery_sessions", "Discovery iSCSI sessions.")
	descLogins              = desc("logins_total", "Finished login phases by result (success, authentication_failed, authorization_failed, not_found, initiator_error, unavailable, target_error, redirect, aborted).", "result")
	descCHAPFailures        = desc("chap_failures_total", "CHAP exchanges that failed (a response that did not verify, or broken CHAP keys).")
	descCHAPSuccesses       = desc("chap_successes_total", "CHAP authentications that succeeded.")
	descAuthRateLimited     = desc("auth_rate_limited_total", "Logins refused without checking credentials because their source address had too many recent failures.")
	descPanics              = desc("panics_total", "Panics recovered instead of crashing the daemon, by layer (iscsi: a connection or command worker; scsi: a command handler).", "layer")

	descConnsRefused   = desc("connections_refused_total", "Connections closed on accept by a limit (max_connections, max_connections_per_source).", "limit")
	descSessRefused    = desc("sessions_refused_total", "Logins refused because the target had its maximum number of sessions.")
	descBufferWaits    = desc("data_buffer_waits_total", "Commands that waited for data buffer memory (the global budget).")
	descBufferRefusals = desc("data_buffer_refusals_total", "Writes answered TASK SET FULL for lack of data buffer memory.")
	descBufferBytes    = desc("data_buffer_bytes", "Data buffer memory in use.")
	descBufferLimit    = desc("data_buffer_limit_bytes", "Size of the data buffer memory budget.")

	descInlineCommands  = desc("inline_commands_total", "Commands run by the connection's receiver itself (the only command of its session, an ordinary read or write), without a hand-off to a worker.")
	descInlineRequeued  = desc("inline_requeued_total", "Inline reads handed to a worker after all because their data was not in the page cache or no buffer memory was free.")
	descInlineHandovers = desc("inline_handovers_total", "Receivers held up by an inline command for two watchdog ticks and replaced by a new receiver.")
	descBusyPolls       = desc("busy_polls_total", "Polls of an empty socket by a receiver whose session had nothing in flight, by outcome (data: the next PDU arrived within the busy-poll window; empty: the window ran out).", "outcome")

	descLeaseHeld      = desc("lease_held", "1 while an initiator holds the target's single-writer lease, else 0 (always 0 in shared access mode).", "target")
	descLeaseAlive     = desc("lease_holder_alive", "1 while the lease holder has a live session, else 0.", "target")
	descLeaseEpoch     = desc("lease_epoch", "Epoch of the target's single-writer lease; it grows with every new holder.", "target")
	descLeaseTakeovers = desc("lease_takeovers_total", "Takeovers of the target's single-writer lease by another initiator (the previous holder is fenced).", "target")
	descLeaseBusy      = desc("lease_refused_logins_total", "Logins refused (target busy) while another initiator held the lease.", "target")
	descLeasePersist   = desc("lease_persist_errors_total", "Lease changes refused because the lease state could not be written.", "target")
	descFencedLogins   = desc("fenced_logins_total", "Logins refused because their I_T nexus was fenced.", "target")
	descFencedNexuses  = desc("fenced_nexuses", "I_T nexuses fenced for good after lease takeovers.", "target")

	descCommands     = desc("scsi_commands_total", "SCSI commands completed by the device server, by class (read, write, flush, unmap, other).", "target", "lun", "class")
	descDuration     = desc("scsi_command_duration_seconds", "Time from a SCSI command's arrival at the device server to its status, data transfer included.", "target", "lun", "class")
	descReadBytes    = desc("read_bytes_total", "Bytes returned by READ commands that completed with GOOD status.", "target", "lun")
	descWrittenBytes = desc("written_bytes_total", "Bytes received by WRITE-class commands that completed with GOOD status.", "target", "lun")
	descErrors       = desc("scsi_errors_total", "SCSI commands answered CHECK CONDITION, by sense key.", "target", "lun", "sense_key")
	descConflicts    = desc("scsi_reservation_conflicts_total", "SCSI commands answered RESERVATION CONFLICT.", "target", "lun")
	descPRRegs       = desc("scsi_pr_registrations", "Persistent reservation registrations of the logical unit.", "target", "lun")
	descReserved     = desc("scsi_reserved", "1 while the logical unit is reserved, by kind (persistent: PERSISTENT RESERVE OUT RESERVE; spc2: RESERVE(6/10)).", "target", "lun", "kind")
	descBusy         = desc("scsi_busy_total", "SCSI commands answered BUSY or TASK SET FULL.", "target", "lun")
	descUnknownLUN   = desc("scsi_unknown_lun_commands_total", "SCSI commands addressed to a LUN that does not exist.", "target")
	descCapacity     = desc("lun_capacity_bytes", "Capacity of the logical unit.", "target", "lun")
)

// senseKeyLabels are the label values of the 16 sense keys (SPC-4 table 48).
var senseKeyLabels = [16]string{
	"no_sense", "recovered_error", "not_ready", "medium_error", "hardware_error", "illegal_request",
	"unit_attention", "data_protect", "blank_check", "vendor_specific", "copy_aborted",
	"aborted_command", "obsolete_0xc", "volume_overflow", "miscompare", "completed",
}

// Collector is a prometheus.Collector over one target.Server.
type Collector struct {
	srv     *target.Server
	version string
	buckets []float64
}

// NewCollector returns a collector of srv's statistics; version is
// reported in iscsi_target_build_info.
func NewCollector(srv *target.Server, version string) *Collector {
	return &Collector{srv: srv, version: version, buckets: scsi.LatencyBuckets()}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBuildInfo, descConnections, descConnectionsAccepted, descSessions, descDiscoverySessions,
		descLogins, descCHAPFailures, descCHAPSuccesses, descAuthRateLimited, descPanics, descLeaseHeld, descLeaseAlive,
		descLeaseEpoch, descLeaseTakeovers, descLeaseBusy, descLeasePersist, descFencedLogins, descFencedNexuses,
		descCommands, descDuration, descReadBytes, descWrittenBytes, descErrors,
		descConflicts, descPRRegs, descReserved, descBusy, descUnknownLUN, descCapacity, descConnsRefused, descSessRefused,
		descBufferWaits, descBufferRefusals, descBufferBytes, descBufferLimit,
		descInlineCommands, descInlineRequeued, descInlineHandovers, descBusyPolls,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge(descBuildInfo, 1, c.version, runtime.Version())
	gauge(descConnections, float64(st.Connections))
	counter(descConnectionsAccepted, st.ConnectionsAccepted)
	gauge(descDiscoverySessions, float64(st.DiscoverySessions))
	for i, n := range st.Logins {
		counter(descLogins, n, target.LoginResult(i).String())
	}
	counter(descCHAPFailures, st.CHAPFailures)
	counter(descCHAPSuccesses, st.Auth.Successes)
	counter(descAuthRateLimited, st.Auth.RateLimited)
	var scsiPanics uint64
	for _, n := range st.Nodes {
		scsiPanics += n.SCSI.Panics
	}
	lim := st.Limits
	counter(descConnsRefused, lim.ConnectionsRefusedTotal, "max_connections")
	counter(descConnsRefused, lim.ConnectionsRefusedPerSource, "max_connections_per_source")
	counter(descSessRefused, lim.SessionsRefused)
	counter(descBufferWaits, lim.DataBufferWaits)
	counter(descBufferRefusals, lim.DataBufferRefusals)
	gauge(descBufferBytes, float64(lim.DataBufferBytes))
	gauge(descBufferLimit, float64(lim.DataBufferLimit))
	counter(descPanics, st.Panics, "iscsi")
	counter(descPanics, scsiPanics, "scsi")
	counter(descInlineCommands, st.Inline.Commands)
	counter(descInlineRequeued, st.Inline.Requeued)
	counter(descInlineHandovers, st.Inline.Handovers)
	counter(descBusyPolls, st.BusyPoll.Data, "data")
	counter(descBusyPolls, st.BusyPoll.Empty, "empty")

	for _, n := range st.Nodes {
		gauge(descSessions, float64(n.Sessions), n.Name)
		gauge(descLeaseHeld, b2f(n.LeaseHeld), n.Name)
		gauge(descLeaseAlive, b2f(n.LeaseHolderAlive), n.Name)
		gauge(descLeaseEpoch, float64(n.LeaseEpoch), n.Name)
		counter(descLeaseTakeovers, n.LeaseTakeovers, n.Name)
		counter(descLeaseBusy, n.LeaseRefusedBusy, n.Name)
		counter(descLeasePersist, n.LeasePersistErrors, n.Name)
		counter(descFencedLogins, n.FencedLogins, n.Name)
		gauge(descFencedNexuses, float64(n.FencedNexuses), n.Name)
		counter(descUnknownLUN, n.SCSI.UnknownLUN, n.Name)
		for i := range n.SCSI.LUs {
			c.collectLU(ch, n.Name, &n.SCSI.LUs[i])
		}
	}
}

func (c *Collector) collectLU(ch chan<- prometheus.Metric, tgt string, lu *scsi.LUStats) {
	lun := strconv.Itoa(int(lu.ID))
	for i := range lu.Classes {
		cs := &lu.Classes[i]
		class := scsi.CommandClass(i).String()
		ch <- prometheus.MustNewConstMetric(descCommands, prometheus.CounterValue, float64(cs.Commands), tgt, lun, class)
		cum := make(map[float64]uint64, len(c.buckets))
		var acc uint64
		for j, b := range c.buckets {
			acc += cs.Latency.Counts[j]
			cum[b] = acc
		}
		ch <- prometheus.MustNewConstHistogram(descDuration, cs.Latency.Count, cs.Latency.Sum, cum, tgt, lun, class)
	}
	ch <- prometheus.MustNewConstMetric(descReadBytes, prometheus.CounterValue, float64(lu.Classes[scsi.ClassRead].Bytes), tgt, lun)
	ch <- prometheus.MustNewConstMetric(descWrittenBytes, prometheus.CounterValue, float64(lu.Classes[scsi.ClassWrite].Bytes), tgt, lun)
	for k, n := range lu.Errors {
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n), tgt, lun, senseKeyLabels[k])
	}
	ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.CounterValue, float64(lu.ReservationConflicts), tgt, lun)
	ch <- prometheus.MustNewConstMetric(descPRRegs, prometheus.GaugeValue, float64(lu.PRRegistrations), tgt, lun)
	ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, b2f(lu.PRReserved), tgt, lun, "persistent")
	ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, b2f(lu.SPC2Reserved), tgt, lun, "spc2")
	ch <- prometheus.MustNewConstMetric(descBusy, prometheus.CounterValue, float64(lu.Busy), tgt, lun)
	ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(lu.CapacityBytes), tgt, lun)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewRegistry returns a registry with the server's collector and the Go
// runtime and process collectors.
func NewRegistry(srv *target.Server, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(srv, version),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
