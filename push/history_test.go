package push

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/subscriber/wire"
)

// historyAnswer is /api/history's answer.
type historyAnswer struct {
	Topic    string `json:"topic"`
	Cursor   string `json:"cursor"`
	Reset    bool   `json:"reset"`
	Interval string `json:"interval"`
	Updates  []struct {
		Type   string          `json:"type"`
		Topic  string          `json:"topic"`
		Cursor string          `json:"cursor"`
		Data   json.RawMessage `json:"data"`
	} `json:"updates"`
	Bars []struct {
		T                      string
		Open, High, Low, Close float64
		N                      int
		First, Last            string
	} `json:"bars"`
	Unknown []string `json:"unknown"`
}

func (a historyAnswer) cursors(t *testing.T) []uint64 {
	t.Helper()
	var out []uint64
	for _, u := range a.Updates {
		if u.Type != "update" || u.Topic != a.Topic {
			t.Errorf("history update %+v: want type update and topic %s", u, a.Topic)
		}
		out = append(out, mustCursor(t, u.Cursor))
	}
	return out
}

// history asks the edge for query and decodes a 200 answer; any other status fails the test.
func history(t *testing.T, e *testEdge, query string) historyAnswer {
	t.Helper()
	status, body, _ := getJSON(t, e.url+"/api/history?"+query)
	if status != http.StatusOK {
		t.Fatalf("GET /api/history?%s: %d %s", query, status, body)
	}
	var a historyAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("GET /api/history?%s: %v in %s", query, err, body)
	}
	return a
}

// TestHistoryJoinsLiveWithNoGapNoDuplicate: a chart subscribes to a topic, asks for its history, and takes from the
// live stream only what comes after the history's cursor: together they hold every update of the topic the stream
// holds, each once, while publishing goes on. The history is read from the stream the first time, and later from
// the edge's memory when it reaches back far enough (or from the stream again when it does not).
func TestHistoryJoinsLiveWithNoGapNoDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		buffer int
		later  string // where the second read comes from
	}{{"memory", 0, "memory"}, {"stream", 2, "stream"}} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNATS(t)
			var mu sync.Mutex
			var published []uint64 // AAPL's cursors
			publish := func(i int) {
				c := n.publish(t, "market.AAPL", quote("AAPL"))
				mu.Lock()
				published = append(published, c)
				mu.Unlock()
				if i%2 == 0 {
					n.publish(t, "market.MSFT", quote("MSFT"))
				}
			}
			for i := range 40 {
				publish(i)
			}
			e := startEdge(t, n, Config{}, HubOptions{ReplayBuffer: tc.buffer})
			e.waitHead(t, published[len(published)-1])

			ws := dialWS(t, e.url, "", nil)
			ws.send(t, `{"type":"subscribe","id":"1","topics":["market.AAPL"]}`)
			ws.expect(t, "subscribed")
			snapshot := ws.expect(t, "update").received(t).Cursor

			// Publishing goes on while the chart reads its history.
			ctx, stop := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; ctx.Err() == nil; i++ {
					publish(i)
					time.Sleep(2 * time.Millisecond)
				}
			}()
			time.Sleep(20 * time.Millisecond)
			a := history(t, e, "topic=market.AAPL&last=1000")
			joinAt := mustCursor(t, a.Cursor)
			if joinAt < snapshot {
				t.Fatalf("history cursor %d is before the live snapshot %d: the edge answered from behind its own head", joinAt, snapshot)
			}
			chart := a.cursors(t)

			// The live updates after the join, until some 20 more have come.
			var live []uint64
			for len(live) < 20 {
				if c := ws.expect(t, "update").received(t).Cursor; c > joinAt {
					live = append(live, c)
				}
			}
			stop()
			<-done
			chart = append(chart, live...)

			mu.Lock()
			i := slices.Index(published, live[len(live)-1])
			want := published[:i+1]
			mu.Unlock()
			if !slices.Equal(chart, want) {
				t.Fatalf("history then live:\n%v\nthe stream's AAPL updates:\n%v", chart, want)
			}

			// Asked again after a cursor: exactly what came after it, read from memory or the stream.
			reads := scrape(t, e.url)[`livepush_history_reads_total{source="`+tc.later+`"}`]
			from := want[len(want)/2]
			b := history(t, e, fmt.Sprintf("topic=market.AAPL&since=%d", from))
			got := b.cursors(t)
			mu.Lock()
			want = slices.DeleteFunc(slices.Clone(published), func(c uint64) bool { return c <= from || c > mustCursor(t, b.Cursor) })
			mu.Unlock()
			if !slices.Equal(got, want) {
				t.Fatalf("since=%d:\n%v\nwant\n%v", from, got, want)
			}
			if after := scrape(t, e.url)[`livepush_history_reads_total{source="`+tc.later+`"}`]; after <= reads {
				t.Errorf("the second history read did not come from %s", tc.later)
			}
		})
	}
}

