package subscriber_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
	"github.com/livepush/livepush/subscriber"
)

// End-to-end tests of the subscriber module's Client and Stream. They run real parts: an embedded nats-server, edges
// from package push on loopback ports, and the client over each transport. They live in the main module because the
// subscriber module cannot depend on it; the subscriber module's own tests read canned bytes from fake edges.

var transports = []string{subscriber.TransportSSE, subscriber.TransportWebSocket, subscriber.TransportPoll}

// running is a client whose Run goes on in the background.
type running struct {
	c       *subscriber.Client
	updates chan subscriber.Update
	events  chan subscriber.Event
	done    chan error
	cancel  context.CancelFunc
}

// start runs a client with o, fast backoff unless o says otherwise. The test ends it.
func start(t *testing.T, o subscriber.Options) *running {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	r := &running{updates: make(chan subscriber.Update, 1024), events: make(chan subscriber.Event, 1024),
		done: make(chan error, 1)}
	o.OnEvent = func(e subscriber.Event) {
		select {
		case r.events <- e:
		default:
		}
	}
	o.Log = pushtest.Logger()
	c, err := subscriber.New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.done <- c.Run(ctx, func(u subscriber.Update) error {
			r.updates <- u
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	})
	return r
}

func (r *running) next(t *testing.T) subscriber.Update {
	t.Helper()
	select {
	case u := <-r.updates:
		return u
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned %v while an update was expected", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
	}
	panic("unreachable")
}

// expect receives len(want) updates and fails unless their cursors are want, in order.
func (r *running) expect(t *testing.T, want ...uint64) {
	t.Helper()
	var got []uint64
	for range want {
		got = append(got, r.next(t).Cursor)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("cursors %v, want %v", got, want)
	}
}

// quiet fails if an update arrives within d.
func (r *running) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case u := <-r.updates:
		t.Fatalf("unexpected update %s at %d", u.Topic, u.Cursor)
	case <-time.After(d):
	}
}

// waitEvent waits for an event of kind and returns it.
func (r *running) waitEvent(t *testing.T, kind subscriber.EventKind) subscriber.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-r.events:
			if e.Kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %v event within 10s", kind)
		}
	}
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- nil // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running after 10s")
	}
	panic("unreachable")
}

func TestUpdatesArriveInOrderWithPayloadIntact(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			snapPayload := pushtest.Quote("AAPL", 189.12)
			snap := n.Publish(t, "market.AAPL", snapPayload)
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			e.WaitHead(t, snap)

			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"}})
			if live := r.waitEvent(t, subscriber.Live); live.URL != e.URL || live.Cursor != 0 {
				t.Errorf("live event %+v", live)
			}
			u := r.next(t)
			if u.Topic != "market.AAPL" || u.Cursor != snap || u.Kind != "quote" || string(u.Data) != snapPayload {
				t.Fatalf("snapshot %+v %s, want market.AAPL at %d with %s", u, u.Data, snap, snapPayload)
			}

			payloads := map[uint64]string{}
			var want []uint64
			for i := range 20 {
				sym := []string{"AAPL", "MSFT"}[i%2]
				p := pushtest.Quote(sym, 100+float64(i))
				seq := n.Publish(t, "market."+sym, p)
				payloads[seq] = p
				want = append(want, seq)
				n.Publish(t, "sports.nba.g-1", pushtest.Score("nba", "g-1", i, 0)) // not subscribed
			}
			prev := snap
			for _, w := range want {
				u := r.next(t)
				if u.Cursor != w || u.Cursor <= prev || string(u.Data) != payloads[w] || u.Kind != "quote" ||
					!strings.Contains(payloads[w], `"topic":"`+u.Topic+`"`) {
					t.Fatalf("got %s at %d (%s), want %d with %s", u.Topic, u.Cursor, u.Data, w, payloads[w])
				}
				prev = u.Cursor
			}
			if got := r.c.Cursor(); got != want[len(want)-1] {
				t.Errorf("Cursor() = %d, want %d", got, want[len(want)-1])
			}
		})
	}
}

