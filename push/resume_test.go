package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sse "github.com/tmaxmax/go-sse"

	"github.com/livepush/livepush/subscriber/wire"
)

// A subscription as each transport resumes it: connect with an optional cursor, read updates.
type transport struct {
	name    string
	connect func(t *testing.T, base string, topics []string, since string) reader
}

type reader interface {
	next(t testing.TB) received
	close()
}

var transports = []transport{
	{"sse", func(t *testing.T, base string, topics []string, since string) reader {
		h := http.Header{}
		if since != "" {
			h.Set("Last-Event-ID", since)
		}
		return openSSE(t, base, url.Values{"topic": topics}, h)
	}},
	{"ws", func(t *testing.T, base string, topics []string, since string) reader {
		c := dialWS(t, base, "", nil)
		req := map[string]any{"type": "subscribe", "id": "r", "topics": topics}
		if since != "" {
			req["since"] = since
		}
		b, _ := json.Marshal(req)
		c.send(t, string(b))
		c.expect(t, "subscribed")
		return wsReader{c}
	}},
	{"longpoll", func(t *testing.T, base string, topics []string, since string) reader {
		return startLongPoll(t, base, topics, since)
	}},
}

type wsReader struct{ *wsClient }

func (w wsReader) next(t testing.TB) received { return w.expect(t, "update").received(t) }
func (w wsReader) close()                     { w.conn.CloseNow() }

// longPoller polls in a loop like a client would, handing over what it receives.
type longPoller struct {
	out    chan received
	resets chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
}

func startLongPoll(t testing.TB, base string, topics []string, since string) *longPoller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &longPoller{out: make(chan received, 4096), resets: make(chan struct{}, 16), stop: cancel, done: make(chan struct{})}
	started := make(chan struct{})
	go func() {
		defer close(p.done)
		cursor := since
		for i := 0; ctx.Err() == nil; i++ {
			if i == 1 {
				close(started) // the first answer is in: like a subscribe acknowledged
			}
			q := url.Values{"topic": topics, "timeout": {"2s"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			body, status, err := get(ctx, base+"/api/poll?"+q.Encode())
			if err != nil {
				return
			}
			if status != http.StatusOK {
				t.Errorf("poll: %d %s", status, body)
				return
			}
			var resp struct {
				Cursor  string      `json:"cursor"`
				Updates []wsMessage `json:"updates"`
				Reset   bool        `json:"reset"`
			}
			if err := json.Unmarshal(body, &resp); err != nil {
				t.Errorf("poll body %s: %v", body, err)
				return
			}
			if resp.Reset {
				p.resets <- struct{}{}
			}
			for _, m := range resp.Updates {
				p.out <- m.received(t)
			}
			cursor = resp.Cursor
		}
	}()
	t.Cleanup(p.close)
	select {
	case <-started:
	case <-p.done:
	}
	return p
}

func (p *longPoller) next(t testing.TB) received {
	t.Helper()
	select {
	case r := <-p.out:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no update by long polling within 5s")
	}
	panic("unreachable")
}

func (p *longPoller) close() { p.stop(); <-p.done }

func get(ctx context.Context, u string) ([]byte, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return body, resp.StatusCode, err
}

// publishMix publishes n updates over watched and unwatched topics and returns the cursors of the watched ones.
func publishMix(t testing.TB, n *testNATS, count int) (watched []uint64) {
	for i := range count {
		switch i % 3 {
		case 0:
			watched = append(watched, n.publish(t, "market.AAPL", quote("AAPL")))
		case 1:
			watched = append(watched, n.publish(t, "sports.nba.g-0001", score("nba", "g-0001", i, 0)))
		default:
			n.publish(t, "market.MSFT", quote("MSFT"))
		}
	}
	return watched
}

var resumeTopics = []string{"market.AAPL", "sports.nba.*"}

// expectExactly reads len(want) updates and fails unless they are exactly want, in order; then it checks that
// nothing else was queued by publishing a sentinel that must come next.
func expectExactly(t *testing.T, n *testNATS, r reader, want []uint64) {
	t.Helper()
	var got []uint64
	for range want {
		got = append(got, r.next(t).Cursor)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got cursors %v\nwant exactly   %v", got, want)
	}
	sentinel := n.publish(t, "market.AAPL", quote("AAPL"))
	if u := r.next(t); u.Cursor != sentinel {
		t.Fatalf("after the replay got %+v, want the live update %d next (a duplicate or an extra)", u, sentinel)
	}
}

func TestResumeNoGapNoDuplicate(t *testing.T) {
	for _, tr := range transports {
		for _, path := range []struct {
			name   string
			buffer int
		}{{"memory", 0}, {"stream", 2}} {
			t.Run(tr.name+"/"+path.name, func(t *testing.T) {
				n := startNATS(t)
				e := startEdge(t, n, Config{}, HubOptions{ReplayBuffer: path.buffer})
				publishMix(t, n, 5)
				e.waitHead(t, n.publish(t, "market.MSFT", quote("MSFT")))

				c := tr.connect(t, e.url, resumeTopics, "")
				first := publishMix(t, n, 9)
				var last uint64
				for range 2 { // the snapshot: the latest AAPL and the latest NBA game
					c.next(t)
				}
				for _, want := range first {
					if last = c.next(t).Cursor; last != want {
						t.Fatalf("live update %d, want %d", last, want)
					}
				}
				c.close()

				missed := publishMix(t, n, 60)
				c = tr.connect(t, e.url, resumeTopics, strconv.FormatUint(last, 10))
				// Updates published while the replay runs must arrive too, once.
				more := publishMix(t, n, 12)
				expectExactly(t, n, c, append(missed, more...))
			})
		}
	}
}

func TestResumeOnAnotherEdge(t *testing.T) {
	n := startNATS(t)
	a := startEdge(t, n, Config{}, HubOptions{})
	b := startEdge(t, n, Config{}, HubOptions{})
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			seen := publishMix(t, n, 3)
			a.waitHead(t, seen[len(seen)-1])
			c := tr.connect(t, a.url, resumeTopics, "")
			for range 2 {
				c.next(t)
			}
			live := publishMix(t, n, 6)
			var last uint64
			for range live {
				last = c.next(t).Cursor
			}
			c.close()
			missed := publishMix(t, n, 30)
			c = tr.connect(t, b.url, resumeTopics, strconv.FormatUint(last, 10))
			expectExactly(t, n, c, missed)
		})
	}
}

