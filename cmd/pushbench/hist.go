package main

import (
	"encoding/json"
	"errors"
	"math/bits"
	"sync/atomic"
	"time"
)

// Hist is a log-linear histogram of durations in nanoseconds, in the manner of HdrHistogram: exact below 256 ns,
// then 128 buckets per power of two, so any value is known to within 1/128 (0.8%) from 256 ns up to 2^40 ns
// (18 minutes; longer values count as that). Histograms merge exactly by adding their counts, which is how the
// workers' latencies become one.
type Hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // ns
	min    uint64
	max    uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40
	histMax     = 1<<histMaxBits - 1
	histBuckets = (histMaxBits - histSubBits + 1) * histSub
)

func bucketOf(v uint64) int {
	v = min(v, histMax)
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(v) - (histSubBits + 1)
	return e*histSub + int(v>>e)
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	e := i/histSub - 1
	return uint64(i-e*histSub) << e, 1 << e
}

// Record adds one value.
func (h *Hist) Record(v uint64) {
	v = min(v, histMax)
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += v
}

// Merge adds o's values to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Since returns the values h holds that earlier (a previous snapshot of the same histogram) did not. Its min and
// max are those of the buckets involved, clamped to h's exact ones: within 0.8%.
func (h *Hist) Since(earlier *Hist) *Hist {
	d := &Hist{}
	if earlier == nil {
		*d = *h
		return d
	}
	first, last := -1, -1
	for i := range h.counts {
		c := h.counts[i] - earlier.counts[i]
		d.counts[i] = c
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	d.n, d.sum = h.n-earlier.n, h.sum-earlier.sum
	if d.n > 0 {
		low, _ := bucketRange(first)
		hi, w := bucketRange(last)
		d.min = max(low, h.min)
		d.max = min(hi+w-1, h.max)
	}
	return d
}

// Zeros returns the share of values that are zero.
func (h *Hist) Zeros() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.counts[0]) / float64(h.n)
}

// Count returns the number of values.
func (h *Hist) Count() uint64 { return h.n }

// Max returns the largest value; Min the smallest.
func (h *Hist) Max() uint64 { return h.max }
func (h *Hist) Min() uint64 { return h.min }

// Mean returns the average value.
func (h *Hist) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}

// Quantile returns the value below which a fraction q of the values lie: the middle of the bucket holding the
// value of rank ceil(q·n), clamped to the exact min and max.
func (h *Hist) Quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.9999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			low, w := bucketRange(i)
			return min(max(low+(w-1)/2, h.min), h.max)
		}
	}
	return h.max
}

// histJSON is a histogram on the wire between workers and coordinator: only the buckets in use.
type histJSON struct {
	N       uint64   `json:"n"`
	Sum     uint64   `json:"sum"`
	Min     uint64   `json:"min"`
	Max     uint64   `json:"max"`
	Buckets []uint64 `json:"b"` // bucket, count, bucket, count, …
}

func (h *Hist) MarshalJSON() ([]byte, error) {
	j := histJSON{N: h.n, Sum: h.sum, Min: h.min, Max: h.max, Buckets: []uint64{}}
	for i, c := range h.counts {
		if c > 0 {
			j.Buckets = append(j.Buckets, uint64(i), c)
		}
	}
	return json.Marshal(j)
}

func (h *Hist) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = Hist{n: j.N, sum: j.Sum, min: j.Min, max: j.Max}
	for i := 0; i+1 < len(j.Buckets); i += 2 {
		if j.Buckets[i] >= histBuckets {
			return errors.New("histogram bucket out of range")
		}
		h.counts[j.Buckets[i]] = j.Buckets[i+1]
	}
	return nil
}

// latencySummary is how a report shows a histogram of durations, in milliseconds.
type latencySummary struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(ns uint64) float64 { return float64(ns) / float64(time.Millisecond) }

func (h *Hist) summary() latencySummary {
	return latencySummary{Count: h.n, Min: ms(h.min), Mean: h.Mean() / float64(time.Millisecond),
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.max)}
}

// liveHist is a histogram many goroutines record into at once: a few shards of atomic counters, so two cores rarely
// contend for one cache line, summed into a Hist on demand.
type liveHist struct {
	shards [histShards]histShard
	max    atomic.Uint64
	min    atomic.Uint64 // stored +1, so zero means none yet
}

const histShards = 8

type histShard struct {
	counts [histBuckets]atomic.Uint64
	sum    atomic.Uint64
	_      [64]byte
}

// record adds v to the shard of key (a connection's number).
func (l *liveHist) record(key int, v uint64) {
	v = min(v, histMax)
	s := &l.shards[key%histShards]
	s.counts[bucketOf(v)].Add(1)
	s.sum.Add(v)
	for m := l.max.Load(); v > m; m = l.max.Load() {
		if l.max.CompareAndSwap(m, v) {
			break
		}
	}
	for m := l.min.Load(); m == 0 || v+1 < m; m = l.min.Load() {
		if l.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

func (l *liveHist) snapshot() *Hist {
	h := &Hist{}
	for i := range l.shards {
		s := &l.shards[i]
		for j := range s.counts {
			c := s.counts[j].Load()
			h.counts[j] += c
			h.n += c
		}
		h.sum += s.sum.Load()
	}
	h.max = l.max.Load()
	if m := l.min.Load(); m > 0 {
		h.min = m - 1
	}
	return h
}
