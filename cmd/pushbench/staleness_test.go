package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Staleness is how long the value a subscriber holds has been superseded: zero while it holds the newest, else
// the time since the first update it lacks was published; topics with nothing published yet are not sampled.
func TestStalenessSampling(t *testing.T) {
	cfg := &Config{Symbols: 3}
	var s staleness
	st := newLiveStats(0)
	two := s.newView(cfg, []string{"market.B0000", "market.B0001", "market.OTHER"})
	all := s.newView(cfg, []string{"market.*"})
	if len(two.topics) != 2 || len(all.topics) != 3 {
		t.Fatalf("views follow %v and %v, want 2 and 3 of the publisher's subjects", two.topics, all.topics)
	}
	sec := func(f float64) int64 { return int64(f * float64(time.Second)) }
	var batch published
	batch.add(0, 1, sec(1))
	batch.add(0, 2, sec(2))
	batch.add(1, 1, sec(1.5))
	batch.add(0, 3, sec(3))
	line, _ := json.Marshal(batch)

	// The readers note what each connection holds, as updates arrive.
	var in interner
	tr := &tracker{view: two}
	tr.observe(&in, []byte("market.B0000"), 10, 1, true)
	tr.observe(&in, []byte("market.B0001"), 11, 1, true)
	tr.observe(&in, []byte("market.OTHER"), 12, 1, true) // not the publisher's: not sampled
	tr = &tracker{view: all}
	tr.observe(&in, []byte("market.B0000"), 13, 3, true)
	tr.observe(&in, []byte("market.B0002"), 14, 7, false) // another run's update: holds nothing of this one

	if err := s.sample(cfg, line, time.Unix(0, sec(4)), st); err != nil {
		t.Fatal(err)
	}
	// two: B0000 holds 1 of 3, superseded at 2s: 2s; B0001 holds the newest: 0. all: B0000 newest: 0; B0001 holds
	// nothing, published at 1.5s: 2.5s; B0002: nothing published, not sampled.
	h := st.snapshotStats().Staleness
	if h.Count() != 4 || h.Zeros() != 0.5 || !near(h.Max(), sec(2.5)) || !near(h.Quantile(0.5), 0) ||
		!near(h.Quantile(0.75), sec(2)) {
		t.Fatalf("samples: n %d, zeros %.2f, p50 %v, p75 %v, max %v; want 0, 0, 2s, 2.5s", h.Count(), h.Zeros(),
			time.Duration(h.Quantile(0.5)), time.Duration(h.Quantile(0.75)), time.Duration(h.Max()))
	}

	// A batch that reports nothing new still samples; an update whose publication is not reported yet counts as
	// the newest.
	hold(two.slot("market.B0000"), 4)
	line, _ = json.Marshal(published{})
	s.sample(cfg, line, time.Unix(0, sec(5)), st)
	if h := st.snapshotStats().Staleness; h.Count() != 8 || h.Zeros() != 5.0/8 || !near(h.Max(), sec(3.5)) {
		t.Fatalf("after the second sample: n %d, zeros %.3f, max %v", h.Count(), h.Zeros(), time.Duration(h.Max()))
	}

	// A sample visits at most its budget of pairs, and the next one goes on where it stopped.
	s.batch = Hist{}
	s.next = 0
	s.measure(s.views, sec(5), 2)
	s.measure(s.views, sec(5), 2)
	if s.batch.Count() != 2+2 {
		t.Errorf("two samples with a budget of 2 pairs sampled %d pairs, want the 2 of one view, then the 2 of the "+
			"other that have publications", s.batch.Count())
	}
}

// near reports whether a histogram's value is within its 0.8% precision of want.
func near(got uint64, want int64) bool {
	d := int64(got) - want
	return d <= want/100 && -d <= want/100
}

// A run reports staleness: an SSE subscriber holds the newest value nearly always; one polling every second holds
// values superseded for hundreds of milliseconds, whatever its delivery latency says.
func TestRunReportsStaleness(t *testing.T) {
	te := startEdge(t)
	report := func(args ...string) *Report {
		t.Helper()
		path := filepath.Join(t.TempDir(), "report.json")
		args = append([]string{"-url", te.url, "-nats", te.nats, "-publish-rate", "100", "-symbols", "5",
			"-topics-per-conn", "5", "-conns", "2", "-in-process", "-warmup", "1500ms", "-duration", "3s",
			"-progress", "0", "-report", path, "-edge-pid", strconv.Itoa(os.Getpid())}, args...)
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, noEnv, &stdout, &stderr); err != nil {
			t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
		if !bytes.Contains(stdout.Bytes(), []byte("staleness")) {
			t.Errorf("no staleness in the summary:\n%s", stdout.String())
		}
		var r Report
		b, _ := os.ReadFile(path)
		if err := json.Unmarshal(b, &r); err != nil || r.Staleness == nil {
			t.Fatalf("report without staleness: %v\n%s", err, b)
		}
		// 2 connections × 5 topics, every 100ms for 3s: about 300 samples.
		if n := r.Staleness.Count; n < 100 || n > 400 {
			t.Errorf("%d staleness samples over 3s, want about 300", n)
		}
		return &r
	}
	sse := report("-transport", "sse")
	poll := report("-transport", "poll", "-poll-interval", "1s")
	t.Logf("sse: %+v\npoll: %+v", *sse.Staleness, *poll.Staleness)
	if sse.Staleness.Fresh < 0.5 || sse.Staleness.P50 > 50 {
		t.Errorf("SSE subscribers: %.0f%% of samples fresh, p50 %.1fms; want most fresh", 100*sse.Staleness.Fresh,
			sse.Staleness.P50)
	}
	// 20 updates a second per topic, a poll a second: the value held is superseded 50ms after each poll at the
	// latest, for the rest of the second.
	if poll.Staleness.Fresh > 0.3 || poll.Staleness.P50 < 200 || poll.Staleness.P50 > 1200 {
		t.Errorf("polling every second: %.0f%% of samples fresh, p50 %.0fms; want few fresh, p50 around 500ms",
			100*poll.Staleness.Fresh, poll.Staleness.P50)
	}
}