// laggingLeader is the stream as a clustered stream's leader can answer for it under load: its newest sequence a
// few behind what a consumer on another node has already delivered to another edge.
type laggingLeader struct {
	*Source
	behind uint64
}

func (l laggingLeader) Bounds(ctx context.Context, need uint64) (first, last uint64, err error) {
	first, last, err = l.Source.Bounds(ctx, need)
	return first, last - min(last, l.behind), err
}

// A client comes from an edge that has delivered an update this edge has not yet taken from the stream, and the
// stream's leader answers with a newest sequence a moment behind it (an R3 stream under load did, in 84 of 14,454
// long polls round-robined over three edges). The cursor is not ahead of anything: the edge waits for it, and the
// client resumes instead of being told bad_cursor and resetting. A cursor really ahead is still refused.
func TestCursorTheStreamLeaderHasNotReportedYet(t *testing.T) {
	n := startNATS(t)
	var cursors []uint64
	for range 4 {
		cursors = append(cursors, n.publish(t, "market.AAPL", quote("AAPL")))
	}
	src := NewSource(n.JS, n.Stream, testLogger(t))
	h := NewHub(HubOptions{History: laggingLeader{src, 3}})
	h.beginHistory(0)
	publish := func(cursor uint64) {
		t.Helper()
		u := src.update("market.AAPL", cursor, []byte(quote("AAPL")))
		if u == nil {
			t.Fatal("the test's update was refused")
		}
		if err := h.Publish(u); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cursors[:3] {
		publish(c)
	}
	since := cursors[3] // what another edge has delivered, and this one not yet
	checked := make(chan error, 1)
	go func() { checked <- h.CheckCursor(t.Context(), since) }()
	select {
	case err := <-checked:
		t.Fatalf("cursor %d, one past this edge's head and 3 past the stream leader's answer: %v before the edge took it", since, err)
	case <-time.After(100 * time.Millisecond):
	}
	publish(since)
	if err := <-checked; err != nil {
		t.Fatalf("cursor %d once the edge has it: %v, want it resumable", since, err)
	}
	if err := h.CheckCursor(t.Context(), since+1000); !errors.Is(err, ErrCursorAhead) {
		t.Fatalf("a cursor 1,000 past the stream: %v, want %v", err, ErrCursorAhead)
	}
}

func TestExpiredCursorResetsThenSnapshot(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{ReplayBuffer: 2})
	old := n.publish(t, "market.AAPL", quote("AAPL"))
	publishMix(t, n, 9)
	latestAAPL := n.publish(t, "market.AAPL", quote("AAPL"))
	latestNBA := n.publish(t, "sports.nba.g-0001", score("nba", "g-0001", 1, 1))
	str, err := n.JS.Stream(t.Context(), n.Stream.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	// Retention removes the oldest updates: the cursor "old" now points before the stream's start.
	if err := str.Purge(t.Context(), jetstream.WithPurgeSequence(old+3)); err != nil {
		t.Fatal(err)
	}
	e.waitHead(t, latestNBA)
	since := strconv.FormatUint(old, 10)
	wantSnapshot := []uint64{latestAAPL, latestNBA}

	t.Run("sse", func(t *testing.T) {
		c := openSSE(t, e.url, url.Values{"topic": resumeTopics}, http.Header{"Last-Event-ID": {since}})
		if r := c.next(t); r.Kind != "reset" {
			t.Fatalf("first event %+v, want a reset", r)
		}
		for _, want := range wantSnapshot {
			if r := c.next(t); r.Cursor != want {
				t.Fatalf("snapshot event %+v, want cursor %d", r, want)
			}
		}
	})
	t.Run("ws", func(t *testing.T) {
		c := dialWS(t, e.url, "", nil)
		c.send(t, `{"type":"subscribe","id":"1","topics":["market.AAPL","sports.nba.*"],"since":"`+since+`"}`)
		c.expect(t, "subscribed")
		c.expect(t, "reset")
		for _, want := range wantSnapshot {
			if r := c.expect(t, "update").received(t); r.Cursor != want {
				t.Fatalf("snapshot %+v, want cursor %d", r, want)
			}
		}
	})
	t.Run("longpoll", func(t *testing.T) {
		p := startLongPoll(t, e.url, resumeTopics, since)
		select {
		case <-p.resets:
		case <-time.After(5 * time.Second):
			t.Fatal("no reset")
		}
		for _, want := range wantSnapshot {
			if r := p.next(t); r.Cursor != want {
				t.Fatalf("snapshot %+v, want cursor %d", r, want)
			}
		}
	})
}

func TestBadCursors(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	head := n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, head)
	for _, cursor := range []string{"abc", "-1", "1.5", "99999999999999999999999", strconv.FormatUint(head+1000, 10)} {
		for _, u := range []string{
			e.url + "/sse?topic=market.AAPL&lastEventId=" + url.QueryEscape(cursor),
			e.url + "/api/poll?topic=market.AAPL&cursor=" + url.QueryEscape(cursor),
		} {
			body, status, err := get(t.Context(), u)
			if err != nil {
				t.Fatal(err)
			}
			var e wire.ErrorBody
			if status != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Code != "bad_cursor" {
				t.Errorf("%s: %d %s, want 400 bad_cursor", u, status, body)
			}
		}
		c := dialWS(t, e.url, "", nil)
		c.send(t, `{"type":"subscribe","id":"x","topics":["market.AAPL"],"since":"`+cursor+`"}`)
		if m := c.expect(t, "error"); m.Code != "bad_cursor" {
			t.Errorf("ws since %q: %+v, want bad_cursor", cursor, m)
		}
		c.send(t, `{"type":"ping","id":"still-there"}`)
		c.expect(t, "pong")
	}
}

