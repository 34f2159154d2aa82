package main

import (
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Stats is what a worker has counted since it started: cumulative, so a window is the difference of two snapshots
// and workers merge by adding.
type Stats struct {
	Conns         int64            `json:"conns"`          // connections this worker is to hold
	ConnsUp       int64            `json:"conns_up"`       // connected now
	Connects      int64            `json:"connects"`       // successful connects, reconnects included
	ConnectErrors map[string]int64 `json:"connect_errors"` // failed connects by kind: refused, timeout, http_503, …
	Disconnects   map[string]int64 `json:"disconnects"`    // connections that ended during the run, by kind
	Deliveries    int64            `json:"deliveries"`     // updates received
	Snapshot      int64            `json:"snapshot"`       // of which first of their topic on a fresh connection
	Gaps          int64            `json:"gaps"`           // jumps in a topic's n
	Missed        int64            `json:"missed"`         // updates those jumps skipped (polling: updates it never saw)
	Told          int64            `json:"told"`           // updates the edge's conflated notices said it skipped
	Duplicates    int64            `json:"duplicates"`     // an update received again (same cursor or same n)
	OutOfOrder    int64            `json:"out_of_order"`   // a cursor below the topic's last
	Stale         int64            `json:"stale"`          // updates of another publisher run (an old snapshot)
	Resets        int64            `json:"resets"`         // reset messages (cursor too old)
	Unchanged     int64            `json:"unchanged"`      // polling: topics answered again with nothing new
	BytesRead     int64            `json:"bytes_read"`     // at the socket, HTTP headers and framing included
	BytesWritten  int64            `json:"bytes_written"`
	Reads         int64            `json:"reads"`     // socket reads that returned data
	Requests      int64            `json:"requests"`  // HTTP requests: one per SSE or WebSocket connect, one per poll
	Latency       *Hist            `json:"latency"`   // publish → receive, ns, of updates after the baseline
	Staleness     *Hist            `json:"staleness"` // samples: how long a subscriber's value had been superseded, ns
	ConnectTime   *Hist            `json:"connect_time"`
	CPUSeconds    float64          `json:"cpu_seconds"` // of the worker process
	RSS           int64            `json:"rss"`         // of the worker process, bytes
	BaseRSS       int64            `json:"base_rss"`    // before it opened connections
	HeapInuse     int64            `json:"heap_inuse"`  // Go heap and goroutine stacks in use, after a GC (final only)
	StackInuse    int64            `json:"stack_inuse"`
}

func newStats() *Stats {
	return &Stats{ConnectErrors: map[string]int64{}, Disconnects: map[string]int64{}, Latency: &Hist{},
		Staleness: &Hist{}, ConnectTime: &Hist{}}
}

// Add adds o into s; gauges (conns, memory) add too, as they are per process.
func (s *Stats) Add(o *Stats) {
	s.Conns += o.Conns
	s.ConnsUp += o.ConnsUp
	s.Connects += o.Connects
	for k, v := range o.ConnectErrors {
		s.ConnectErrors[k] += v
	}
	for k, v := range o.Disconnects {
		s.Disconnects[k] += v
	}
	s.Deliveries += o.Deliveries
	s.Snapshot += o.Snapshot
	s.Gaps += o.Gaps
	s.Missed += o.Missed
	s.Told += o.Told
	s.Duplicates += o.Duplicates
	s.OutOfOrder += o.OutOfOrder
	s.Stale += o.Stale
	s.Resets += o.Resets
	s.Unchanged += o.Unchanged
	s.BytesRead += o.BytesRead
	s.BytesWritten += o.BytesWritten
	s.Reads += o.Reads
	s.Requests += o.Requests
	s.Latency.Merge(o.Latency)
	s.Staleness.Merge(o.Staleness)
	s.ConnectTime.Merge(o.ConnectTime)
	s.CPUSeconds += o.CPUSeconds
	s.RSS += o.RSS
	s.BaseRSS += o.BaseRSS
	s.HeapInuse += o.HeapInuse
	s.StackInuse += o.StackInuse
}

// Since returns what happened between earlier and s (two snapshots of the same workers). Gauges keep s's values.
func (s *Stats) Since(earlier *Stats) *Stats {
	d := newStats()
	d.Conns, d.ConnsUp, d.RSS, d.BaseRSS = s.Conns, s.ConnsUp, s.RSS, s.BaseRSS
	d.Connects = s.Connects - earlier.Connects
	d.ConnectErrors = diffMap(s.ConnectErrors, earlier.ConnectErrors)
	d.Disconnects = diffMap(s.Disconnects, earlier.Disconnects)
	d.Deliveries = s.Deliveries - earlier.Deliveries
	d.Snapshot = s.Snapshot - earlier.Snapshot
	d.Gaps = s.Gaps - earlier.Gaps
	d.Missed = s.Missed - earlier.Missed
	d.Told = s.Told - earlier.Told
	d.Duplicates = s.Duplicates - earlier.Duplicates
	d.OutOfOrder = s.OutOfOrder - earlier.OutOfOrder
	d.Stale = s.Stale - earlier.Stale
	d.Resets = s.Resets - earlier.Resets
	d.Unchanged = s.Unchanged - earlier.Unchanged
	d.BytesRead = s.BytesRead - earlier.BytesRead
	d.BytesWritten = s.BytesWritten - earlier.BytesWritten
	d.Reads = s.Reads - earlier.Reads
	d.Requests = s.Requests - earlier.Requests
	d.Latency = s.Latency.Since(earlier.Latency)
	d.Staleness = s.Staleness.Since(earlier.Staleness)
	d.ConnectTime = s.ConnectTime.Since(earlier.ConnectTime)
	d.CPUSeconds = s.CPUSeconds - earlier.CPUSeconds
	return d
}

func diffMap(now, before map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range now {
		if v -= before[k]; v != 0 {
			d[k] = v
		}
	}
	return d
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// liveStats is what a worker's connections count into, concurrently.
type liveStats struct {
	conns                                          int64
	connsUp, connects                              atomic.Int64
	deliveries, snapshot, gaps, missed, duplicates atomic.Int64
	told                                           atomic.Int64
	outOfOrder, stale, resets, unchanged           atomic.Int64
	bytesRead, bytesWritten, requests, reads       atomic.Int64
	latency, connectTime                           liveHist
	mu                                             sync.Mutex
	connectErrors, disconnects                     map[string]int64
	baseRSS                                        int64
	staleMu                                        sync.Mutex
	staleness                                      Hist // staleness samples, recorded a batch at a time
}

func newLiveStats(conns int) *liveStats {
	return &liveStats{conns: int64(conns), connectErrors: map[string]int64{}, disconnects: map[string]int64{},
		baseRSS: rss()}
}

func (l *liveStats) connectError(kind string) {
	l.mu.Lock()
	l.connectErrors[kind]++
	l.mu.Unlock()
}

func (l *liveStats) disconnect(kind string) {
	l.mu.Lock()
	l.disconnects[kind]++
	l.mu.Unlock()
}

func (l *liveStats) snapshotStats() *Stats {
	s := &Stats{
		Conns: l.conns, ConnsUp: l.connsUp.Load(), Connects: l.connects.Load(),
		Deliveries: l.deliveries.Load(), Snapshot: l.snapshot.Load(), Gaps: l.gaps.Load(), Missed: l.missed.Load(),
		Told:       l.told.Load(),
		Duplicates: l.duplicates.Load(), OutOfOrder: l.outOfOrder.Load(), Stale: l.stale.Load(),
		Resets: l.resets.Load(), Unchanged: l.unchanged.Load(), BytesRead: l.bytesRead.Load(),
		BytesWritten: l.bytesWritten.Load(), Reads: l.reads.Load(), Requests: l.requests.Load(),
		Latency: l.latency.snapshot(), ConnectTime: l.connectTime.snapshot(),
		CPUSeconds: selfCPU(), RSS: rss(), BaseRSS: l.baseRSS,
	}
	l.mu.Lock()
	s.ConnectErrors = maps.Clone(l.connectErrors)
	s.Disconnects = maps.Clone(l.disconnects)
	l.mu.Unlock()
	l.staleMu.Lock()
	staleness := l.staleness
	l.staleMu.Unlock()
	s.Staleness = &staleness
	return s
}

// addStaleness adds a sample's values.
func (l *liveStats) addStaleness(h *Hist) {
	l.staleMu.Lock()
	l.staleness.Merge(h)
	l.staleMu.Unlock()
}

// local is what one connection counts between two flushes into the shared counters, so that a busy connection
// touches the shared cache lines once per socket read rather than once per update.
type local struct {
	deliveries, snapshot, gaps, missed, duplicates, outOfOrder, stale, unchanged, told int64
}

func (l *liveStats) flush(c *local) {
	add := func(total *atomic.Int64, n int64) {
		if n != 0 { // most counters stay zero: skip their shared cache lines
			total.Add(n)
		}
	}
	add(&l.deliveries, c.deliveries)
	add(&l.snapshot, c.snapshot)
	add(&l.gaps, c.gaps)
	add(&l.missed, c.missed)
	add(&l.duplicates, c.duplicates)
	add(&l.outOfOrder, c.outOfOrder)
	add(&l.stale, c.stale)
	add(&l.unchanged, c.unchanged)
	add(&l.told, c.told)
	*c = local{}
}

// selfCPU returns the CPU time (user and system) this process has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// rss returns this process's resident memory in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
