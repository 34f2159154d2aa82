package push

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Benchmarks of the hot path: encoding an update once, fanning it out, and turning a batch into one write.
// Run: go test -run '^$' -bench . -benchmem ./push/

var benchPayload = []byte(`{"topic":"market.AAPL","kind":"quote","symbol":"AAPL","price":231.52,"bid":231.5,"ask":231.54,` +
	`"open":229.8,"change":1.72,"changePct":0.75,"volume":1234567,"ts":"2026-11-25T19:30:49.545229729Z"}`)

// BenchmarkNewUpdate is the per-update cost paid once, whatever the number of subscribers: validation and the
// SSE and WebSocket encodings.
func BenchmarkNewUpdate(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		if _, err := NewUpdate("market.AAPL", uint64(i), benchPayload, now); err != nil {
			b.Fatal(err)
		}
	}
}

// countingSink stands in for a socket: it counts what it would write, so the benchmark measures the hub.
type countingSink struct {
	updates atomic.Int64
}

func (c *countingSink) write(batch []*Update) error {
	c.updates.Add(int64(len(batch)))
	return nil
}
func (c *countingSink) heartbeat() error    { return nil }
func (c *countingSink) close(_ closeReason) {}
func (c *countingSink) abort()              {}

// BenchmarkHubFanout publishes to a hub with 10,000 subscribers, each on 10 of 500 symbols, as in the fan-out
// target: each update reaches 200 subscribers. ns/op is per update published; deliveries/s is reported.
func BenchmarkHubFanout(b *testing.B) {
	const subscribers, symbols, perSubscriber = 10_000, 500, 10
	// A budget the benchmark cannot exceed: it measures fan-out, not the skipping of a fan-out that falls behind.
	h := NewHub(HubOptions{QueueLimit: 1 << 20, LatencyBudget: time.Hour})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go h.Run(ctx)
	sink := &countingSink{}
	for i := range subscribers {
		s, _ := h.newSubscriber(sink, "bench", "", nil)
		var patterns []string
		for k := range perSubscriber {
			patterns = append(patterns, fmt.Sprintf("market.S%03d", (i*perSubscriber+k)%symbols))
		}
		h.Subscribe(s, Subscription{Patterns: patterns}, nil)
	}
	updates := make([]*Update, symbols)
	for i := range updates {
		updates[i], _ = NewUpdate(fmt.Sprintf("market.S%03d", i), 0, benchPayload, time.Now())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// A fresh cursor each time: the hub drops what it has seen.
		u := *updates[i%symbols]
		u.Cursor = uint64(i + 1)
		u.Recv = time.Now()
		h.Publish(&u)
		if i%(fanOutLogSize/2) == 0 { // keep within the fan-out log
			waitFannedOut(h)
		}
	}
	waitFannedOut(h)
	b.StopTimer()
	// Let the writers finish so the count is complete.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if h.queuedTotal() == 0 {
			break
		}
	}
	b.ReportMetric(float64(sink.updates.Load())/b.Elapsed().Seconds(), "deliveries/s")
}

func waitFannedOut(h *Hub) {
	for !h.fannedOut() {
		runtime.Gosched()
	}
}

// A subscribe to 10 topics named in full, with 5,000 topics in the cache (market and sports together): the cost of
// each connect in a reconnect storm, paid holding the hub's lock.
func BenchmarkHubSubscribe(b *testing.B) {
	const topics, perSubscriber = 5000, 10
	h := NewHub(HubOptions{})
	for i := range topics {
		u, _ := NewUpdate(fmt.Sprintf("market.S%04d", i), uint64(i+1), benchPayload, time.Now())
		h.Publish(u)
	}
	sink := &countingSink{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s, _ := h.newSubscriber(sink, "bench", "", nil)
		patterns := make([]string, perSubscriber)
		for k := range patterns {
			patterns[k] = fmt.Sprintf("market.S%04d", (i*perSubscriber+k)%topics)
		}
		h.Subscribe(s, Subscription{Patterns: patterns}, nil)
		s.Close(reasonClientGone)
	}
}

