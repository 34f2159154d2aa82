package main

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	// Buckets tile the values without gaps or overlaps, and each is at most 1/128 of its values wide.
	next := uint64(0)
	for i := range histBuckets {
		low, w := bucketRange(i)
		if low != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, low, next)
		}
		if bucketOf(low) != i || bucketOf(low+w-1) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, low, low+w-1, bucketOf(low), bucketOf(low+w-1))
		}
		if low >= 256 && float64(w)/float64(low) > 1.0/128 {
			t.Fatalf("bucket %d: width %d at %d", i, w, low)
		}
		next = low + w
	}
	if next != histMax+1 {
		t.Fatalf("buckets end at %d, want %d", next, uint64(histMax+1))
	}
	if bucketOf(math.MaxUint64) != histBuckets-1 {
		t.Fatal("values beyond the range do not go to the last bucket")
	}
}

// Quantiles of two merged histograms agree with the sorted data within the buckets' precision.
func TestHistQuantilesMerged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var a, b Hist
	var all []uint64
	for i := range 200_000 {
		// Log-normal-ish latencies from 10 µs to a few seconds, with a far tail.
		v := uint64(math.Exp(r.NormFloat64()*1.5+math.Log(2e6))) + 10_000
		if i%1000 == 0 {
			v = uint64(r.Int64N(int64(60 * time.Second)))
		}
		all = append(all, v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	// The wire format loses nothing.
	var c Hist
	js, _ := json.Marshal(&b)
	if err := json.Unmarshal(js, &c); err != nil || c != b {
		t.Fatalf("JSON round trip: %v", err)
	}
	var m Hist
	m.Merge(&a)
	m.Merge(&c)
	slices.Sort(all)
	if m.Count() != uint64(len(all)) || m.Min() != all[0] || m.Max() != all[len(all)-1] {
		t.Fatalf("count %d min %d max %d, want %d %d %d", m.Count(), m.Min(), m.Max(), len(all), all[0], all[len(all)-1])
	}
	for _, q := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		want := all[max(0, int(math.Ceil(q*float64(len(all))))-1)]
		got := m.Quantile(q)
		if diff := math.Abs(float64(got)-float64(want)) / float64(want); diff > 1.0/128 {
			t.Errorf("q%g: %d, want %d (off by %.2f%%)", q, got, want, 100*diff)
		}
	}
	var sum float64
	for _, v := range all {
		sum += float64(v)
	}
	if mean := sum / float64(len(all)); math.Abs(m.Mean()-mean) > 1 {
		t.Errorf("mean %f, want %f", m.Mean(), mean)
	}
}

func TestHistSince(t *testing.T) {
	var h Hist
	for v := range uint64(1000) {
		h.Record(v * 1000)
	}
	before := h
	for v := range uint64(100) {
		h.Record(5_000_000 + v*1000)
	}
	d := h.Since(&before)
	if d.Count() != 100 || d.Quantile(0.5) < 5_000_000 || d.Max() != h.Max() || d.Min() < 5_000_000*127/128 {
		t.Fatalf("window: n=%d p50=%d min=%d max=%d", d.Count(), d.Quantile(0.5), d.Min(), d.Max())
	}
}

func TestLiveHistConcurrent(t *testing.T) {
	var l liveHist
	done := make(chan bool)
	for g := range 4 {
		go func() {
			for v := range uint64(10_000) {
				l.record(g, v+1)
			}
			done <- true
		}()
	}
	for range 4 {
		<-done
	}
	h := l.snapshot()
	if h.Count() != 40_000 || h.Min() != 1 || h.Max() != 10_000 || h.Quantile(0.5) < 4950 || h.Quantile(0.5) > 5050 {
		t.Fatalf("n=%d min=%d max=%d p50=%d", h.Count(), h.Min(), h.Max(), h.Quantile(0.5))
	}
}
