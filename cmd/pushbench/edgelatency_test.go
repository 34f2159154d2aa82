package main

import (
	"math"
	"strings"
	"testing"
)

// Two scrapes of an edge's /metrics, as promhttp writes them, around a window in which it timed 200 writes: 100 in
// the first bucket, none in the second, 98 in the third, 2 beyond the last bound.
const (
	scrapeAtStart = `# HELP livepush_delivery_latency_seconds From the payload's ts (publish) to the write to the subscriber.
# TYPE livepush_delivery_latency_seconds histogram
livepush_delivery_latency_seconds_bucket{le="0.001"} 10
livepush_delivery_latency_seconds_bucket{le="0.01"} 20
livepush_delivery_latency_seconds_bucket{le="0.1"} 20
livepush_delivery_latency_seconds_bucket{le="+Inf"} 20
livepush_delivery_latency_seconds_sum 0.05
livepush_delivery_latency_seconds_count 20
process_cpu_seconds_total 1.5
`
	scrapeAtEnd = `# TYPE livepush_delivery_latency_seconds histogram
livepush_delivery_latency_seconds_bucket{le="0.001"} 110
livepush_delivery_latency_seconds_bucket{le="0.01"} 120
livepush_delivery_latency_seconds_bucket{le="0.1"} 218
livepush_delivery_latency_seconds_bucket{le="+Inf"} 220
livepush_delivery_latency_seconds_sum 9.5
livepush_delivery_latency_seconds_count 220
`
)

func mustParseHist(t *testing.T, text string) promHist {
	t.Helper()
	h, err := parseHist(strings.NewReader(text), edgeLatencyMetric)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestEdgeLatencyQuantiles(t *testing.T) {
	start, end := mustParseHist(t, scrapeAtStart), mustParseHist(t, scrapeAtEnd)
	d, err := histDelta([]promHist{start}, []promHist{end})
	if err != nil {
		t.Fatal(err)
	}
	if d.count != 200 || d.counts[1] != d.counts[0] || !math.IsInf(d.bounds[3], 1) {
		t.Fatalf("delta %+v", d)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.25, 0.0005},                 // rank 50 of the first bucket's 100: halfway from 0 to its bound
		{0.5, 0.001},                   // rank 100: the first bucket's bound, not the empty one after it
		{0.9, 0.01 + 0.09*80/98},       // rank 180: 80 of the third bucket's 98
		{0.995, 0.1},                   // rank 199 is beyond the last bound: that bound
		{0.999, 0.1},                   // and so is anything higher
		{1.0 / 200, 0.001 * 1.0 / 100}, // the first write
	} {
		if got := d.quantile(c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("quantile(%g) = %g, want %g", c.q, got, c.want)
		}
	}

	// Two such edges: twice the writes, the same quantiles; in milliseconds, as the report has them.
	var r Report
	r.edgeLatency(edgeHists{hists: []promHist{start, start}}, edgeHists{hists: []promHist{end, end}})
	if e := r.EdgeLatency; e.Count != 400 || e.Error != "" || math.Abs(e.P50-1) > 1e-9 ||
		math.Abs(e.P90-(10+90*80.0/98)) > 1e-9 || math.Abs(e.P99-100) > 1e-9 {
		t.Errorf("edge latency %+v", e)
	}
}

// The run never fails for want of the edges' figures: the row says why there are none.
func TestEdgeLatencyUnavailable(t *testing.T) {
	start, end := mustParseHist(t, scrapeAtStart), mustParseHist(t, scrapeAtEnd)
	for _, c := range []struct {
		name       string
		start, end []promHist
		want       string
	}{
		{"no writes in the window", []promHist{end}, []promHist{end}, "no write timed"},
		{"restarted", []promHist{end}, []promHist{start}, "went down"},
		{"other buckets", []promHist{start}, []promHist{{bounds: []float64{1, math.Inf(1)}, counts: []float64{0, 0}}},
			"different buckets"},
	} {
		var r Report
		r.edgeLatency(edgeHists{hists: c.start}, edgeHists{hists: c.end})
		if e := r.EdgeLatency; !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %+v, want an error saying %q", c.name, e, c.want)
		}
	}

	// An edge without the histogram, or one written badly.
	for _, text := range []string{
		"process_cpu_seconds_total 1.5\n",
		strings.ReplaceAll(scrapeAtStart, `{le="+Inf"}`, `{le="+Inf}`),
		strings.ReplaceAll(scrapeAtStart, `le="+Inf"`, `le="1e9"`),
	} {
		if h, err := parseHist(strings.NewReader(text), edgeLatencyMetric); err == nil {
			t.Errorf("parsed %+v from\n%s", h, text)
		}
	}

	// Edges sharing one port answer /metrics at random.
	cfg := &Config{URLs: []string{"http://127.0.0.1:1"}, EdgePIDs: []int{10, 11}}
	if _, err := edgeLatencyURLs(cfg); err == nil {
		t.Error("two -edge-pid behind one -url: no error")
	}
	cfg.EdgePIDs = cfg.EdgePIDs[:1]
	if urls, err := edgeLatencyURLs(cfg); err != nil || len(urls) != 1 || urls[0] != "http://127.0.0.1:1/metrics" {
		t.Errorf("urls %v, %v", urls, err)
	}
}