func (h *Hub) queuedTotal() (n int) {
	for _, s := range h.subscribers() {
		s.mu.Lock()
		n += len(s.queue)
		if s.writing {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// discardConn is a net.Conn that accepts every write, so encoder benchmarks measure the encoding.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)       { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error  { return nil }
func (discardConn) Close() error                      { return nil }
func (discardConn) RemoteAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) SetDeadline(t time.Time) error     { return nil }
func (discardConn) SetReadDeadline(t time.Time) error { return nil }
func (discardConn) LocalAddr() net.Addr               { return &net.TCPAddr{} }
func (discardConn) Read(p []byte) (n int, err error)  { select {} }

func benchBatch(n int) []*Update {
	batch := make([]*Update, n)
	for i := range batch {
		batch[i], _ = NewUpdate("market.AAPL", uint64(i+1), benchPayload, time.Now())
	}
	return batch
}

// BenchmarkSSEWrite is one SSE flush of 16 queued updates: one chunk, one write.
func BenchmarkSSEWrite(b *testing.B) {
	sc := &sseConn{conn: discardConn{}, chunked: true, deadline: writeDeadline{timeout: time.Second}}
	batch := benchBatch(16)
	b.ReportAllocs()
	b.SetBytes(int64(16 * len(batch[0].sse)))
	for b.Loop() {
		if err := sc.write(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWSWrite is one write of 1, 16 and 256 queued updates (a quiet subscriber, a busy one, a burst) as one
// WebSocket frame carrying them one per line (frames=lines), through coder/websocket: into a connection that
// discards what it gets, which measures the edge's own work and counts its socket writes (writes/op), and, for 16,
// on a real loopback pair, kernel included.
func BenchmarkWSWrite(b *testing.B) {
	benchWSWrite(b, false)
}

// BenchmarkWSWriteSingle is the same batches as one frame per update (frames=single, the default), all frames of a
// batch in one socket write: the cost of frames that any client reads as they are.
func BenchmarkWSWriteSingle(b *testing.B) {
	benchWSWrite(b, true)
}

func benchWSWrite(b *testing.B, single bool) {
	run := func(b *testing.B, wc *wsConn, n int) {
		batch := benchBatch(n)
		b.ReportAllocs()
		b.SetBytes(int64(n * len(batch[0].json)))
		for b.Loop() {
			if err := wc.write(batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, n := range []int{1, 16, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			conn := &countingDiscard{}
			run(b, wsOver(b, conn, single), n)
			b.ReportMetric(float64(conn.writes)/float64(b.N), "writes/op")
		})
	}
	b.Run("16-loopback", func(b *testing.B) {
		wc, drain := wsPair(b, single)
		defer drain()
		run(b, wc, 16)
	})
}

// countingDiscard is a connection that discards and counts what is written to it.
type countingDiscard struct {
	discardConn
	writes int64
}

func (c *countingDiscard) Write(p []byte) (int, error) {
	c.writes++
	return len(p), nil
}

// hijackTo answers a WebSocket handshake by handing over conn.
type hijackTo struct {
	*httptest.ResponseRecorder
	conn net.Conn
}

func (h hijackTo) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// wsOver returns the server side of a WebSocket whose connection is conn, with the edge's buffers.
func wsOver(b *testing.B, conn net.Conn, single bool) *wsConn {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	h := &rawHijack{ResponseWriter: hijackTo{httptest.NewRecorder(), conn}}
	c, err := websocket.Accept(h, r, nil)
	if err != nil {
		b.Fatal(err)
	}
	return newWSConn(c, h.frames, single, 10*time.Second)
}

// rawHijack gives coder/websocket the buffers leanHijack gives it under gin. If wrap is set, the buffers write to the connection it returns.
type rawHijack struct {
	http.ResponseWriter
	wrap   func(net.Conn) net.Conn
	frames *frameWriter
}

func (h *rawHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := h.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if h.wrap != nil {
		conn = h.wrap(conn)
	}
	brw, h.frames = wsBuffers(conn, brw.Reader)
	return conn, brw, nil
}

// wsPair returns the server side of a real WebSocket on loopback. Its client is a plain TCP connection that sends
// the handshake and discards whatever arrives, so that the benchmark measures the edge's side alone.
func wsPair(b *testing.B, single bool) (*wsConn, func()) {
	accepted := make(chan *wsConn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &rawHijack{ResponseWriter: w}
		c, err := websocket.Accept(h, r, nil)
		if err != nil {
			b.Error(err)
			return
		}
		accepted <- newWSConn(c, h.frames, single, 10*time.Second)
	}))
	client, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(client, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", srv.Listener.Addr())
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(io.Discard, client) })
	var server *wsConn
	select {
	case server = <-accepted:
	case <-time.After(10 * time.Second):
		b.Fatal("no WebSocket handshake within 10s")
	}
	return server, func() {
		server.conn.CloseNow()
		client.Close()
		wg.Wait()
		srv.Close()
	}
}

// A fan-out a whole log behind catches up for 20,000 subscribers on `market.*`: it offers each the newest value of
// 10 topics and tells each how many of the 65,536 updates it skipped. The telling is counted per pattern set, so
// this costs about what offering the newest values costs, not skipped updates × subscribers.
func BenchmarkFanOutCatchUp(b *testing.B) {
	const subscribers = 20_000
	h := NewHub(HubOptions{QueueLimit: 1 << 20})
	for range subscribers {
		s, _ := h.newSubscriber(&countingSink{}, "bench", "", nil)
		h.Subscribe(s, Subscription{Patterns: []string{"market.*"}}, nil)
	}
	cursor := uint64(0)
	for b.Loop() {
		b.StopTimer()
		for range fanOutLogSize {
			cursor++
			u, _ := NewUpdate(fmt.Sprintf("market.S%d", cursor%10), cursor, []byte(`{"kind":"quote"}`), time.Now())
			h.Publish(u)
		}
		b.StartTimer()
		for _, sh := range h.shards {
			sh.catchUp()
		}
	}
}
