package push

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the edge's Prometheus metrics. Each hub has its own registry, so several edges in one process (tests)
// do not collide. Hot-path counters are resolved once per subscriber, so counting a delivery is one atomic add.
type metrics struct {
	registry *prometheus.Registry

	connections      *prometheus.GaugeVec   // open, by transport
	connectionsTotal *prometheus.CounterVec // opened, by transport
	disconnects      *prometheus.CounterVec // closed by the edge, by reason
	refused          *prometheus.CounterVec // connections refused, by reason
	deliveries       *prometheus.CounterVec // updates written, by transport
	writes           *prometheus.CounterVec // socket writes (flushes, frames), by transport
	conflated        prometheus.Counter
	fanOutConflated  *prometheus.CounterVec // updates a shard's fan-out skipped to catch up, by shard
	replays          *prometheus.CounterVec // resumes, by source: memory, stream
	resets           prometheus.Counter
	latency          prometheus.Histogram
	requests         *prometheus.CounterVec // HTTP API requests, by route and status
	historyReads     *prometheus.CounterVec // history cache extensions, by source: memory, stream
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "livepush_connections", Help: "Open subscriber connections (long polls included while they wait)."},
			[]string{"transport"}),
		connectionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_connections_total", Help: "Subscriber connections opened."}, []string{"transport"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_disconnects_total",
			Help: "Connections ended by the edge or the client, by reason (slow_consumer, server_restart, client_gone, …)."},
			[]string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_refused_total", Help: "Connections or requests refused by a limit, by reason."},
			[]string{"reason"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_deliveries_total", Help: "Updates written to subscribers."}, []string{"transport"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_writes_total",
			Help: "Socket writes to subscribers: several updates leave in one write when they wait together."},
			[]string{"transport"}),
		conflated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepush_conflated_total",
			Help: "Updates dropped from slow subscribers' queues because a newer one of the same topic replaced them."}),
		fanOutConflated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_fanout_conflated_total",
			Help: "Updates a shard's fan-out skipped, delivering the newest value of their topic instead, because it had fallen further behind than the latency budget (the edge was busy); each shard counts for its own subscribers."},
			[]string{"shard"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_resumes_total", Help: "Resumes from a cursor, by where the catch-up came from."},
			[]string{"source"}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepush_resets_total", Help: "Resumes from a cursor older than the stream keeps (a snapshot was sent)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livepush_delivery_latency_seconds",
			Help:    "From the payload's ts (publish) to the write to the subscriber, sampled once per write (its oldest update).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .015, .025, .05, .075, .1, .15, .2, .25, .3, .4, .5, .75, 1, 1.5, 2.5, 5, 10, 30},
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_http_requests_total", Help: "HTTP requests, by route and status code."},
			[]string{"route", "code"}),
		historyReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepush_history_reads_total",
			Help: "Reads for /api/history, by where they came from: memory (recent updates) or stream."},
			[]string{"source"}),
	}
	m.registry.MustRegister(m.connections, m.connectionsTotal, m.disconnects, m.refused, m.deliveries, m.writes,
		m.conflated, m.fanOutConflated, m.replays, m.resets, m.latency, m.requests, m.historyReads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// gauge registers a value read at scrape time.
func (m *metrics) gauge(name, help string, f func() float64) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// subscriberMetrics are one subscriber's counters, resolved once.
type subscriberMetrics struct {
	deliveries prometheus.Counter
	writes     prometheus.Counter
	latency    prometheus.Histogram
}

func (m *metrics) forTransport(transport string) subscriberMetrics {
	return subscriberMetrics{
		deliveries: m.deliveries.WithLabelValues(transport),
		writes:     m.writes.WithLabelValues(transport),
		latency:    m.latency,
	}
}

// written counts a write of batch.
func (sm subscriberMetrics) written(batch []*Update, now time.Time) {
	n := 0
	var oldest time.Time
	for _, u := range batch {
		if u.Topic != "" {
			if n == 0 {
				oldest = u.Published
			}
			n++
		}
	}
	if n == 0 {
		return
	}
	sm.deliveries.Add(float64(n))
	sm.writes.Inc()
	if !oldest.IsZero() {
		sm.latency.Observe(now.Sub(oldest).Seconds())
	}
}
