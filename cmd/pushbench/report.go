package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything a run measured, as the JSON report has it. Rates and latencies are over the measured
// window; integrity counts (gaps, duplicates, errors) over the whole run.
type Report struct {
	Command     []string  `json:"command"`
	Config      *Config   `json:"config"`
	Run         string    `json:"run"`
	Started     time.Time `json:"started"`
	Interrupted bool      `json:"interrupted"`
	Host        struct {
		CPUs       int    `json:"cpus"`
		GoMaxProcs int    `json:"gomaxprocs"`
		Go         string `json:"go"`
	} `json:"host"`
	Phases struct {
		RampSeconds    float64 `json:"ramp_s"`
		WarmupSeconds  float64 `json:"warmup_s"`
		MeasureSeconds float64 `json:"measure_s"`
	} `json:"phases"`
	Connections struct {
		Target        int64            `json:"target"`
		Workers       int              `json:"workers"`
		SourceIPs     int              `json:"source_ips"`
		UpAfterRamp   int64            `json:"up_after_ramp"`
		UpAtStart     int64            `json:"up_at_start"`
		UpAtEnd       int64            `json:"up_at_end"`
		RampRate      float64          `json:"connect_rate_per_s"` // connects per second during the ramp
		Connects      int64            `json:"connects"`
		ConnectErrors map[string]int64 `json:"connect_errors"`
		Disconnects   map[string]int64 `json:"disconnects"`
		ConnectTime   latencySummary   `json:"connect_time"`
	} `json:"connections"`
	Deliveries struct {
		Total       int64   `json:"total"`
		PerSecond   float64 `json:"per_s"`
		PerConnPerS float64 `json:"per_conn_per_s"`
		Snapshot    int64   `json:"snapshot_run"` // baseline updates over the run (first of each topic per connection)
		Run         int64   `json:"total_run"`
	} `json:"deliveries"`
	Latency latencySummary `json:"latency"`
	// EdgeLatency is the edges' own account of the same window (edgelatency.go): publish to their write, from their
	// metrics. What Latency adds to it is the time updates waited in the socket for the subscriber to read them.
	EdgeLatency *edgeLatency `json:"edge_latency,omitempty"`
	// Staleness is sampled over the measured window (staleness.go): for each subscriber and topic, how long the
	// value it held had been superseded; zero while it held the newest. Only with pushbench's own publisher.
	Staleness *stalenessSummary `json:"staleness,omitempty"`
	Integrity struct {
		Gaps       int64 `json:"gaps"`
		Missed     int64 `json:"missed"`
		Told       int64 `json:"told"` // of which the edge said it skipped them (conflated notices)
		Duplicates int64 `json:"duplicates"`
		OutOfOrder int64 `json:"out_of_order"`
		Stale      int64 `json:"stale"`
		Resets     int64 `json:"resets"`
		Unchanged  int64 `json:"unchanged"`
	} `json:"integrity"`
	Wire struct {
		BytesRead         int64   `json:"bytes_read"`
		BytesWritten      int64   `json:"bytes_written"`
		Requests          int64   `json:"http_requests"`
		RequestsRun       int64   `json:"http_requests_run"`       // over the whole run, connects included
		RequestsPerRun    float64 `json:"requests_per_update_run"` // the same per update delivered over the run
		BytesPerUpdate    float64 `json:"bytes_per_update"`
		RequestsPerUpdate float64 `json:"requests_per_update"`
		ReadMBps          float64 `json:"read_mb_per_s"`
		Reads             int64   `json:"reads"`
		UpdatesPerRead    float64 `json:"updates_per_read"` // how many updates each edge write carried, about
	} `json:"wire"`
	Publisher *struct {
		TargetRate float64 `json:"target_rate"`
		Rate       float64 `json:"rate"`
		Sent       int64   `json:"sent"`
		Acked      int64   `json:"acked"`
		Failed     int64   `json:"failed"`
	} `json:"publisher,omitempty"`
	CPU struct {
		EdgeSource       string   `json:"edge_source"`
		EdgeSeconds      *float64 `json:"edge_s,omitempty"`
		EdgeCores        *float64 `json:"edge_cores,omitempty"`
		EdgeMsPer1000    *float64 `json:"edge_ms_per_1000_deliveries,omitempty"`
		EdgeError        string   `json:"edge_error,omitempty"`
		NATSSeconds      *float64 `json:"nats_s,omitempty"`
		NATSCores        *float64 `json:"nats_cores,omitempty"`
		GeneratorSeconds float64  `json:"generator_s"`       // the workers' (in-process: the whole pushbench process)
		CoordinatorCores float64  `json:"coordinator_cores"` // the coordinator process: the publisher, mostly
		GeneratorCores   float64  `json:"generator_cores"`
		GenMsPer1000     float64  `json:"generator_ms_per_1000_deliveries"`
		MachineBusyCores float64  `json:"machine_busy_cores"`
		MachineBusyShare float64  `json:"machine_busy_share"`
	} `json:"cpu"`
	Memory struct {
		WorkersRSSMiB float64 `json:"workers_rss_mib"`
		KiBPerConn    float64 `json:"kib_per_conn"`          // (RSS at the end − RSS before connecting) / connections up
		KiBPerConnGC  float64 `json:"kib_per_conn_after_gc"` // the same after a garbage collection, at the stop
		HeapKiB       float64 `json:"heap_kib_per_conn"`     // Go heap in use per connection, after that collection
		StackKiB      float64 `json:"stack_kib_per_conn"`    // goroutine stacks per connection
	} `json:"memory"`
	// EdgeLag is how far each edge was behind the stream when the measured window ended: updates published (and
	// stored) that it had not received yet. An edge that lags is limited by what it takes in, not by fan-out.
	EdgeLag []edgeLag      `json:"edge_lag,omitempty"`
	Catchup *catchupReport `json:"catchup,omitempty"`
	Failed  []string       `json:"failed_checks"`
	Pass    bool           `json:"pass"`
}