func TestInvalidTopicStopsRun(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr,
				Topics: []string{"market.AAPL", "market.aapl"}})
			err := r.wait(t)
			var refused *subscriber.Error
			if !errors.As(err, &refused) || refused.Code != "invalid_topic" || refused.Message == "" {
				t.Fatalf("Run returned %v, want an *Error with code invalid_topic and the edge's message", err)
			}
			t.Logf("%s: %v", tr, err)
		})
	}
}

func TestHandlerErrorStopsRun(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 1))
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	c, err := subscriber.New(subscriber.Options{URLs: []string{e.URL}, Topics: []string{"market.AAPL"}})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Run(ctx, func(subscriber.Update) error { return stop }); err != stop {
		t.Fatalf("Run returned %v, want the handler's error", err)
	}
}

func TestWebSocketSubscribeUnsubscribe(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: subscriber.TransportWebSocket,
		Topics: []string{"market.AAPL"}})
	r.waitEvent(t, subscriber.Live)
	aapl := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 1))
	r.expect(t, aapl)

	// A new pattern: its snapshot, then its live updates.
	game := n.Publish(t, "sports.nba.g-7", pushtest.Score("nba", "g-7", 1, 0))
	e.WaitHead(t, game)
	if err := r.c.Subscribe(t.Context(), "sports.nba.*"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	r.expect(t, game)
	live := n.Publish(t, "sports.nba.g-7", pushtest.Score("nba", "g-7", 2, 0))
	r.expect(t, live)

	// The edge's refusal comes back from Subscribe; the connection goes on.
	var refused *subscriber.Error
	if err := r.c.Subscribe(t.Context(), "market.aapl"); !errors.As(err, &refused) || refused.Code != "invalid_topic" {
		t.Fatalf("Subscribe(invalid) = %v, want an *Error invalid_topic", err)
	}

	// After Unsubscribe returns, nothing more of AAPL: the sports update published after it comes next.
	if err := r.c.Unsubscribe(t.Context(), "market.AAPL"); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 2))
	sentinel := n.Publish(t, "sports.nba.g-7", pushtest.Score("nba", "g-7", 3, 0))
	r.expect(t, sentinel)
	if got := r.c.Topics(); !slices.Equal(got, []string{"sports.nba.*"}) {
		t.Errorf("Topics() = %v, want [sports.nba.*]", got)
	}

	// What a reconnect subscribes to follows the changes: restart the edge and see only sports.
	addr := e.Addr
	e.Stop()
	e2 := n.StartEdge(t, addr, push.Config{}, push.HubOptions{})
	r.waitEvent(t, subscriber.Live)
	n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 3))
	after := n.Publish(t, "sports.nba.g-7", pushtest.Score("nba", "g-7", 4, 0))
	e2.WaitHead(t, after)
	r.expect(t, after)
}

func TestSubscribeWhileReconnectingIsQueued(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: subscriber.TransportWebSocket,
		Topics: []string{"market.AAPL"}, MinBackoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	r.waitEvent(t, subscriber.Live)
	addr := e.Addr
	e.Stop()
	r.waitEvent(t, subscriber.Reconnecting)
	if err := r.c.Subscribe(t.Context(), "sports.>"); err != nil {
		t.Fatalf("Subscribe while reconnecting: %v", err)
	}
	e2 := n.StartEdge(t, addr, push.Config{}, push.HubOptions{})
	r.waitEvent(t, subscriber.Live)
	game := n.Publish(t, "sports.epl.g-1", pushtest.Score("epl", "g-1", 1, 0))
	e2.WaitHead(t, game)
	r.expect(t, game)
}