// TestHistoryBars: interval gives one bar per interval of the payloads' time stamps, with the open, high, low and
// close of their prices, how many updates it holds and their first and last cursors.
func TestHistoryBars(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	// Ten minutes into the previous hour: the ticks' three minutes never straddle an hour, whenever the test runs
	// (an hour's bar must hold them all), and they are recent enough to be plausible.
	base := time.Now().UTC().Truncate(time.Hour).Add(-50 * time.Minute)
	tick := func(sec int, price float64) uint64 {
		ts := base.Add(time.Duration(sec) * time.Second).Format(time.RFC3339Nano)
		return n.publish(t, "market.AAPL", fmt.Sprintf(`{"topic":"market.AAPL","kind":"quote","price":%g,"ts":"%s"}`, price, ts))
	}
	c := []uint64{tick(1, 10), tick(20, 12), tick(30, 9), tick(59, 11), tick(61, 20), tick(125, 30), tick(126, 31)}
	n.publish(t, "market.AAPL", `{"topic":"market.AAPL","kind":"quote","note":"no price: not in any bar"}`)
	e.waitHead(t, n.publish(t, "market.MSFT", quote("MSFT")))

	a := history(t, e, "topic=market.AAPL&interval=1m")
	type bar struct {
		t                      time.Time
		open, high, low, close float64
		n                      int
		first, last            uint64
	}
	want := []bar{
		{base, 10, 12, 9, 11, 4, c[0], c[3]},
		{base.Add(time.Minute), 20, 20, 20, 20, 1, c[4], c[4]},
		{base.Add(2 * time.Minute), 30, 31, 30, 31, 2, c[5], c[6]},
	}
	check := func(q string, a historyAnswer, want []bar) {
		t.Helper()
		if a.Interval != "1m" || len(a.Updates) != 0 {
			t.Errorf("%s: interval %q and %d updates, want 1m and bars only", q, a.Interval, len(a.Updates))
		}
		if len(a.Bars) != len(want) {
			t.Fatalf("%s: %d bars %+v, want %d", q, len(a.Bars), a.Bars, len(want))
		}
		for i, b := range a.Bars {
			w := want[i]
			at, err := time.Parse(time.RFC3339, b.T)
			if err != nil || !at.Equal(w.t) || b.Open != w.open || b.High != w.high || b.Low != w.low || b.Close != w.close ||
				b.N != w.n || mustCursor(t, b.First) != w.first || mustCursor(t, b.Last) != w.last {
				t.Errorf("%s: bar %d is %+v, want %+v", q, i, b, w)
			}
		}
	}
	check("interval=1m", a, want)
	// After a cursor, the first bar holds only what came after it: a client merges it into the bar it has.
	check("since", history(t, e, fmt.Sprintf("topic=market.AAPL&interval=1m&since=%d", c[1])),
		append([]bar{{base, 9, 11, 9, 11, 2, c[2], c[3]}}, want[1:]...))
	check("last=1", history(t, e, "topic=market.AAPL&interval=1m&last=1"), want[2:])
	if b := history(t, e, "topic=market.AAPL&interval=1h"); len(b.Bars) != 1 || b.Bars[0].N != 7 || b.Interval != "1h" {
		t.Errorf("interval=1h: %+v, want one bar of 7", b)
	}
}