func newReport(cfg *Config, args []string, started time.Time) *Report {
	r := &Report{Command: append([]string{"pushbench"}, args...), Config: cfg, Started: started.UTC(),
		Failed: []string{}}
	r.Host.CPUs, r.Host.GoMaxProcs, r.Host.Go = runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version()
	r.Connections.Target = int64(cfg.Conns)
	r.Connections.Workers = cfg.workerCount()
	r.Connections.SourceIPs = len(cfg.sources)
	return r
}

func (r *Report) ramp(s *Stats, d time.Duration) {
	r.Phases.RampSeconds = d.Seconds()
	r.Connections.UpAfterRamp = s.ConnsUp
	if d > 0 {
		r.Connections.RampRate = float64(s.Connects) / d.Seconds()
	}
}

func (r *Report) publisher(p *publisher, sentAtStart int64, measured time.Duration) {
	r.Publisher = &struct {
		TargetRate float64 `json:"target_rate"`
		Rate       float64 `json:"rate"`
		Sent       int64   `json:"sent"`
		Acked      int64   `json:"acked"`
		Failed     int64   `json:"failed"`
	}{TargetRate: p.cfg.PublishRate, Rate: float64(p.sent.Load()-sentAtStart) / measured.Seconds(),
		Sent: p.sent.Load(), Acked: p.acked.Load(), Failed: p.failed.Load()}
}

