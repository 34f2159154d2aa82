package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPayloadOfOwnPublisher(t *testing.T) {
	p := &publisher{cfg: &Config{PayloadBytes: 500}, runID: "r1", subjects: []string{"market.B0001"}, n: []uint64{41}}
	before := time.Now().UnixNano()
	data, ts := p.payload(0)
	f := parsePayload(data)
	if len(data) != 500 || string(f.run) != "r1" || !f.hasN || f.n != 42 || f.ts != ts || f.ts < before ||
		f.ts > time.Now().UnixNano() {
		t.Fatalf("%s: %+v (ts %d)", data, f, ts)
	}
	if !strings.HasPrefix(string(data), `{"topic":"market.B0001","kind":"quote","symbol":"B0001","price":100.42,`) {
		t.Errorf("payload %s", data)
	}
	// A feed's payload: ts only.
	f = parsePayload([]byte(`{"topic":"market.AAPL","kind":"quote","open":1,"ts":"2026-11-25T19:30:49.5Z"}`))
	if f.hasN || f.run != nil || f.ts == 0 {
		t.Errorf("feed payload: %+v", f)
	}
}

func TestTracker(t *testing.T) {
	var in interner
	var tr tracker
	type step struct {
		topic     string
		cursor, n uint64
		checkN    bool
		want      verdict
		missed    uint64
	}
	for i, s := range []step{
		{"market.A", 10, 5, true, first, 0}, // snapshot: the baseline
		{"market.B", 11, 0, false, first, 0},
		{"market.A", 12, 6, true, inOrder, 0},
		{"market.A", 13, 9, true, gap, 2},
		{"market.A", 13, 9, true, same, 0},
		{"market.A", 12, 6, true, older, 0},
		{"market.A", 14, 9, true, repeat, 0},
		{"market.A", 15, 10, true, inOrder, 0},
		{"market.B", 16, 0, false, inOrder, 0},
		{"market.B", 17, 3, true, inOrder, 0}, // numbers start: a baseline
		{"market.B", 18, 4, true, inOrder, 0},
	} {
		v, missed := tr.observe(&in, []byte(s.topic), s.cursor, s.n, s.checkN)
		if v != s.want || missed != s.missed {
			t.Fatalf("step %d %+v: verdict %d missed %d", i, s, v, missed)
		}
	}
	// Many topics go through a map, with the same verdicts.
	var many tracker
	for round := range uint64(3) {
		for k := range 100 {
			topic := []byte("market." + symbolName(k, 100))
			v, _ := many.observe(&in, topic, round*1000+uint64(k)+1, round+1, true)
			if want := map[bool]verdict{true: first, false: inOrder}[round == 0]; v != want {
				t.Fatalf("round %d topic %d: %d, want %d", round, k, v, want)
			}
		}
	}
	if many.index == nil || len(many.topics) != 100 {
		t.Fatalf("%d topics, index %v", len(many.topics), many.index != nil)
	}
	many.reset()
	if v, _ := many.observe(&in, []byte("market.B0001"), 5000, 1, true); v != first {
		t.Fatalf("after reset: %d, want first", v)
	}
}

func TestTopicsForIsDeterministic(t *testing.T) {
	c := &Config{TopicsPerConn: 10, Symbols: 500, Seed: 7}
	a, b := c.topicsFor(3), c.topicsFor(3)
	if strings.Join(a, ",") != strings.Join(b, ",") || len(a) != 10 {
		t.Fatalf("%v vs %v", a, b)
	}
	seen := map[string]bool{}
	for _, s := range a {
		if seen[s] || !strings.HasPrefix(s, "market.B0") {
			t.Fatalf("topics %v", a)
		}
		seen[s] = true
	}
	// Every symbol gets subscribers, about evenly.
	count := map[string]int{}
	for i := range 5000 {
		for _, s := range c.topicsFor(i) {
			count[s]++
		}
	}
	if len(count) != 500 {
		t.Fatalf("%d symbols used, want 500", len(count))
	}
	for s, n := range count {
		if n < 50 || n > 160 {
			t.Errorf("%s has %d subscribers, want about 100", s, n)
		}
	}
	if c.topicsFor(0)[0] == (&Config{TopicsPerConn: 10, Symbols: 500, Seed: 8}).topicsFor(0)[0] &&
		c.topicsFor(1)[0] == (&Config{TopicsPerConn: 10, Symbols: 500, Seed: 8}).topicsFor(1)[0] {
		t.Error("the seed does not change the draw")
	}
}

func TestSourceAddresses(t *testing.T) {
	c := &Config{URLs: []string{"http://127.0.0.1:8080"}, Conns: 50_000, ConnsPerIP: 20_000}
	if err := c.resolveSources(); err != nil || len(c.sources) != 3 || c.sources[0].String() != "127.0.1.1" ||
		c.sourceFor(19_999).String() != "127.0.1.1" || c.sourceFor(20_000).String() != "127.0.1.2" ||
		c.sourceFor(49_999).String() != "127.0.1.3" {
		t.Fatalf("auto: %v %v", c.sources, err)
	}
	c.URLs = []string{"http://edge.example:8080"}
	if c.resolveSources(); c.sourceFor(0) != nil {
		t.Fatal("auto dials a remote edge from loopback")
	}
	c.SourceIPs = []string{"127.0.2.254-127.0.3.1", "127.0.9.9"}
	c.ConnsPerIP = 1
	if err := c.resolveSources(); err != nil || len(c.sources) != 5 || c.sources[2].String() != "127.0.3.0" ||
		c.sourceFor(5).String() != "127.0.2.254" {
		t.Fatalf("ranges: %v %v", c.sources, err)
	}
	for _, bad := range []string{"127.0.0.x", "127.0.0.5-127.0.0.1"} {
		c.SourceIPs = []string{bad}
		if err := c.resolveSources(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Polling sees the latest value of each topic: what it skips is counted as missed, not as gaps, and an answer
// with nothing new as unchanged, not as duplicates.
func TestPollingAccounting(t *testing.T) {
	cs := &conns{run: "r", st: newLiveStats(1)}
	var tr tracker
	var loc local
	payload := func(n int) []byte {
		return []byte(fmt.Sprintf(`{"topic":"market.A","run":"r","n":%d,"ts":"%s"}`, n,
			time.Now().UTC().Format(time.RFC3339Nano)))
	}
	for _, step := range []struct {
		cursor uint64
		n      int
	}{{10, 1}, {10, 1}, {15, 4}, {20, 5}, {20, 5}} {
		cs.observe(0, &tr, &loc, []byte("market.A"), step.cursor, payload(step.n), true)
	}
	cs.st.flush(&loc)
	s := cs.st.snapshotStats()
	if s.Deliveries != 3 || s.Snapshot != 1 || s.Missed != 2 || s.Gaps != 0 || s.Unchanged != 2 || s.Duplicates != 0 ||
		s.Latency.Count() != 2 {
		t.Fatalf("%+v", s)
	}
}

// BenchmarkParsePayload is what pushbench reads in each update it receives: its run, number and publish time.
func BenchmarkParsePayload(b *testing.B) {
	p := &publisher{cfg: &Config{PayloadBytes: 500}, runID: "r1", subjects: []string{"market.B0001"}, n: []uint64{41}}
	data, _ := p.payload(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if f := parsePayload(data); !f.hasN || f.ts == 0 {
			b.Fatal(f)
		}
	}
}
