package push

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livepush/livepush/subscriber/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sse "github.com/tmaxmax/go-sse"
)

// bigQuote is a quote padded to size bytes, stamped with the time it is published.
func bigQuote(symbol string, seq, size int) string {
	head := fmt.Sprintf(`{"topic":"market.%s","kind":"quote","symbol":"%s","seq":%d,"ts":"%s","pad":"`,
		symbol, symbol, seq, time.Now().UTC().Format(time.RFC3339Nano))
	return head + strings.Repeat("x", max(0, size-len(head)-2)) + `"}`
}

// pump publishes count padded quotes over topics symbols as fast as JetStream acknowledges them.
func pump(t *testing.T, n *testNATS, topics, count, size int) (last uint64) {
	for i := range count {
		sym := fmt.Sprintf("S%02d", i%topics)
		last = n.publish(t, "market."+sym, bigQuote(sym, i, size))
	}
	return last
}

// queueStats returns the longest queue of any subscriber and the most updates conflated for one.
func (h *Hub) queueStats() (longest, conflated int) {
	for _, s := range h.subscribers() {
		s.mu.Lock()
		longest, conflated = max(longest, len(s.queue)), max(conflated, int(s.conflated))
		s.mu.Unlock()
	}
	return longest, conflated
}

// edgeHeap returns the bytes in use that the edge (package push) allocated, from the heap profile: the tests run
// nats-server in the same process, and its caches must not count.
func edgeHeap() int64 {
	runtime.GC()
	runtime.GC() // the profile reflects the heap as of the last completed cycle
	var records []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		records = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		if n, ok = runtime.MemProfile(records, false); ok {
			records = records[:n]
			break
		}
	}
	var total int64
	for _, r := range records {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasPrefix(f.Function, "github.com/livepush/livepush/push.") && !strings.Contains(f.Function, "_test") &&
				!strings.HasPrefix(f.Function, "github.com/livepush/livepush/push.Test") {
				total += r.InUseBytes()
				break
			}
			if !more {
				break
			}
		}
	}
	return total
}