// measure fills in the window between the start and end marks, and the run's totals from final.
func (r *Report) measure(start, end, final *Stats, measured, warmup time.Duration) {
	w := end.Since(start)
	secs := measured.Seconds()
	r.Phases.WarmupSeconds, r.Phases.MeasureSeconds = warmup.Seconds(), secs
	r.Connections.UpAtStart, r.Connections.UpAtEnd = start.ConnsUp, end.ConnsUp
	r.Connections.Connects = final.Connects
	r.Connections.ConnectErrors, r.Connections.Disconnects = final.ConnectErrors, final.Disconnects
	r.Connections.ConnectTime = final.ConnectTime.summary()
	r.Deliveries.Total = w.Deliveries
	r.Deliveries.PerSecond = float64(w.Deliveries) / secs
	if end.ConnsUp > 0 {
		r.Deliveries.PerConnPerS = r.Deliveries.PerSecond / float64(end.ConnsUp)
	}
	r.Deliveries.Snapshot, r.Deliveries.Run = final.Snapshot, final.Deliveries
	r.Latency = w.Latency.summary()
	if w.Staleness.Count() > 0 {
		r.Staleness = &stalenessSummary{latencySummary: w.Staleness.summary(), Fresh: w.Staleness.Zeros()}
	}
	r.Integrity.Gaps, r.Integrity.Missed, r.Integrity.Told = final.Gaps, final.Missed, final.Told
	r.Integrity.Duplicates, r.Integrity.OutOfOrder = final.Duplicates, final.OutOfOrder
	r.Integrity.Stale, r.Integrity.Resets, r.Integrity.Unchanged = final.Stale, final.Resets, final.Unchanged
	r.Wire.BytesRead, r.Wire.BytesWritten, r.Wire.Requests = w.BytesRead, w.BytesWritten, w.Requests
	if w.Deliveries > 0 {
		r.Wire.BytesPerUpdate = float64(w.BytesRead) / float64(w.Deliveries)
		r.Wire.RequestsPerUpdate = float64(w.Requests) / float64(w.Deliveries)
	}
	r.Wire.ReadMBps = float64(w.BytesRead) / secs / 1e6
	r.Wire.Reads = w.Reads
	if w.Reads > 0 {
		r.Wire.UpdatesPerRead = float64(w.Deliveries) / float64(w.Reads)
	}
	r.Wire.RequestsRun = final.Requests
	if final.Deliveries > 0 {
		r.Wire.RequestsPerRun = float64(final.Requests) / float64(final.Deliveries)
	}
	r.CPU.GeneratorSeconds = w.CPUSeconds
	r.CPU.GeneratorCores = w.CPUSeconds / secs
	if w.Deliveries > 0 {
		r.CPU.GenMsPer1000 = w.CPUSeconds * 1e3 / float64(w.Deliveries) * 1000
	}
	r.Memory.WorkersRSSMiB = float64(end.RSS) / (1 << 20)
	if end.ConnsUp > 0 {
		r.Memory.KiBPerConn = float64(end.RSS-end.BaseRSS) / 1024 / float64(end.ConnsUp)
	}
	if n := float64(final.ConnsUp); n > 0 {
		r.Memory.KiBPerConnGC = float64(final.RSS-final.BaseRSS) / 1024 / n
		r.Memory.HeapKiB = float64(final.HeapInuse) / 1024 / n
		r.Memory.StackKiB = float64(final.StackInuse) / 1024 / n
	}
}

func (r *Report) cpu(a, b cpuSample, source string) {
	secs := b.at.Sub(a.at).Seconds()
	r.CPU.EdgeSource = source
	if a.edgeErr == nil && b.edgeErr == nil {
		e := b.edge - a.edge
		cores := e / secs
		r.CPU.EdgeSeconds, r.CPU.EdgeCores = &e, &cores
		if r.Deliveries.Total > 0 {
			per := e * 1e3 / float64(r.Deliveries.Total) * 1000
			r.CPU.EdgeMsPer1000 = &per
		}
	} else if err := cmpErr(a.edgeErr, b.edgeErr); err != nil {
		r.CPU.EdgeError = err.Error()
	}
	if a.natsErr == nil && b.natsErr == nil {
		n := b.nats - a.nats
		cores := n / secs
		r.CPU.NATSSeconds, r.CPU.NATSCores = &n, &cores
	}
	if all := b.machineAll - a.machineAll; all > 0 {
		r.CPU.MachineBusyCores = (b.machineBusy - a.machineBusy) / secs
		r.CPU.MachineBusyShare = (b.machineBusy - a.machineBusy) / all
	}
}

type edgeLag struct {
	URL    string `json:"url"`
	Stream uint64 `json:"stream_last"`
	Edge   uint64 `json:"edge_head"`
	Behind int64  `json:"behind"`
	Error  string `json:"error,omitempty"`
}