// TestHistoryRefusals: what /api/history refuses, and why; an answer larger than its bounds is refused with 413
// and a way to ask for less.
func TestHistoryRefusals(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{History: HistoryOptions{MaxUpdates: 5}}, HubOptions{})
	small := startEdge(t, n, Config{History: HistoryOptions{MaxBytes: 600}}, HubOptions{})
	var c []uint64
	for range 8 {
		c = append(c, n.publish(t, "market.AAPL", quote("AAPL")))
	}
	e.waitHead(t, c[7])
	small.waitHead(t, c[7])

	for _, tc := range []struct {
		edge   *testEdge
		query  string
		status int
		code   string
		says   string
	}{
		{e, "topic=market.AAPL", 413, "too_large", "last=N"},
		{e, fmt.Sprintf("topic=market.AAPL&since=%d", c[1]), 413, "too_large", "after cursor"},
		{e, "topic=market.AAPL&last=6", 400, "bad_request", "last must be from 1 to 5"},
		{e, "topic=market.AAPL&last=0", 400, "bad_request", "last must be"},
		{e, "topic=market.AAPL&last=x", 400, "bad_request", "last must be"},
		{e, "topic=market.*&last=1", 400, "invalid_topic", "named in full"},
		{e, "topic=market.AAPL&topic=market.MSFT", 400, "bad_request", "one topic"},
		{e, "last=1", 400, "bad_request", "one topic"},
		{e, "topic=$SYS.x", 400, "invalid_topic", "public roots"},
		{e, "topic=market.AAPL&since=abc", 400, "bad_cursor", "not a stream sequence"},
		{e, "topic=market.AAPL&since=99999", 400, "bad_cursor", "ahead of the stream"},
		{e, "topic=market.AAPL&interval=500ms", 400, "bad_request", "whole number of seconds"},
		{e, "topic=market.AAPL&interval=2d", 400, "bad_request", "interval"},
		{e, "topic=market.AAPL&limit=3", 400, "bad_request", "unknown query parameter"},
		{small, "topic=market.AAPL", 413, "too_large", "interval=1m"},
		{small, "topic=market.AAPL&last=4", 413, "too_large", "bytes"},
	} {
		status, body, _ := getJSON(t, tc.edge.url+"/api/history?"+tc.query)
		var got wire.ErrorBody
		json.Unmarshal([]byte(body), &got)
		if status != tc.status || got.Code != tc.code || !strings.Contains(got.Error, tc.says) {
			t.Errorf("%s: %d %s, want %d %s saying %q", tc.query, status, body, tc.status, tc.code, tc.says)
		}
	}
	// Within the bounds, the same topic is answered.
	if got := history(t, e, "topic=market.AAPL&last=5").cursors(t); !slices.Equal(got, c[3:]) {
		t.Errorf("last=5: %v, want %v", got, c[3:])
	}
	if got := history(t, e, fmt.Sprintf("topic=market.AAPL&since=%d", c[2])).cursors(t); !slices.Equal(got, c[3:]) {
		t.Errorf("since: %v, want %v", got, c[3:])
	}
	if got := history(t, small, "topic=market.AAPL&last=2").cursors(t); !slices.Equal(got, c[6:]) {
		t.Errorf("last=2 within 600 bytes: %v, want %v", got, c[6:])
	}
	// A topic nobody publishes: an empty answer that says so, and nothing read.
	if a := history(t, e, "topic=market.NOPE&last=3"); len(a.Updates) != 0 || !slices.Equal(a.Unknown, []string{"market.NOPE"}) {
		t.Errorf("unknown topic: %+v", a)
	}
}