// The edge goes away, updates are published meanwhile, a new edge comes up on the same address: the client
// reconnects and receives exactly what it missed, by cursor, with no gap and no duplicate.
func TestReconnectResumesWithoutGapOrDuplicate(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr,
				Topics: []string{"market.AAPL", "market.MSFT"}})
			r.waitEvent(t, subscriber.Live)
			first := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 1))
			r.expect(t, first)

			addr := e.Addr
			e.Stop()
			r.waitEvent(t, subscriber.Reconnecting)
			var missed []uint64
			for i := range 6 {
				sym := []string{"AAPL", "MSFT", "AAPL"}[i%3]
				missed = append(missed, n.Publish(t, "market."+sym, pushtest.Quote(sym, float64(10+i))))
				n.Publish(t, "market.IBM", pushtest.Quote("IBM", 1)) // not subscribed
			}
			n.StartEdge(t, addr, push.Config{}, push.HubOptions{})
			r.expect(t, missed...)
			after := n.Publish(t, "market.MSFT", pushtest.Quote("MSFT", 99))
			r.expect(t, after)
			r.quiet(t, 300*time.Millisecond)
		})
	}
}

// An edge draining for a restart tells its clients so (SSE close event, WebSocket 1012): the client reports it.
func TestEdgeRestartIsReported(t *testing.T) {
	for _, tr := range []string{subscriber.TransportSSE, subscriber.TransportWebSocket} {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"}})
			r.waitEvent(t, subscriber.Live)
			e.Stop()
			closed := r.waitEvent(t, subscriber.Closed)
			if closed.Reason != "server_restart" || closed.Message == "" {
				t.Errorf("closed event %+v, want reason server_restart with a message", closed)
			}
			re := r.waitEvent(t, subscriber.Reconnecting)
			if !errors.Is(re.Err, subscriber.ErrClosedByEdge) || re.Attempt != 1 {
				t.Errorf("reconnecting event %+v, want attempt 1 after ErrClosedByEdge", re)
			}
		})
	}
}

// Resuming from Options.Cursor delivers exactly the updates after it, not just the latest of each topic.
func TestResumeFromCursor(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			var seqs []uint64
			for i := range 6 {
				sym := []string{"AAPL", "MSFT"}[i%2]
				seqs = append(seqs, n.Publish(t, "market."+sym, pushtest.Quote(sym, float64(i+1))))
			}
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			e.WaitHead(t, seqs[5])
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"},
				Cursor: seqs[1]})
			r.expect(t, seqs[2:]...)
			r.quiet(t, 300*time.Millisecond)
		})
	}
}

// A cursor older than the stream keeps gets a reset, then a fresh snapshot.
func TestResetWhenCursorTooOld(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{MaxMsgsPerSubject: 2})
			var last uint64
			for i := range 6 {
				last = n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", float64(i+1)))
			}
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			e.WaitHead(t, last)
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"},
				Cursor: 1})
			reset := r.waitEvent(t, subscriber.Reset)
			t.Logf("reset %+v", reset)
			r.expect(t, last)
			if got := r.c.Cursor(); got != last {
				t.Errorf("Cursor() after the reset's snapshot = %d, want %d", got, last)
			}
		})
	}
}

// With the first edge down, the client moves on to the second URL.
func TestFailoverToNextURL(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	// A port just freed, after everything this test listens on: the kernel could hand it to a later listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			r := start(t, subscriber.Options{URLs: []string{dead, e.URL}, Transport: tr, Topics: []string{"market.AAPL"}})
			re := r.waitEvent(t, subscriber.Reconnecting)
			if re.URL != dead || re.Err == nil {
				t.Errorf("first reconnecting event %+v, want the dead URL's failure", re)
			}
			if live := r.waitEvent(t, subscriber.Live); live.URL != e.URL {
				t.Errorf("live on %s, want %s", live.URL, e.URL)
			}
			seq := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 5))
			u := r.next(t)
			for u.Cursor < seq { // the snapshot of earlier subtests' updates
				u = r.next(t)
			}
			if u.Cursor != seq {
				t.Fatalf("got %d, want %d", u.Cursor, seq)
			}
		})
	}
}

// A Dialer picks the source address, as the load generator does to open more connections than one address has
// ports.
func TestDialerSourceAddress(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			sym := "DIAL" + strings.ToUpper(tr)
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market." + sym}, Dialer: d})
			r.waitEvent(t, subscriber.Live)
			seq := n.Publish(t, "market."+sym, pushtest.Quote(sym, 1))
			r.expect(t, seq)
		})
	}
}

