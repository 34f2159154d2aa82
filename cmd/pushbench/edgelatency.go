package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The edges time each write themselves: livepush_delivery_latency_seconds, from the payload's ts to the write, once
// per write (its oldest update). pushbench reads it at both ends of the measured window. Beside the client's latency
// it tells the edge's time apart from the time the update then waited in the socket for the subscriber to read it:
// on a box the generator shares with the edge, that wait can be most of the client's figure.

const edgeLatencyMetric = "livepush_delivery_latency_seconds"

// edgeLatency is the report's view of the edges' histogram over the measured window, in milliseconds as
// latencySummary's.
type edgeLatency struct {
	Count uint64  `json:"count"` // writes timed, all edges together
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Error string  `json:"error,omitempty"` // why there are no figures
}

// promHist is one Prometheus histogram as its text format has it.
type promHist struct {
	bounds []float64 // upper bounds (le), ascending, +Inf last
	counts []float64 // cumulative: observations ≤ bounds[i]
	count  float64   // _count
}

// edgeHists is one scrape of every edge's histogram.
type edgeHists struct {
	hists []promHist
	err   error
}

// edgeLatencyURLs are the edges' metrics endpoints: -metrics-url, or each -url's /metrics.
func edgeLatencyURLs(cfg *Config) ([]string, error) {
	if len(cfg.MetricsURLs) > 0 {
		return cfg.MetricsURLs, nil
	}
	// Edges sharing a port (SO_REUSEPORT) answer a scrape one at a time, at random: two scrapes would not subtract.
	if len(cfg.EdgePIDs) > len(cfg.URLs) {
		return nil, fmt.Errorf("%d edge processes behind %d URL(s) answer /metrics at random", len(cfg.EdgePIDs),
			len(cfg.URLs))
	}
	var urls []string
	for _, u := range cfg.URLs {
		urls = append(urls, u+"/metrics")
	}
	return urls, nil
}

// scrapeEdgeHists reads the histogram of every edge.
func scrapeEdgeHists(ctx context.Context, client *http.Client, cfg *Config) edgeHists {
	urls, err := edgeLatencyURLs(cfg)
	if err != nil {
		return edgeHists{err: err}
	}
	var s edgeHists
	for _, u := range urls {
		h, err := scrapeHist(ctx, client, u)
		if err != nil {
			return edgeHists{err: err}
		}
		s.hists = append(s.hists, h)
	}
	return s
}

func scrapeHist(ctx context.Context, client *http.Client, u string) (promHist, error) {
	body, err := getMetrics(ctx, client, u)
	if err != nil {
		return promHist{}, err
	}
	defer body.Close()
	h, err := parseHist(body, edgeLatencyMetric)
	if err != nil {
		return promHist{}, fmt.Errorf("%s: %w", u, err)
	}
	return h, nil
}

// parseHist reads histogram name, which has no labels but le, from Prometheus text.
func parseHist(r io.Reader, name string) (promHist, error) {
	var h promHist
	byLE := map[float64]float64{}
	hasCount := false
	sc := metricsScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+`_bucket{le="`); ok {
			le, v, ok := strings.Cut(rest, `"} `)
			if !ok {
				return h, fmt.Errorf("unexpected line %q", line)
			}
			bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" too
			n, err2 := sampleValue(v)
			if err1 != nil || err2 != nil {
				return h, fmt.Errorf("unexpected line %q", line)
			}
			byLE[bound] = n
		} else if v, ok := strings.CutPrefix(line, name+"_count "); ok {
			n, err := sampleValue(v)
			if err != nil {
				return h, fmt.Errorf("unexpected line %q", line)
			}
			h.count, hasCount = n, true
		}
	}
	if err := sc.Err(); err != nil {
		return h, err
	}
	if len(byLE) == 0 || !hasCount {
		return h, fmt.Errorf("no %s", name)
	}
	h.bounds = slices.Sorted(maps.Keys(byLE))
	if len(h.bounds) < 2 || !math.IsInf(h.bounds[len(h.bounds)-1], 1) {
		return h, fmt.Errorf("%s: no +Inf bucket or none below it", name)
	}
	for _, b := range h.bounds {
		h.counts = append(h.counts, byLE[b])
	}
	return h, nil
}

// sampleValue is the value of a sample line's rest: the number, maybe followed by a timestamp.
func sampleValue(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, errors.New("no value")
	}
	return strconv.ParseFloat(f[0], 64)
}

// histDelta is what the edges observed between two scrapes, all edges added up.
func histDelta(start, end []promHist) (promHist, error) {
	if len(start) != len(end) || len(end) == 0 {
		return promHist{}, errors.New("not every edge was scraped twice")
	}
	d := promHist{bounds: end[0].bounds, counts: make([]float64, len(end[0].bounds))}
	for i := range end {
		if !slices.Equal(start[i].bounds, d.bounds) || !slices.Equal(end[i].bounds, d.bounds) {
			return promHist{}, errors.New("the edges' histograms have different buckets")
		}
		if end[i].count < start[i].count {
			// A restart, or another process answering at the same address.
			return promHist{}, errors.New("an edge's count went down during the window")
		}
		d.count += end[i].count - start[i].count
		for j := range d.counts {
			d.counts[j] += end[i].counts[j] - start[i].counts[j]
		}
	}
	return d, nil
}

// quantile is Prometheus's histogram_quantile: the bucket the rank q·total falls in, interpolated linearly from
// its lower bound (0 for the first bucket); in the +Inf bucket, the highest finite bound. h must have observations.
func (h promHist) quantile(q float64) float64 {
	rank := q * h.counts[len(h.counts)-1]
	i, _ := slices.BinarySearch(h.counts, rank) // the first bucket holding at least rank
	if i >= len(h.bounds)-1 {
		return h.bounds[len(h.bounds)-2]
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.bounds[i-1], h.counts[i-1]
	}
	return lo + (h.bounds[i]-lo)*(rank-below)/(h.counts[i]-below)
}

// edgeLatency fills in the edges' latency between the scrapes at the start and the end of the measured window.
func (r *Report) edgeLatency(start, end edgeHists) {
	e := &edgeLatency{}
	r.EdgeLatency = e
	if err := cmpErr(start.err, end.err); err != nil {
		e.Error = err.Error()
		return
	}
	d, err := histDelta(start.hists, end.hists)
	if err != nil {
		e.Error = err.Error()
		return
	}
	e.Count = uint64(d.count)
	if d.counts[len(d.counts)-1] == 0 {
		e.Error = "no write timed in the measured window"
		return
	}
	e.P50, e.P90, e.P99 = 1e3*d.quantile(0.5), 1e3*d.quantile(0.9), 1e3*d.quantile(0.99)
}