// TestHistoryCacheIsBoundedAndForgetsWhatTheStreamDrops: the cache stays within its bytes, the topics asked for
// least recently leaving it and read again when asked for; and the history is what the stream keeps: updates
// removed from the stream leave it, and a cursor from before them is answered with a reset.
func TestHistoryCacheIsBoundedAndForgetsWhatTheStreamDrops(t *testing.T) {
	n := startNATS(t)
	const budget = 24 << 10
	symbols := []string{"A", "B", "C", "D", "E", "F"}
	n.PublishMany(t, 40*len(symbols), func(i int) (string, string) {
		s := symbols[i%len(symbols)]
		return "market." + s, quote(s)
	})
	// Started after the publishing, the edge has none of it in memory: reading a topic's history reads the stream.
	e := startEdge(t, n, Config{History: HistoryOptions{CacheBytes: budget}}, HubOptions{})
	e.waitHead(t, n.publish(t, "market.MSFT", quote("MSFT")))
	for round := range 2 {
		for _, s := range symbols {
			if got := len(history(t, e, "topic=market."+s).Updates); got != 40 {
				t.Errorf("round %d: %s has %d updates, want 40", round, s, got)
			}
			if size := scrape(t, e.url)["livepush_history_cache_bytes"]; size > budget || size == 0 {
				t.Errorf("the cache holds %v bytes, want some, and at most %d", size, budget)
			}
		}
	}
	if reads := scrape(t, e.url)[`livepush_history_reads_total{source="stream"}`]; reads < float64(len(symbols)+3) {
		t.Errorf("%v reads of the stream for 12 answers of topics that do not all fit: evicted topics were not read again", reads)
	}

	a := history(t, e, "topic=market.A")
	str, err := n.JS.Stream(t.Context(), n.Stream.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	cut := mustCursor(t, a.Updates[20].Cursor)
	if err := str.Purge(t.Context(), jetstream.WithPurgeSequence(cut)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * boundsFresh) // the edge asks the stream for its bounds at most that often
	if got := history(t, e, "topic=market.A").cursors(t); len(got) != 20 || got[0] != mustCursor(t, a.Updates[20].Cursor) {
		t.Errorf("after the stream dropped everything before %d: %v, want the 20 updates from it", cut, got)
	}
	b := history(t, e, "topic=market.A&since="+a.Updates[2].Cursor)
	if !b.Reset || len(b.Updates) != 20 {
		t.Errorf("since a cursor the stream no longer keeps: reset %v and %d updates, want a reset and the 20 kept", b.Reset, len(b.Updates))
	}
}

// TestHistoryStreamReadsAreBounded: reading a topic's history from the stream takes one of the edge's stream reads,
// as resumes do; when none frees in time the client is told to come back.
func TestHistoryStreamReadsAreBounded(t *testing.T) {
	n := startNATS(t)
	first := n.publish(t, "market.AAPL", quote("AAPL"))
	e := startEdge(t, n, Config{}, HubOptions{MaxStreamReads: 1, StreamReadWait: 300 * time.Millisecond})
	// Published before the edge started: its history is in the stream, not in the edge's memory.
	e.waitHead(t, first)
	release, err := e.hub.reads.acquire(t.Context(), "203.0.113.9") // someone else's long read
	if err != nil {
		t.Fatal(err)
	}
	status, body, header := getJSON(t, e.url+"/api/history?topic=market.AAPL")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"busy"`) || header.Get("Retry-After") == "" {
		t.Errorf("with every stream read taken: %d %s (Retry-After %q), want 503 busy with Retry-After", status, body,
			header.Get("Retry-After"))
	}
	release()
	if a := history(t, e, "topic=market.AAPL"); len(a.Updates) != 1 {
		t.Errorf("once free: %+v, want the one update", a)
	}
}