func TestLongPollWaitsThenAnswers(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	head := n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, head)

	// Nothing after head: the poll waits, and answers when an update comes.
	type answer struct {
		body   string
		status int
		took   time.Duration
	}
	done := make(chan answer, 1)
	go func() {
		start := time.Now()
		body, status, _ := get(t.Context(), fmt.Sprintf("%s/api/poll?topic=market.AAPL&cursor=%d&timeout=10s", e.url, head))
		done <- answer{string(body), status, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	n.publish(t, "market.MSFT", quote("MSFT")) // not asked for: no answer yet
	select {
	case a := <-done:
		t.Fatalf("poll answered before a matching update: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	a := <-done
	if a.status != 200 || !strings.Contains(a.body, fmt.Sprintf(`"cursor":"%d"`, want)) || a.took > 5*time.Second {
		t.Fatalf("poll answer %+v, want update %d", a, want)
	}

	// At the timeout: an empty list and a cursor to go on from.
	body, status, _ := get(t.Context(), fmt.Sprintf("%s/api/poll?topic=market.NONE&cursor=%d&timeout=200ms", e.url, want))
	var resp struct {
		Cursor  string            `json:"cursor"`
		Updates []json.RawMessage `json:"updates"`
	}
	if status != 200 || json.Unmarshal(body, &resp) != nil || len(resp.Updates) != 0 || mustCursor(t, resp.Cursor) < want {
		t.Fatalf("timed-out poll: %d %s", status, body)
	}

	// A bounded answer: limit updates and the cursor of the last one.
	var cursors []uint64
	for range 5 {
		cursors = append(cursors, n.publish(t, "market.AAPL", quote("AAPL")))
	}
	e.waitHead(t, cursors[4])
	body, _, _ = get(t.Context(), fmt.Sprintf("%s/api/poll?topic=market.AAPL&cursor=%d&limit=2", e.url, want))
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.Updates) != 2 || mustCursor(t, resp.Cursor) != cursors[1] {
		t.Fatalf("limited poll: %s, want 2 updates and cursor %d", body, cursors[1])
	}
}

func TestPollBadParameters(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	for _, q := range []string{"topic=market.AAPL&cursor=1&timeout=forever", "topic=market.AAPL&cursor=1&timeout=1h",
		"topic=market.AAPL&limit=0", "topic=market.AAPL&maxRate=-1", "topic=market.AAPL&maxRate=fast", "topic=$SYS.>"} {
		body, status, _ := get(t.Context(), e.url+"/api/poll?"+q)
		var e wire.ErrorBody
		if status != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("%s: %d %s, want 400 with a JSON error", q, status, body)
		}
	}
}

// The go-sse client reconnects by itself when the edge drops the stream and resumes from the last id it saw.
func TestGoSSEClientReconnectsWithoutGap(t *testing.T) {
	n := startNATS(t)
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	e := startEdgeOn(t, n, ln, Config{}, HubOptions{})

	ids := make(chan uint64, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	client := sse.Client{Backoff: sse.Backoff{InitialInterval: 50 * time.Millisecond, MaxInterval: 200 * time.Millisecond}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/sse?topic=market.AAPL&topic=sports.nba.*", nil)
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(ev sse.Event) {
		if ev.Type == "quote" || ev.Type == "score" {
			id, _ := strconv.ParseUint(ev.LastEventID, 10, 64)
			ids <- id
		}
	})
	connected := make(chan error, 1)
	go func() { connected <- conn.Connect() }()
	t.Cleanup(func() { cancel(); <-connected })

	collect := func(want []uint64) {
		t.Helper()
		var got []uint64
		for range want {
			select {
			case id := <-ids:
				got = append(got, id)
			case <-time.After(10 * time.Second):
				t.Fatalf("got %v, want %v", got, want)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("go-sse client got %v\nwant %v", got, want)
		}
	}
	e.waitSubscribers(t, 1)
	collect(publishMix(t, n, 9))

	e.stop() // drops every stream, telling clients to come back
	missed := publishMix(t, n, 30)
	startEdgeOn(t, n, listen(t, addr), Config{}, HubOptions{})
	collect(missed)
	collect(publishMix(t, n, 3))
}

// A long-polling client far behind catches up one bounded answer at a time: each poll reads at most its limit
// from the stream, so 3,000 missed updates take three full answers and no more.
func TestLongPollCatchUpFromTheStreamIsBounded(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{ReplayBuffer: 16})
	var want []uint64
	for range 3000 {
		want = append(want, n.publish(t, "market.AAPL", `{"kind":"quote"}`))
		n.publish(t, "market.MSFT", `{"kind":"quote"}`) // not asked for
	}
	e.waitHead(t, n.publish(t, "market.MSFT", `{"kind":"quote"}`))
	var got []uint64
	cursor, requests := "0", 0
	for len(got) < len(want) && requests < 10 {
		requests++
		// timeout=0: a poll that may not wait still catches up from the stream.
		body, status, err := get(t.Context(), e.url+"/api/poll?topic=market.AAPL&limit=1000&timeout=0&cursor="+cursor)
		if err != nil || status != 200 {
			t.Fatalf("poll: %d %s %v", status, body, err)
		}
		var resp struct {
			Cursor  string      `json:"cursor"`
			Updates []wsMessage `json:"updates"`
		}
		json.Unmarshal(body, &resp)
		if len(resp.Updates) != 1000 {
			t.Errorf("answer %d carried %d updates, want 1000", requests, len(resp.Updates))
		}
		for _, m := range resp.Updates {
			got = append(got, mustCursor(t, m.Cursor))
		}
		cursor = resp.Cursor
	}
	if !slices.Equal(got, want) || requests != 3 {
		t.Fatalf("%d requests brought %d updates, want exactly the 3,000 in 3", requests, len(got))
	}
}

// A client polling in a tight loop (timeout=0) while updates flow gets each one exactly once: an answer that comes
// back empty at its deadline never moves the cursor past an update that was on its way to it.
func TestLongPollAtItsDeadlineSkipsNothing(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	first := n.publish(t, "market.RACE", quote("RACE"))
	e.waitHead(t, first)
	ctx, stop := context.WithCancel(t.Context())
	published := make(chan []uint64, 1)
	go func() {
		var sent []uint64
		for ctx.Err() == nil {
			ack, err := n.JS.Publish(ctx, "market.RACE", []byte(quote("RACE")))
			if err == nil {
				sent = append(sent, ack.Sequence)
			}
		}
		published <- sent
	}()
	var got []uint64
	cursor := strconv.FormatUint(first, 10)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		body, status, err := get(t.Context(), e.url+"/api/poll?topic=market.RACE&timeout=0&cursor="+cursor)
		if err != nil || status != http.StatusOK {
			t.Fatalf("poll: %d %s %v", status, body, err)
		}
		var answer struct {
			Cursor  string      `json:"cursor"`
			Updates []wsMessage `json:"updates"`
		}
		json.Unmarshal(body, &answer)
		for _, m := range answer.Updates {
			got = append(got, mustCursor(t, m.Cursor))
		}
		cursor = answer.Cursor
	}
	stop()
	<-published
	// Only market.RACE is published here, so the stream's every sequence after first is one of its updates,
	// including one whose acknowledgement the stop cut short. That one may still be on its way to the server: a last
	// publish on the same connection is stored after it, and its sequence ends the run.
	last := n.publish(t, "market.RACE", quote("RACE"))
	var sent []uint64
	for c := first + 1; c <= last; c++ {
		sent = append(sent, c)
	}
	// Catch up on the rest, then compare.
	for len(got) == 0 || got[len(got)-1] < sent[len(sent)-1] {
		body, _, err := get(t.Context(), e.url+"/api/poll?topic=market.RACE&timeout=2s&cursor="+cursor)
		if err != nil {
			t.Fatal(err)
		}
		var answer struct {
			Cursor  string      `json:"cursor"`
			Updates []wsMessage `json:"updates"`
		}
		json.Unmarshal(body, &answer)
		for _, m := range answer.Updates {
			got = append(got, mustCursor(t, m.Cursor))
		}
		cursor = answer.Cursor
	}
	if !slices.Equal(got, sent) {
		seen := map[uint64]int{}
		for _, c := range got {
			seen[c]++
		}
		missing, duplicated := 0, 0
		for _, c := range sent {
			if seen[c] == 0 {
				missing++
			}
			duplicated += max(0, seen[c]-1)
		}
		t.Errorf("polling in a loop got %d updates of %d: %d missing, %d duplicated", len(got), len(sent), missing, duplicated)
	}
	t.Logf("%d updates by polling with timeout=0", len(got))
}

// Cursors that look ahead of the stream each need its newest sequence asked afresh; asked at once (a stranger's
// burst of made-up cursors), they share the answers instead of queueing a JetStream API request each.
func TestBoundsAskedAtOnceShareOneRequest(t *testing.T) {
	n := startNATS(t)
	n.publish(t, "market.AAPL", quote("AAPL"))
	src := NewSource(n.JS, n.Stream, testLogger(t))
	apiRequests := func() uint64 {
		info, err := n.JS.AccountInfo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.API.Total
	}
	before := apiRequests()
	const callers = 50
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if _, _, err := src.Bounds(t.Context(), 1<<40); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if asked := apiRequests() - before - 1; asked > callers/5 {
		t.Errorf("%d callers asking at once made %d JetStream API requests, want them to share a few", callers, asked)
	}
}
