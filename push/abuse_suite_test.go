package push

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/coder/websocket"
)

// The abuse suite: each class of cheap attack or careless production from issue 10, run against a real edge on a
// real nats-server with real clients, asserting the bound that protects the edge (consumers, heap after GC,
// goroutines, an unrelated subscriber's latency, bytes per answer). CI runs it at scale 1; docs/bench/abuse-soak.sh
// runs it larger (LIVEPUSH_ABUSE_SCALE) and docs/operations.md has the figures.

// abuseScale multiplies the suite's load: 1 in CI, more for a soak.
func abuseScale(t testing.TB) int {
	if v := os.Getenv("LIVEPUSH_ABUSE_SCALE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LIVEPUSH_ABUSE_SCALE=%q: want a positive integer", v)
		}
		return n
	}
	return 1
}

// clientsFrom returns k HTTP clients whose connections come from the loopback addresses 127.0.0.2 and on, so that
// per-address limits see k clients. They close their idle connections at the end of the test.
func clientsFrom(t testing.TB, k int) []*http.Client {
	clients := make([]*http.Client, k)
	for i := range clients {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}}
		clients[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
		t.Cleanup(clients[i].CloseIdleConnections)
	}
	return clients
}

// Old-cursor resumes, by thousands and from anyone, cost no state on the NATS server: the stream's consumers stay
// the edges' own throughout, reads are bounded per edge and per address, every client gets an answer it can act
// on, and an edge started afterwards becomes ready.
func TestAbuseOldCursorResumesLeaveNoServerState(t *testing.T) {
	scale := abuseScale(t)
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{ReplayBuffer: 16, MaxStreamReads: 8, MaxStreamReadsPerIP: 2})
	var last uint64
	for i := range 400 {
		last = n.publish(t, fmt.Sprintf("market.OLD%d", i%8), quote(fmt.Sprintf("OLD%d", i%8)))
	}
	e.waitHead(t, last)
	if c := n.Consumers(t); c != 1 {
		t.Fatalf("the stream has %d consumers before the test, want the edge's own", c)
	}
	goroutinesBefore := runtime.NumGoroutine()

	// A sampler watches the stream's consumers the whole time.
	var most atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			// A sample the loaded server does not answer in time is skipped: the count after the resumes is
			// checked on the test's goroutine.
			if c, err := n.ConsumerCount(context.Background()); err == nil && int64(c) > most.Load() {
				most.Store(int64(c))
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	polls, streams := 1000*scale, 100*scale
	clients := clientsFrom(t, 40)
	// unavailable: the edge could not get an answer from NATS in time (5 s) and said so, with a time to come
	// back. Under -race on a loaded CI machine, a thousand reads at once can keep the JetStream API that long.
	var answered, busy, unavailable, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range polls {
		wg.Go(func() {
			client := clients[i%40]
			resp, err := client.Get(e.url + "/api/poll?topic=market.*&cursor=1&timeout=0")
			if err != nil {
				failed.Add(1)
				t.Errorf("poll: %v", err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var answer struct {
				Cursor  string            `json:"cursor"`
				Updates []json.RawMessage `json:"updates"`
				Code    string            `json:"code"`
			}
			json.Unmarshal(body, &answer)
			switch {
			case resp.StatusCode == http.StatusOK && len(answer.Updates) > 0:
				answered.Add(1)
			case resp.StatusCode == http.StatusServiceUnavailable && answer.Code == "busy" && resp.Header.Get("Retry-After") != "":
				busy.Add(1)
			case resp.StatusCode == http.StatusServiceUnavailable && answer.Code == "unavailable" && resp.Header.Get("Retry-After") != "":
				unavailable.Add(1)
			default:
				failed.Add(1)
				t.Errorf("poll answered %d %.200s", resp.StatusCode, body)
			}
		})
	}
	for i := range streams {
		wg.Go(func() { // SSE resumes from an old cursor: the first update after it, or a busy close
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/sse?topic=market.*", nil)
			req.Header.Set("Last-Event-ID", "1")
			resp, err := clients[i%40].Do(req)
			if err == nil && resp.StatusCode == http.StatusServiceUnavailable { // the cursor check could not reach NATS
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), `"code":"unavailable"`) && resp.Header.Get("Retry-After") != "" {
					unavailable.Add(1)
					return
				}
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				failed.Add(1)
				t.Errorf("SSE resume: %v %v", resp, err)
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 4096)
			var got strings.Builder
			for !strings.Contains(got.String(), "\nid: 2\n") && !strings.Contains(got.String(), "event: close") {
				k, err := resp.Body.Read(buf)
				got.Write(buf[:k])
				if err != nil {
					break
				}
			}
			switch s := got.String(); {
			case strings.Contains(s, "id: 2\n"):
				answered.Add(1)
			case strings.Contains(s, `"reason":"busy"`):
				busy.Add(1)
			case strings.Contains(s, `"reason":"unavailable"`):
				unavailable.Add(1)
			default:
				failed.Add(1)
				t.Errorf("SSE resume got %.300q", s)
			}
		})
		wg.Go(func() { // WebSocket resumes
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/ws",
				&websocket.DialOptions{HTTPClient: clients[i%40]})
			if err != nil {
				failed.Add(1)
				t.Errorf("WebSocket: %v", err)
				return
			}
			defer conn.CloseNow()
			conn.SetReadLimit(1 << 22)
			conn.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","topics":["market.*"],"since":"1"}`))
			for {
				_, data, err := conn.Read(ctx)
				if err != nil {
					failed.Add(1)
					t.Errorf("WebSocket resume: %v", err)
					return
				}
				switch {
				case strings.Contains(string(data), `"cursor":"2"`):
					answered.Add(1)
					return
				case strings.Contains(string(data), `"code":"busy"`):
					busy.Add(1)
					return
				case strings.Contains(string(data), `"code":"unavailable"`):
					unavailable.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	t.Logf("%d polls and %d SSE and %d WebSocket resumes from an old cursor: %d answered, %d told busy, "+
		"%d told the stream was unavailable, %d failed; the stream had at most %d consumers",
		polls, streams, streams, answered.Load(), busy.Load(), unavailable.Load(), failed.Load(), most.Load())
	if most.Load() != 1 {
		t.Errorf("the stream had up to %d consumers during the resumes, want only the edge's own", most.Load())
	}
	// Each one was answered or told to come back: how many of each depends on how fast this machine reads.
	if answered.Load() == 0 || failed.Load() > 0 {
		t.Errorf("%d of %d resumes answered, %d failed", answered.Load(), polls+2*streams, failed.Load())
	}
	if c := n.Consumers(t); c != 1 {
		t.Errorf("the stream has %d consumers after the resumes, want 1", c)
	}
	// The edge lets go of what the resumes held.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore+20 && time.Now().Before(deadline) {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutinesBefore+20 {
		t.Errorf("%d goroutines after the resumes ended, %d before", g, goroutinesBefore)
	}
	// And another edge starts and gets ready on the same stream.
	other := startEdge(t, n, Config{}, HubOptions{})
	other.waitHead(t, last)
}

// Big payloads cannot grow the edge's memory past its byte bounds: the replay memory, the latest-value cache, a
// stuck subscriber's queue, and one long-poll answer are all bounded by bytes, whatever the update count.
func TestAbuseBigPayloadsBoundedByBytes(t *testing.T) {
	scale := abuseScale(t)
	n := startNATS(t)
	const replayBytes, queueBytes, pollBytes = 8 << 20, 2 << 20, 1 << 20
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{PollBytes: pollBytes},
		HubOptions{ReplayBytes: replayBytes, QueueBytes: queueBytes, SlowTimeout: time.Minute, WriteTimeout: time.Minute},
		func(s *Source) { WithContract(Contract{MaxPayload: 1 << 20})(s) })
	stuck, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws?topic=market.BIG", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.CloseNow() // and never reads
	e.waitSubscribers(t, 1)
	runtime.MemProfileRate = 4096
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	before := edgeHeap()

	count, size := 40*scale, 900<<10
	var first uint64
	var queued atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // the stuck subscriber's queue, sampled while the payloads flow
		defer close(sampled)
		for {
			for _, s := range e.hub.subscribers() {
				s.mu.Lock()
				if int64(s.queued) > queued.Load() {
					queued.Store(int64(s.queued))
				}
				s.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var last uint64
	for i := range count {
		last = n.publish(t, "market.BIG", bigQuote("BIG", i, size))
		if i == 0 {
			first = last
		}
	}
	e.waitHeadWithin(t, last, time.Minute)
	close(stop)
	<-sampled
	grown := edgeHeap() - before
	t.Logf("%d payloads of %d KiB: edge heap grew %d MiB; the stuck subscriber's queue held at most %d MiB",
		count, size>>10, grown>>20, queued.Load()>>20)
	// Each update holds its payload and two encodings; the bound is the replay memory, one latest value and the
	// stuck queue's conflation trigger (4 times its bytes), with room for the payloads the profile attributes here.
	if limit := int64(replayBytes + 4*queueBytes + 16<<20); grown > limit {
		t.Errorf("edge heap grew by %d MiB with %d MiB of payloads, want at most %d MiB", grown>>20,
			int64(count*size)>>20, limit>>20)
	}
	// The queue's bound: once conflated to one update per topic (here one, of about three times its payload with
	// its encodings), it may grow to four times the larger of -queue-bytes and twice that before it is conflated
	// again whatever the writer does: memory in proportion to the topics followed, not to the update rate.
	update := int64(3*size + 4096)
	if limit := 4*max(int64(queueBytes), 2*update) + update; queued.Load() > limit {
		t.Errorf("a stuck subscriber's queue held %d KiB, want at most %d", queued.Load()>>10, limit>>10)
	}

	// A long poll asking for everything still in memory gets at most pollBytes past its first update, and a cursor
	// to go on from.
	e.hub.cacheMu.RLock()
	floor := e.hub.recent.floor
	e.hub.cacheMu.RUnlock()
	resp, err := http.Get(fmt.Sprintf("%s/api/poll?topic=market.BIG&cursor=%d&limit=10000&timeout=0", e.url, max(floor, first)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var answer struct {
		Cursor  string            `json:"cursor"`
		Updates []json.RawMessage `json:"updates"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || len(answer.Updates) == 0 {
		t.Fatalf("poll answered %d: %v", resp.StatusCode, err)
	}
	if len(body) > pollBytes+size+4096 || mustCursor(t, answer.Cursor) >= last {
		t.Errorf("poll answer of %d KiB with %d updates, cursor %s of %d: want at most %d KiB and a cursor to go on from",
			len(body)>>10, len(answer.Updates), answer.Cursor, last, (pollBytes+size)>>10)
	}
}

// A maxRate so small that its throttle would wait for decades is refused, and a rate-limited subscriber that
// leaves is not kept alive by the timers of its throttles.
func TestAbuseTinyMaxRate(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	for _, rate := range []string{"1e-9", "0.001", "-1", "NaN", "1e400"} {
		resp, err := http.Get(e.url + "/sse?topic=market.*&maxRate=" + url.QueryEscape(rate))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "maxRate") {
			t.Errorf("maxRate=%s: %d %s, want 400 naming maxRate", rate, resp.StatusCode, body)
		}
	}
	w := dialWS(t, e.url, "", nil)
	w.send(t, `{"type":"subscribe","id":"1","topics":["market.*"],"maxRate":1e-9}`)
	if m := w.expect(t, "error"); m.Code != "bad_request" || !strings.Contains(m.Message, "maxRate") {
		t.Errorf("maxRate 1e-9 on the WebSocket: %+v", m)
	}

	// The lowest rate accepted arms throttles of 100 s.
	w.send(t, `{"type":"subscribe","id":"2","topics":["market.*"],"maxRate":0.01}`)
	w.expect(t, "subscribed")
	e.waitSubscribers(t, 1)
	var ref weak.Pointer[Subscriber]
	for _, s := range e.hub.subscribers() {
		ref = weak.Make(s)
	}
	var last uint64
	for round := range 2 { // the second update of each topic waits as pending, behind a timer
		for i := range 20 {
			last = n.publish(t, fmt.Sprintf("market.T%d", i), quote(fmt.Sprintf("T%d", i)))
		}
		if round == 0 {
			for range 20 {
				w.expect(t, "update")
			}
		}
	}
	e.waitHead(t, last)
	w.conn.CloseNow()
	e.waitSubscribers(t, 0)
	deadline := time.Now().Add(10 * time.Second)
	for ref.Value() != nil && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if ref.Value() != nil {
		t.Error("a closed rate-limited subscriber is still reachable (its throttle timers hold it)")
	}
}

// The source's watch over its consumer starts no goroutine per check.
func TestAbuseWatchLoopLeaksNoGoroutines(t *testing.T) {
	n := startNATS(t)
	startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{}, func(s *Source) { s.checkEvery = time.Millisecond })
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	time.Sleep(500 * time.Millisecond) // hundreds of checks
	if grown := runtime.NumGoroutine() - before; grown > 10 {
		t.Errorf("%d more goroutines after 500 checks", grown)
	}
}

// A producer publishing to endless subjects cannot grow the cache or the catalog past their bound; the topics
// the edge had keep updating, and the rejections are counted.
func TestAbuseTopicFlood(t *testing.T) {
	n := startNATS(t)
	const maxTopics = 500
	e := startEdge(t, n, Config{}, HubOptions{MaxTopics: maxTopics})
	n.publish(t, "market.KEEP", quote("KEEP"))
	flood := 3000 * abuseScale(t)
	n.PublishMany(t, flood, func(i int) (string, string) {
		return fmt.Sprintf("market.F%d", i), quote(fmt.Sprintf("F%d", i))
	})
	keep := n.publish(t, "market.KEEP", quote("KEEP"))
	e.waitHeadWithin(t, keep, 60*time.Second)
	resp, err := http.Get(e.url + "/api/topics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var catalog struct{ Topics []Topic }
	json.Unmarshal(body, &catalog)
	t.Logf("%d topics published: the catalog lists %d in %d KiB", flood+1, len(catalog.Topics), len(body)>>10)
	if len(catalog.Topics) != maxTopics || !slices.ContainsFunc(catalog.Topics, func(c Topic) bool { return c.Topic == "market.KEEP" && c.Cursor == keep }) {
		t.Errorf("catalog has %d topics (want %d) and market.KEEP at its latest: %v", len(catalog.Topics), maxTopics,
			slices.ContainsFunc(catalog.Topics, func(c Topic) bool { return c.Topic == "market.KEEP" && c.Cursor == keep }))
	}
	if got := scrape(t, e.url)[`livepush_stream_dropped_total{reason="too_many_topics"}`]; int(got) != flood+1-maxTopics {
		t.Errorf("rejected as too_many_topics: %v, want %d", got, flood+1-maxTopics)
	}
}

// A client subscribing and unsubscribing a wildcard over many topics, as fast as the control rate lets it, does
// not hold up what anyone else receives: subscribing takes its snapshot without stopping publication.
func TestAbuseSubscribeChurnDoesNotStallOthers(t *testing.T) {
	scale := abuseScale(t)
	n := startNATS(t)
	topics := 10_000 * scale
	e := startEdge(t, n, Config{Limits: Limits{ControlRate: 50}}, HubOptions{MaxTopics: topics + 10})
	n.PublishMany(t, topics, func(i int) (string, string) {
		return fmt.Sprintf("market.C%d", i), quote(fmt.Sprintf("C%d", i))
	})
	e.waitHeadWithin(t, n.publish(t, "market.AAPL", quote("AAPL")), 60*time.Second)

	unrelated := dialWS(t, e.url, "?topic=market.AAPL", nil)
	unrelated.expect(t, "subscribed")
	unrelated.expect(t, "update")
	churner, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer churner.CloseNow()
	go func() { // read and drop: a client that takes its snapshots
		for {
			if _, _, err := churner.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			msg := `{"type":"subscribe","topics":["market.>"]}`
			if i%2 == 1 {
				msg = `{"type":"unsubscribe","topics":["market.>"]}`
			}
			churner.Write(ctx, websocket.MessageText, []byte(msg))
			time.Sleep(25 * time.Millisecond) // 40 a second, within the control rate
		}
	}()
	var lateness []time.Duration
	for ctx.Err() == nil {
		n.publish(t, "market.AAPL", quote("AAPL"))
		m := unrelated.expect(t, "update")
		var p struct{ TS time.Time }
		json.Unmarshal(m.Data, &p)
		lateness = append(lateness, time.Since(p.TS))
		time.Sleep(5 * time.Millisecond)
	}
	slices.Sort(lateness)
	p99 := lateness[len(lateness)*99/100]
	t.Logf("%d updates to an unrelated subscriber while another churned a wildcard over %d topics: p50 %v, p99 %v",
		len(lateness), topics, lateness[len(lateness)/2], p99)
	if p99 > 250*time.Millisecond {
		t.Errorf("unrelated subscriber's p99 %v while another churned subscriptions", p99)
	}
}
