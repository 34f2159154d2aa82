package subscriber_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
	"github.com/livepush/livepush/subscriber"
)

var streamTransports = []string{subscriber.TransportSSE, subscriber.TransportWebSocket}

// trickleConn hands out at most max bytes per Read, so every header, chunk and frame arrives split.
type trickleConn struct {
	net.Conn
	max int
}

func (c trickleConn) Read(p []byte) (int, error) { return c.Conn.Read(p[:min(len(p), c.max)]) }

func dialStream(t *testing.T, o subscriber.StreamOptions) *subscriber.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := subscriber.DialStream(ctx, o)
	if err != nil {
		t.Fatalf("DialStream: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type result struct {
	m   subscriber.Message
	err error
}

// nextAsync reads the next message in the background.
func nextAsync(s *subscriber.Stream) <-chan result {
	got := make(chan result, 1)
	go func() {
		m, err := s.Next()
		// Copy: the slices are only valid until the next call.
		m.Topic, m.Kind, m.Data = []byte(string(m.Topic)), []byte(string(m.Kind)), []byte(string(m.Data))
		got <- result{m, err}
	}()
	return got
}

// next returns the next message within 10s.
func next(t *testing.T, s *subscriber.Stream) subscriber.Message {
	t.Helper()
	return wait(t, nextAsync(s))
}

func wait(t *testing.T, got <-chan result) subscriber.Message {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("Next: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	panic("unreachable")
}

func TestStreamDeliversPayloadsIntact(t *testing.T) {
	for _, tr := range streamTransports {
		for _, trickle := range []int{0, 1, 7} {
			t.Run(fmt.Sprintf("%s/read%d", tr, trickle), func(t *testing.T) {
				n := pushtest.StartNATS(t, stream.Config{})
				snapPayload := pushtest.Quote("AAPL", 189.12)
				snap := n.Publish(t, "market.AAPL", snapPayload)
				// Payloads up to 300 KiB: past the edge's default limit, raised here.
				e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{},
					push.WithContract(push.Contract{MaxPayload: 1 << 20}))
				e.WaitHead(t, snap)
				o := subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{"market.*", "sports.nba.*"},
					BufferSize: 256}
				o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if err != nil || trickle == 0 {
						return c, err
					}
					return trickleConn{c, trickle}, nil
				}
				s := dialStream(t, o)
				m := next(t, s)
				if string(m.Topic) != "market.AAPL" || m.Cursor != snap || string(m.Kind) != "quote" ||
					string(m.Data) != snapPayload || m.Reset {
					t.Fatalf("snapshot %s %d %s %s, want market.AAPL at %d with %s", m.Topic, m.Cursor, m.Kind, m.Data,
						snap, snapPayload)
				}
				type sent struct {
					topic, payload string
					cursor         uint64
				}
				var want []sent
				for i := range 30 {
					topic, payload := "market.MSFT", pushtest.Quote("MSFT", float64(i))
					switch i % 3 {
					case 1:
						topic, payload = "sports.nba.g-1", pushtest.Score("nba", "g-1", i, 0)
					case 2: // large payloads cross every buffer: 300 KiB goes through the growth to 512 KiB
						size := []int{100, 5000, 70000, 300000}[i/3%4]
						if trickle == 1 {
							size = min(size, 3000) // a byte per read: keep the test quick
						}
						pad := strings.Repeat("x", size)
						payload = strings.Replace(payload, `"volume"`, `"pad":"`+pad+`","volume"`, 1)
					}
					want = append(want, sent{topic, payload, n.Publish(t, topic, payload)})
				}
				for _, w := range want {
					m := next(t, s)
					if string(m.Topic) != w.topic || m.Cursor != w.cursor || string(m.Data) != w.payload {
						t.Fatalf("got %s at %d (%d bytes), want %s at %d (%d bytes)", m.Topic, m.Cursor, len(m.Data),
							w.topic, w.cursor, len(w.payload))
					}
				}
				if s.Cursor() != want[len(want)-1].cursor {
					t.Errorf("Cursor() = %d, want %d", s.Cursor(), want[len(want)-1].cursor)
				}
			})
		}
	}
}

func TestStreamResumesFromCursor(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	var cursors []uint64
	for i := range 5 {
		cursors = append(cursors, n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", float64(i))))
	}
	e.WaitHead(t, cursors[4])
	for _, tr := range streamTransports {
		t.Run(tr, func(t *testing.T) {
			s := dialStream(t, subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{"market.AAPL"},
				Cursor: cursors[1]})
			for _, c := range cursors[2:] {
				if m := next(t, s); m.Cursor != c {
					t.Fatalf("cursor %d, want %d", m.Cursor, c)
				}
			}
		})
	}
}

// A Stream to an https:// edge (or a proxy that ends TLS) resumes and follows as over plain HTTP, trusting the CA
// it is given and nothing else.
func TestStreamOverTLS(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	cert := tlscerttest.New(t, "edge", "127.0.0.1")
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate(t)}}},
		push.HubOptions{})
	for _, tr := range streamTransports {
		t.Run(tr, func(t *testing.T) {
			from := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 1))
			first := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 2))
			e.WaitHead(t, first)
			o := subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{"market.AAPL"}}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if s, err := subscriber.DialStream(ctx, o); err == nil || !strings.Contains(err.Error(), "certificate") {
				if s != nil {
					s.Close()
				}
				t.Fatalf("an edge whose certificate is not trusted: %v, want a certificate error", err)
			}
			o.TLSConfig = &tls.Config{RootCAs: cert.Pool()}
			o.Cursor = from
			s := dialStream(t, o)
			if m := next(t, s); m.Cursor != first {
				t.Fatalf("resumed at %d, want %d", m.Cursor, first)
			}
			live := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 3))
			if m := next(t, s); m.Cursor != live || string(m.Topic) != "market.AAPL" {
				t.Fatalf("live: %s %d, want market.AAPL %d", m.Topic, m.Cursor, live)
			}
		})
	}
}