// A subscriber that stops reading must not delay anyone else, nor grow the edge's memory: it is conflated, then
// disconnected.
func TestStuckSubscriberDoesNotHoldOthersBack(t *testing.T) {
	n := startNATS(t)
	// One shard with one writer, and more stuck clients than writers: every writer the edge has would be stuck if a
	// blocked write held on to its writer.
	e := startEdge(t, n, Config{}, HubOptions{SlowTimeout: time.Second, WriteTimeout: time.Minute, ReplayBuffer: 64,
		Shards: 1, Writers: 1})

	// The stuck ones: WebSocket clients that never read.
	const stuckClients = 8
	for range stuckClients {
		stuck, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws?topic=market.*", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer stuck.CloseNow()
	}
	// The healthy one reads everything and notes how late each update is.
	healthy := dialWS(t, e.url, "?topic=market.*", nil)
	healthy.expect(t, "subscribed")
	e.waitSubscribers(t, stuckClients+1)
	runtime.MemProfileRate = 4096
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	before := edgeHeap()

	// 32 MB of payloads, 96 MB with their encodings: far more than socket buffers hold, and than the heap may grow.
	const topics, count, size = 20, 4000, 8 << 10
	var last atomic.Uint64
	type result struct {
		worst    time.Duration
		received int
		skipped  uint64 // what conflated notices said was skipped
		err      error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		prev := uint64(0)
		for m := range healthy.msgs {
			if m.Type == wire.TypeConflated {
				r.skipped += m.Skipped
				continue
			}
			c := mustCursor(t, m.Cursor)
			if c <= prev {
				r.err = fmt.Errorf("cursor %d after %d", c, prev)
				break
			}
			prev = c
			r.received++
			var p struct{ TS time.Time }
			json.Unmarshal(m.Data, &p)
			r.worst = max(r.worst, time.Since(p.TS))
			if c == last.Load() {
				break
			}
		}
		got <- r
	}()
	sampled := make(chan [2]int)
	stopSampling := make(chan struct{})
	go func() { // the longest queue and the most conflations seen on any subscriber while the pump runs
		var longest, conflated int
		for {
			select {
			case <-stopSampling:
				sampled <- [2]int{longest, conflated}
				return
			case <-time.After(5 * time.Millisecond):
			}
			q, c := e.hub.queueStats()
			longest, conflated = max(longest, q), max(conflated, c)
		}
	}()
	last.Store(pump(t, n, topics, count, size))
	close(stopSampling)
	qs := <-sampled
	if qs[1] == 0 || qs[0] > 2*256 {
		t.Errorf("stuck subscribers: longest queue %d, %d updates conflated; want them conflated and bounded", qs[0], qs[1])
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("healthy subscriber never received the last update")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	grown := edgeHeap() - before
	fanOutSkipped := testutil.ToFloat64(e.hub.shards[0].skipped)
	t.Logf("healthy subscriber: %d of %d updates, %d skipped as its notices said, %v at fan-out; worst latency %v; "+
		"edge heap grew %d KiB", r.received, count, r.skipped, fanOutSkipped, r.worst, grown>>10)
	// What the healthy one missed (the edge was busy with eight stuck clients at once) it was told of, save what the
	// whole fan-out skipped, which reaches no connection's queue.
	if got := uint64(r.received) + r.skipped + uint64(fanOutSkipped); got != count {
		t.Errorf("received %d, told of %d skipped, %v skipped at fan-out: %d in all, want %d", r.received, r.skipped,
			fanOutSkipped, got, count)
	}
	// Had a stuck client held the healthy one back, the healthy one would have waited out the stuck one's write
	// (at least the slow timeout and the close grace: 6 s); the bound leaves room for a busy machine.
	if r.worst > 5*time.Second {
		t.Errorf("healthy subscriber's worst latency %v while another was stuck", r.worst)
	}
	if grown > 16<<20 {
		t.Errorf("edge heap grew by %d MiB with stuck subscribers", grown>>20)
	}
	// The stuck ones are conflated, then cut off: a blocked write gets the close grace, not the write timeout.
	deadline := time.Now().Add(20 * time.Second)
	for e.hub.Stats().Subscribers != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stuck subscribers still connected: %+v", e.hub.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A client that reads too slowly to keep up is conflated (latest per topic), then told why it is disconnected.
func TestSlowSubscriberConflatedThenToldWhy(t *testing.T) {
	const topics, size = 10, 8 << 10
	n := startNATS(t)
	// The client drains megabytes of backlog before it reads the goodbye: on a loaded machine under -race that can
	// take longer than the default grace, which would cut the connection first.
	e := startEdge(t, n, Config{}, HubOptions{QueueLimit: 16, SlowTimeout: 500 * time.Millisecond,
		WriteTimeout: 20 * time.Second, CloseGrace: 20 * time.Second, ReplayBuffer: 64})

	// pressure publishes until the edge has disconnected a slow consumer, reading slowly meanwhile with read.
	pressure := func(t *testing.T, read func()) (published int) {
		before := e.hub.metrics.slowDisconnects()
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			i := 0
			for ; ; i++ {
				select {
				case <-stop:
					done <- i
					return
				default:
				}
				sym := fmt.Sprintf("S%02d", i%topics)
				n.publish(t, "market."+sym, bigQuote(sym, i, size))
			}
		}()
		deadline := time.Now().Add(30 * time.Second)
		for e.hub.metrics.slowDisconnects() == before {
			if time.Now().After(deadline) {
				t.Fatal("the slow client was never disconnected")
			}
			read()
		}
		close(stop)
		return <-done
	}

	t.Run("sse", func(t *testing.T) {
		conn, r := rawSSE(t, e.url+"/sse?topic=market.*")
		defer conn.Close()
		buf := make([]byte, 2048)
		published := pressure(t, func() { r.Read(buf); time.Sleep(100 * time.Millisecond) })
		// Now read at full speed: what was written before the disconnect, then the reason.
		var seen, notices int
		var skipped uint64
		var reason string
		for ev, err := range sse.Read(r, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
			if err != nil {
				break
			}
			if ev.Type == "close" {
				reason = ev.Data
				break
			}
			if ev.Type == "conflated" {
				notices++
				skipped += conflatedSkipped(t, ev.Data)
				continue
			}
			seen++
		}
		if !strings.Contains(reason, "slow_consumer") {
			t.Fatalf("stream ended without a slow_consumer close event (after %d events)", seen)
		}
		if seen >= published {
			t.Errorf("slow client saw all %d updates: it was never conflated", published)
		}
		// A notice is written before the values that follow a conflation; this client was too slow to get there
		// before it was dropped (it resumes by cursor instead), and no notice may claim more than was published.
		if uint64(seen)+skipped > uint64(published) {
			t.Errorf("saw %d updates and %d conflated notices skipping %d of %d published", seen, notices, skipped, published)
		}
		t.Logf("slow SSE client saw %d of %d updates and %d notices skipping %d, then %s", seen, published, notices,
			skipped, reason)
	})

	t.Run("ws", func(t *testing.T) {
		c, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws?topic=market.*", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 24)
		var seen, notices int
		var skipped uint64
		var closed error
		read := func() bool {
			_, data, err := c.Read(t.Context())
			if err != nil {
				closed = err
				return false
			}
			for line := range strings.Lines(string(data)) {
				if strings.Contains(line, `"type":"conflated"`) {
					notices++
					skipped += conflatedSkipped(t, line)
				} else {
					seen++
				}
			}
			return true
		}
		published := pressure(t, func() {
			read()
			time.Sleep(100 * time.Millisecond)
		})
		for read() {
		}
		if websocket.CloseStatus(closed) != websocket.StatusTryAgainLater || !strings.Contains(closed.Error(), "too slow") {
			t.Fatalf("closed with %v after %d messages, want 1013 saying it was too slow", closed, seen)
		}
		if seen >= published {
			t.Errorf("slow client saw all %d updates: it was never conflated", published)
		}
		if uint64(seen)+skipped > uint64(published) {
			t.Errorf("saw %d updates and %d conflated notices skipping %d of %d published", seen, notices, skipped, published)
		}
		t.Logf("slow WebSocket client saw %d of %d messages and %d notices skipping %d, then %v", seen, published,
			notices, skipped, closed)
	})
}

// conflatedSkipped reads a conflated notice.
func conflatedSkipped(t *testing.T, data string) uint64 {
	t.Helper()
	var m wire.Message
	if err := json.Unmarshal([]byte(data), &m); err != nil || m.Type != wire.TypeConflated || m.Skipped == 0 {
		t.Errorf("conflated notice %q: want type conflated, skipping something", data)
	}
	return m.Skipped
}

// slowDisconnects is how many subscribers the edge disconnected for being too slow.
func (m *metrics) slowDisconnects() float64 {
	return testutil.ToFloat64(m.disconnects.WithLabelValues(reasonSlow.err))
}

// rawSSE opens an SSE stream on a connection with a small receive buffer, so the edge feels a slow reader at once.
func rawSSE(t *testing.T, u string) (net.Conn, *bufio.Reader) {
	t.Helper()
	parsed, _ := url.Parse(u)
	conn, err := net.Dial("tcp", parsed.Host)
	if err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", parsed.RequestURI(), parsed.Host)
	r := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("SSE response %v %v", resp, err)
	}
	return conn, bufio.NewReaderSize(resp.Body, 4096)
}