// edgeLag compares the stream's last sequence with each edge's head (its /readyz cursor).
func (r *Report) edgeLag(ctx context.Context, client *http.Client, p *publisher, urls []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	last, err := p.streamLast(ctx)
	for _, u := range urls {
		l := edgeLag{URL: u, Stream: last}
		if err != nil {
			l.Error = err.Error()
		} else if l.Edge, err = edgeHead(ctx, client, u); err != nil {
			l.Error = err.Error()
		} else {
			l.Behind = max(0, int64(last)-int64(l.Edge)) // the edge may have moved on since the stream was asked
		}
		r.EdgeLag = append(r.EdgeLag, l)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// check applies -strict, -max-p99 and -min-rate.
func (r *Report) check(cfg *Config) {
	fail := func(format string, args ...any) { r.Failed = append(r.Failed, fmt.Sprintf(format, args...)) }
	if cfg.Strict {
		if r.Connections.UpAtStart < r.Connections.Target || r.Connections.UpAtEnd < r.Connections.Target {
			fail("connections up %d at start, %d at end, of %d", r.Connections.UpAtStart, r.Connections.UpAtEnd,
				r.Connections.Target)
		}
		if n := sum(r.Connections.ConnectErrors); n > 0 {
			fail("%d connect errors %v", n, r.Connections.ConnectErrors)
		}
		if n := sum(r.Connections.Disconnects); n > 0 {
			fail("%d connections dropped %v", n, r.Connections.Disconnects)
		}
		if r.Deliveries.Total == 0 {
			fail("no update delivered in the measured window")
		}
		if cfg.Transport != trPoll && r.Integrity.Gaps > 0 {
			fail("%d gaps (%d updates missing)", r.Integrity.Gaps, r.Integrity.Missed)
		}
		if r.Integrity.Duplicates+r.Integrity.OutOfOrder > 0 {
			fail("%d duplicates, %d out of order", r.Integrity.Duplicates, r.Integrity.OutOfOrder)
		}
		if r.Publisher != nil && r.Publisher.Failed > 0 {
			fail("%d publishes failed", r.Publisher.Failed)
		}
		if r.Interrupted {
			fail("interrupted")
		}
		if r.CPU.EdgeSource == "proc" && r.CPU.EdgeError != "" {
			// The edge measured is gone: whatever answered on -url was something else, or nothing was.
			fail("edge process: %s", r.CPU.EdgeError)
		}
	}
	if cfg.MaxP99 > 0 && r.Latency.P99 > ms(uint64(cfg.MaxP99)) {
		fail("p99 %.1fms above %v", r.Latency.P99, cfg.MaxP99)
	}
	if cfg.MinRate > 0 && r.Deliveries.PerSecond < cfg.MinRate {
		fail("%.0f deliveries/s below %.0f", r.Deliveries.PerSecond, cfg.MinRate)
	}
	r.Pass = len(r.Failed) == 0
}

// write prints the table (unless the JSON goes to stdout) and writes the JSON report.
func (r *Report) write(cfg *Config, stdout io.Writer) error {
	if cfg.Report != "-" {
		r.table(stdout)
	}
	if cfg.Report == "" {
		return nil
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if cfg.Report == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(cfg.Report, b, 0o644)
}

func (r *Report) table(w io.Writer) {
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(t, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	c := r.Config
	topics := fmt.Sprintf("%d of %d symbols", c.TopicsPerConn, c.Symbols)
	if len(c.Patterns) > 0 {
		topics = strings.Join(c.Patterns, " ")
	}
	fmt.Fprintf(w, "\npushbench %s  run %s  %s\n", strings.Join(r.Command[1:], " "), r.Run,
		r.Started.Format(time.RFC3339))
	if cu := r.Catchup; cu != nil {
		cu.rows(row)
		r.verdict(row)
		t.Flush()
		return
	}
	row("transport", "%s, %s per connection, %d edge URL(s)", c.Transport, topics, len(c.URLs))
	row("connections", "%d/%d up at start, %d at end  (%d workers, %d source IPs)", r.Connections.UpAtStart,
		r.Connections.Target, r.Connections.UpAtEnd, r.Connections.Workers, r.Connections.SourceIPs)
	row("connect", "%.0f/s over %.1fs, %d connects, p50 %.1fms p99 %.1fms", r.Connections.RampRate,
		r.Phases.RampSeconds, r.Connections.Connects, r.Connections.ConnectTime.P50, r.Connections.ConnectTime.P99)
	row("errors", "connect %s  dropped %s", kinds(r.Connections.ConnectErrors), kinds(r.Connections.Disconnects))
	if p := r.Publisher; p != nil {
		row("published", "%s/s (target %s/s), %d sent, %d acked, %d failed", thousands(p.Rate),
			thousands(p.TargetRate), p.Sent, p.Acked, p.Failed)
	}
	row("deliveries", "%s/s over %.1fs (%s per connection per s), %s in total", thousands(r.Deliveries.PerSecond),
		r.Phases.MeasureSeconds, fmt.Sprintf("%.1f", r.Deliveries.PerConnPerS), thousands(float64(r.Deliveries.Total)))
	l := r.Latency
	row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)", msStr(l.P50), msStr(l.P90), msStr(l.P99),
		msStr(l.P999), msStr(l.Max), l.Count)
	if e := r.EdgeLatency; e != nil && e.Error != "" {
		row("edge latency", "n/a (%s)", e.Error)
	} else if e != nil {
		row("edge latency", "p50 %s  p90 %s  p99 %s  (publish → write, from the edges' metrics, n=%d writes)",
			msStr(e.P50), msStr(e.P90), msStr(e.P99), e.Count)
	}
	if s := r.Staleness; s != nil {
		row("staleness", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d samples, %.1f%% fresh)", staleStr(s.P50),
			staleStr(s.P90), staleStr(s.P99), staleStr(s.P999), staleStr(s.Max), s.Count, 100*s.Fresh)
	} else {
		row("staleness", "n/a (needs pushbench's own publisher: -publish-rate)")
	}
	g := r.Integrity
	integrity := fmt.Sprintf("gaps %d (missing %d, conflated notices said %d)  duplicates %d  out of order %d  stale %d  resets %d",
		g.Gaps, g.Missed, g.Told, g.Duplicates, g.OutOfOrder, g.Stale, g.Resets)
	if c.Transport == trPoll {
		integrity = fmt.Sprintf("not seen by polling %d  unchanged answers %d  duplicates %d  out of order %d",
			g.Missed, g.Unchanged, g.Duplicates, g.OutOfOrder)
	}
	row("integrity", "%s", integrity)
	row("wire", "%.0f bytes and %.4f HTTP requests per update (%.4f over the whole run); %.1f MB/s read, %.1f updates per read",
		r.Wire.BytesPerUpdate, r.Wire.RequestsPerUpdate, r.Wire.RequestsPerRun, r.Wire.ReadMBps, r.Wire.UpdatesPerRead)
	edge := "n/a (" + r.CPU.EdgeError + ")"
	if r.CPU.EdgeSeconds != nil {
		edge = fmt.Sprintf("%.2f cores", *r.CPU.EdgeCores)
		if r.CPU.EdgeMsPer1000 != nil {
			edge += fmt.Sprintf(", %.3f ms per 1,000 deliveries", *r.CPU.EdgeMsPer1000)
		}
		edge += " (" + r.CPU.EdgeSource + ")"
	}
	row("edge CPU", "%s", edge)
	if r.CPU.NATSCores != nil {
		row("NATS CPU", "%.2f cores", *r.CPU.NATSCores)
	}
	row("generator", "%.2f cores (%.3f ms per 1,000 deliveries), coordinator and publisher %.2f; machine busy ~%.2f of %d cores",
		r.CPU.GeneratorCores, r.CPU.GenMsPer1000, r.CPU.CoordinatorCores, r.CPU.MachineBusyCores, r.Host.CPUs)
	row("memory", "workers %.0f MiB RSS, %.1f KiB per connection (%.1f after a GC: heap %.1f, stacks %.1f)",
		r.Memory.WorkersRSSMiB, r.Memory.KiBPerConn, r.Memory.KiBPerConnGC, r.Memory.HeapKiB, r.Memory.StackKiB)
	for _, l := range r.EdgeLag {
		if l.Error != "" {
			row("edge lag", "%s: %s", l.URL, l.Error)
		} else {
			row("edge lag", "%s: %d updates behind the stream at the end (head %d of %d)", l.URL, l.Behind, l.Edge, l.Stream)
		}
	}
	r.verdict(row)
	t.Flush()
}

func (r *Report) verdict(row func(k, format string, args ...any)) {
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL: " + strings.Join(r.Failed, "; ")
	}
	if r.Interrupted {
		verdict += " (interrupted)"
	}
	row("result", "%s", verdict)
}

// stalenessSummary is latencySummary with the share of fresh samples.
type stalenessSummary struct {
	latencySummary
	Fresh float64 `json:"fresh_share"` // samples in which the subscriber held the newest value
}

// staleStr is msStr, but zero is a value: fresh.
func staleStr(v float64) string {
	if v == 0 {
		return "0"
	}
	return msStr(v)
}

func msStr(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 100:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