// An idle WebSocket stream answers the edge's pings while Next waits: with a short heartbeat and write timeout, an
// edge whose ping went unanswered would drop it.
func TestStreamSurvivesHeartbeats(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{Heartbeat: 50 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond})
	for _, tr := range streamTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			topic := "market.HB" + strings.ToUpper(tr)
			s := dialStream(t, subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{topic},
				IdleTimeout: time.Second})
			got := nextAsync(s)
			time.Sleep(time.Second) // 20 heartbeats
			c := n.Publish(t, topic, pushtest.Quote(strings.TrimPrefix(topic, "market."), 1))
			if m := wait(t, got); m.Cursor != c {
				t.Fatalf("cursor %d, want %d", m.Cursor, c)
			}
		})
	}
}

func TestStreamReportsEdgeClose(t *testing.T) {
	for _, tr := range streamTransports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
			s := dialStream(t, subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{"market.AAPL"}})
			go e.Stop()
			_, err := s.Next()
			var closed *subscriber.ClosedError
			if !errors.As(err, &closed) || closed.Reason != "server_restart" || !errors.Is(err, subscriber.ErrClosedByEdge) {
				t.Fatalf("Next: %v, want a *ClosedError server_restart", err)
			}
			if tr == subscriber.TransportWebSocket && closed.Code != 1012 {
				t.Errorf("close code %d, want 1012", closed.Code)
			}
			if tr == subscriber.TransportSSE && closed.Retry != time.Second {
				t.Errorf("retry %v, want 1s", closed.Retry)
			}
		})
	}
}

func TestStreamRefusals(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	// SSE is refused in the HTTP answer; a WebSocket in reply to its subscribe: both from DialStream.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var refused *subscriber.Error
	for _, tc := range []struct {
		o      subscriber.StreamOptions
		status int
		code   string
	}{
		{subscriber.StreamOptions{Topics: []string{"market.aapl"}}, 400, "invalid_topic"},
		{subscriber.StreamOptions{Topics: []string{"market.A"}, Cursor: 1e9}, 400, "bad_cursor"},
		{subscriber.StreamOptions{Transport: "ws", Topics: []string{"market.aapl"}}, 0, "invalid_topic"},
		{subscriber.StreamOptions{Transport: "ws", Topics: []string{"market.A"}, Cursor: 1e9}, 0, "bad_cursor"},
	} {
		tc.o.URL = e.URL
		s, err := subscriber.DialStream(ctx, tc.o)
		if s != nil || !errors.As(err, &refused) || refused.Status != tc.status || refused.Code != tc.code {
			t.Errorf("%+v: %v, want an *Error %d %s", tc.o, err, tc.status, tc.code)
		}
	}
	for _, o := range []subscriber.StreamOptions{
		{URL: "ftp://x", Topics: []string{"market.A"}},
		{URL: "http://x", Transport: "poll", Topics: []string{"market.A"}},
		{URL: "http://x"},
	} {
		if _, err := subscriber.DialStream(ctx, o); err == nil {
			t.Errorf("DialStream(%+v) succeeded", o)
		}
	}
	// An edge that accepts and never answers: the context bounds the handshake.
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, tr := range streamTransports {
		short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		began := time.Now()
		_, err := subscriber.DialStream(short, subscriber.StreamOptions{URL: "http://" + silent.Addr().String(),
			Transport: tr, Topics: []string{"market.A"}})
		cancel()
		if err == nil || time.Since(began) > 2*time.Second {
			t.Errorf("%s: DialStream to a silent edge: %v after %v", tr, err, time.Since(began))
		}
	}
	// Nobody listening: the dial error comes back.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close()
	if _, err := subscriber.DialStream(ctx, subscriber.StreamOptions{URL: "http://" + ln.Addr().String(),
		Topics: []string{"market.A"}}); err == nil {
		t.Error("DialStream to a closed port succeeded")
	}
}

// A Stream counts what the edge's conflated notices say it skipped: with what Next returned, every update published.
func TestStreamCountsSkipped(t *testing.T) {
	for _, tr := range streamTransports {
		t.Run(tr, func(t *testing.T) {
			n := pushtest.StartNATS(t, stream.Config{})
			e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{WriteDelay: 300 * time.Millisecond,
				LatencyBudget: 50 * time.Millisecond})
			// DialStream returns once the edge has subscribed the stream.
			s := dialStream(t, subscriber.StreamOptions{URL: e.URL, Transport: tr, Topics: []string{"market.*"}})
			const count = 200
			var last uint64
			for i := range count {
				sym := "S" + strconv.Itoa(i%2)
				last = n.Publish(t, "market."+sym, pushtest.Quote(sym, float64(i+1)))
			}
			returned := 0
			for m := next(t, s); ; m = next(t, s) {
				returned++
				if m.Cursor == last {
					break
				}
			}
			if s.Skipped() == 0 || uint64(returned)+s.Skipped() != count {
				t.Errorf("Next returned %d updates and Skipped() is %d; %d were published", returned, s.Skipped(), count)
			}
		})
	}
}