func TestMaxRateLimitsAndDeliversLatest(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	s := openSSE(t, e.url, url.Values{"topic": {"market.FAST"}, "maxRate": {"2"}}, nil)
	w := dialWS(t, e.url, "", nil)
	w.send(t, `{"type":"subscribe","id":"1","topics":["market.FAST"],"maxRate":2}`)
	w.expect(t, "subscribed")
	e.waitSubscribers(t, 2)

	const rate, seconds = 20, 3
	var last atomic.Uint64
	type arrival struct {
		cursor uint64
		at     time.Time
	}
	check := func(name string, next func() received) {
		var got []arrival
		for {
			r := next()
			got = append(got, arrival{r.Cursor, time.Now()})
			if r.Cursor == last.Load() {
				break
			}
		}
		// At most 2 a second over the span they arrived in (longer than 3 s on a busy machine): one at the start,
		// then one per 500 ms. The exact intervals are TestClockMaxRate's, on a virtual clock.
		span := got[len(got)-1].at.Sub(got[0].at)
		if len(got) > int((span+100*time.Millisecond)/(500*time.Millisecond))+1 { // arrivals are timed with jitter
			t.Errorf("%s: %d updates in %v with maxRate=2", name, len(got), span)
		}
		if len(got) < seconds {
			t.Errorf("%s: only %d updates in %ds", name, len(got), seconds)
		}
		for i := 1; i < len(got); i++ {
			if gap := got[i].at.Sub(got[i-1].at); gap < 300*time.Millisecond {
				t.Errorf("%s: updates %d and %d only %v apart", name, got[i-1].cursor, got[i].cursor, gap)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { check("sse", func() received { return s.next(t) }) })
	wg.Go(func() { check("ws", func() received { return w.expect(t, "update").received(t) }) })
	// 20 updates a second for 3 seconds; the readers note when each arrives.
	tick := time.NewTicker(time.Second / rate)
	for i := range rate * seconds {
		<-tick.C
		c := n.publish(t, "market.FAST", quote("FAST"))
		if i == rate*seconds-1 {
			last.Store(c)
		}
	}
	tick.Stop()
	wg.Wait()

	// The rate can change on a live WebSocket subscription: without maxRate, every update comes.
	w.send(t, `{"type":"subscribe","id":"2","topics":["market.FAST"]}`)
	w.expect(t, "subscribed")
	var want []uint64
	for range 10 {
		want = append(want, n.publish(t, "market.FAST", quote("FAST")))
	}
	for _, c := range want {
		if r := w.expect(t, "update").received(t); r.Cursor != c {
			t.Fatalf("after lifting the limit got %d, want %d", r.Cursor, c)
		}
	}
}

// Updates waiting for a subscriber leave together: in one frame as lines with frames=lines, in frames of one
// message each otherwise, several to a socket write either way.
func TestWritesCoalesced(t *testing.T) {
	for _, frames := range []string{"lines", "single"} {
		t.Run(frames, func(t *testing.T) {
			n := startNATS(t)
			// No conflation, whatever the load on the machine running the test: every update must arrive.
			e := startEdge(t, n, Config{}, HubOptions{QueueLimit: 4096, LatencyBudget: time.Hour})
			query := "?topic=market.*"
			if frames == "lines" {
				query += "&frames=lines"
			}
			c := dialWS(t, e.url, query, nil)
			c.expect(t, "subscribed")
			<-c.frames
			var wg sync.WaitGroup
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			for range 4 {
				wg.Go(func() {
					for i := range 250 {
						if _, err := n.JS.PublishAsync(fmt.Sprintf("market.C%d", i%10), []byte(quote(fmt.Sprintf("C%d", i%10)))); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			<-n.JS.PublishAsyncComplete()
			messages, frameCount := 0, 0
			for messages < 1000 {
				select {
				case k := <-c.frames:
					messages += k
					frameCount++
					if frames == "single" && k != 1 {
						t.Fatalf("a frame of %d messages without frames=lines", k)
					}
				case <-ctx.Done():
					m := scrape(t, e.url)
					t.Fatalf("got %d of 1000 updates (conflated %v, by the fan-out %v)", messages,
						m["livepush_conflated_total"], m[`livepush_fanout_conflated_total{shard="0"}`]+m[`livepush_fanout_conflated_total{shard="1"}`])
				}
			}
			writes := scrape(t, e.url)[`livepush_writes_total{transport="ws"}`]
			t.Logf("1000 updates in %d frames, %v socket writes", frameCount, writes)
			if frames == "lines" && frameCount >= messages {
				t.Errorf("1000 updates in %d frames: none coalesced", frameCount)
			}
			if writes >= float64(messages) {
				t.Errorf("1000 updates in %v socket writes: none coalesced", writes)
			}
		})
	}
}

// pacedSink takes delay for every write, like a client that reads everything but is far away.
type pacedSink struct {
	countingSink
	delay time.Duration
}

func (p *pacedSink) write(batch []*Update) error {
	time.Sleep(p.delay)
	return p.countingSink.write(batch)
}

// With -write-delay, updates arriving a few milliseconds apart leave together: a connection waits that long before
// its write. Without it, each leaves as it comes.
func TestWriteDelayGathersUpdates(t *testing.T) {
	for _, tc := range []struct {
		delay     time.Duration
		maxFrames int // at most this many frames carry the 20 updates; 0: more than 3 must
	}{{500 * time.Millisecond, 3}, {0, 0}} {
		t.Run(tc.delay.String(), func(t *testing.T) {
			n := startNATS(t)
			// A budget far above the delay: nothing is conflated, every update arrives.
			e := startEdge(t, n, Config{}, HubOptions{WriteDelay: tc.delay, LatencyBudget: time.Minute})
			c := dialWS(t, e.url, "?topic=market.*&frames=lines", nil)
			c.expect(t, "subscribed")
			<-c.frames
			for range 20 {
				n.publish(t, "market.D", quote("D"))
				time.Sleep(5 * time.Millisecond)
			}
			messages, frames := 0, 0
			for deadline := time.After(10 * time.Second); messages < 20; {
				select {
				case k := <-c.frames:
					messages += k
					frames++
				case <-deadline:
					t.Fatalf("got %d of 20 updates", messages)
				}
			}
			if tc.maxFrames > 0 && frames > tc.maxFrames || tc.maxFrames == 0 && frames <= 3 {
				t.Errorf("20 updates 5 ms apart came in %d frames with a write delay of %v", frames, tc.delay)
			}
			t.Logf("write delay %v: 20 updates in %d frames", tc.delay, frames)
		})
	}
}