// Run leaves no goroutine behind, whatever the transport.
func TestRunLeavesNoGoroutines(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			tp := &http.Transport{}
			hc := &http.Client{Transport: tp}
			before := runtime.NumGoroutine()
			c, err := subscriber.New(subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"},
				HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			wg.Go(func() {
				if err := c.Run(ctx, func(subscriber.Update) error { return nil }); err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			seq := n.Publish(t, "market.GO", pushtest.Quote("GO", 1))
			e.WaitHead(t, seq)
			time.Sleep(200 * time.Millisecond)
			if tr == subscriber.TransportWebSocket {
				c.Subscribe(t.Context(), "sports.>")
			}
			cancel()
			wg.Wait()
			tp.CloseIdleConnections()
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines after Run, %d before:\n%s", runtime.NumGoroutine(), before,
						buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// Against an edge that checks tokens, Options.Token gives each connection its token. When a short-lived token
// expires the edge ends the stream, the client comes back with a fresh token and resumes: nothing lost or repeated.
func TestTokenRefreshedOnReconnect(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{Auth: pushtest.Authenticator(t)}, push.HubOptions{})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			var minted atomic.Int32
			token := func(context.Context) (string, error) {
				minted.Add(1)
				return pushtest.Token([]string{"market.>"}, time.Second)
			}
			first := n.Publish(t, "market.TOK", pushtest.Quote("TOK", 1))
			e.WaitHead(t, first) // so that the client's snapshot holds it
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.TOK"},
				Token: token})
			r.expect(t, first)
			var want []uint64
			for i := range 30 { // 3 s: past the first token's expiry
				want = append(want, n.Publish(t, "market.TOK", pushtest.Quote("TOK", float64(i+2))))
				time.Sleep(100 * time.Millisecond)
			}
			r.expect(t, want...)
			if got := minted.Load(); got < 2 {
				t.Errorf("%d tokens asked for over 3 s of one-second tokens, want a fresh one after the first expired", got)
			}
		})
	}
	// Without a token, the edge refuses the client and Run says why.
	r := start(t, subscriber.Options{URLs: []string{e.URL}, Topics: []string{"market.TOK"}})
	var se *subscriber.Error
	if err := r.wait(t); !errors.As(err, &se) || se.Code != "unauthorized" {
		t.Errorf("Run without a token returned %v, want the edge's unauthorized", err)
	}
}

// An edge that cannot write as fast as updates arrive (each write here waits longer than the latency budget) sends
// the newest value of each topic and says how many it skipped: the client reports Conflated events, and what it
// delivered and what it was told it skipped account for every update published.
func TestConflationIsReported(t *testing.T) {
	for _, tr := range []string{subscriber.TransportSSE, subscriber.TransportWebSocket} {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{WriteDelay: 300 * time.Millisecond,
				LatencyBudget: 50 * time.Millisecond})
			r := start(t, subscriber.Options{URLs: []string{e.URL}, Transport: tr, Topics: []string{"market.*"}})
			r.waitEvent(t, subscriber.Live)
			const topics, count = 4, 400
			last := map[string]uint64{}
			for i := range count {
				sym := fmt.Sprintf("S%d", i%topics)
				last["market."+sym] = n.Publish(t, "market."+sym, pushtest.Quote(sym, float64(i+1)))
			}
			received := 0
			for got := map[string]uint64{}; !maps.Equal(got, last); received++ {
				u := r.next(t)
				if u.Cursor <= got[u.Topic] {
					t.Fatalf("%s: %d after %d", u.Topic, u.Cursor, got[u.Topic])
				}
				got[u.Topic] = u.Cursor
			}
			var skipped uint64
			var events int
			for drained := false; !drained; {
				select {
				case ev := <-r.events:
					if ev.Kind == subscriber.Conflated {
						skipped += ev.Skipped
						events++
					}
				default:
					drained = true
				}
			}
			if events == 0 || received+int(skipped) != count {
				t.Errorf("received %d and told of %d skipped in %d Conflated events; %d were published", received,
					skipped, events, count)
			}
			t.Logf("received %d of %d, told of %d skipped in %d events", received, count, skipped, events)
		})
	}
}
