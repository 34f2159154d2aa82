// Package subscriber is the Go client of a Livepush edge: it follows topic patterns over SSE, WebSocket or long
// polling and hands each update to a function, in stream order per topic.
//
// A Client reconnects on its own. When a connection fails or the edge ends it (a restart, a drain, a slow
// consumer), the client waits a backoff with jitter (or what the edge asked for: SSE retry:, WebSocket close codes,
// Retry-After), moves on to the next edge URL if it has several, and resumes from its cursor: the highest cursor it
// has delivered. Cursors are the stream's global sequence, so one number resumes any set of topics on any
// transport and any edge. An update whose cursor is not above the last one delivered for its topic is dropped, so
// a resumed stream or a snapshot overlapping what was delivered never shows a duplicate.
//
//	c, err := subscriber.New(subscriber.Options{URLs: []string{"http://localhost:8080"}, Topics: []string{"market.*"}})
//	if err != nil { … }
//	err = c.Run(ctx, func(u subscriber.Update) error {
//		fmt.Println(u.Topic, u.Cursor, string(u.Data))
//		return nil
//	})
//
// Run does its work on the calling goroutine (the WebSocket library adds nothing per connection while idle), so a
// load generator can hold thousands of clients in one process; give them an HTTPClient or a Dialer of their own to
// pick source addresses.
//
// The package is a module of its own, github.com/livepush/livepush/subscriber, which needs nothing but
// coder/websocket: a program that subscribes does not build the edge's dependencies. Its packages wire (the
// protocol) and topic (the topic grammar) are the ones the edge itself uses.
package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

// Transports a client can use.
const (
	TransportSSE       = "sse"  // GET /sse: one Server-Sent Events stream
	TransportWebSocket = "ws"   // GET /ws: the JSON control protocol; topics can change on a live connection
	TransportPoll      = "poll" // GET /api/poll: long polling, one request per batch of updates
)

// Options configure a Client. Only URLs and Topics are required; each zero field takes the default it documents.
type Options struct {
	// URLs are the edges' base URLs ("http://host:8080", "https://edge.example/push"). The client starts with the
	// first; after a failure, or when the edge ends the connection, it tries the next one, round robin.
	URLs []string
	// Transport is TransportSSE, TransportWebSocket or TransportPoll. Zero: SSE.
	Transport string
	// Topics are the topic patterns to follow: "market.AAPL", "market.*", "sports.>".
	Topics []string
	// Cursor resumes after this cursor, as returned by Cursor. Zero: start from the snapshot (the latest update of
	// each topic), then live.
	Cursor uint64
	// MaxRate asks the edge for at most this many updates per second per topic, latest value winning. A
	// rate-limited client wants latest values rather than history: a reconnect then gets the latest value of each
	// topic, not every update it missed. Zero: no limit.
	MaxRate float64
	// HTTPClient makes every request, the WebSocket handshake included. Its Timeout must be zero for SSE, since it
	// would cut the stream; the client bounds connects and idle streams itself. Zero: a client using Dialer.
	HTTPClient *http.Client
	// Dialer opens the connections of the default HTTPClient: set its LocalAddr to choose a source address. Zero:
	// http.DefaultTransport's. Ignored when HTTPClient is set.
	Dialer *net.Dialer
	// MinBackoff and MaxBackoff bound the wait between reconnect attempts, which doubles after each failure and is
	// jittered. Zero: 250ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout gives up on a connection silent for this long (no update, no heartbeat) and reconnects; it also
	// bounds a connect. The edge sends a heartbeat every 15s by default. Zero: 45s.
	IdleTimeout time.Duration
	// OnEvent, if set, hears of the connection's life: Connecting, Live, Reconnecting, Reset, Closed. It runs on
	// Run's goroutine, in order with the updates, and must not block.
	OnEvent func(Event)
	// Log receives debug logs of connections and warnings about messages the client could not read. Zero: none.
	Log *slog.Logger
	// Token, if set, gives the bearer token for an edge that checks tokens. It is called before every connection
	// and every long poll, so when the edge ends a stream whose token expired, the client comes back with a fresh
	// one and resumes from its cursor. An error from it counts as a failed connection attempt. When the edge refuses
	// a token, the client tries again with the next one Token gives, and gives up (Run returns the edge's
	// "unauthorized") when the same token has been refused three times running.
	Token func(context.Context) (string, error)
}

const (
	defaultMinBackoff  = 250 * time.Millisecond
	defaultMaxBackoff  = 10 * time.Second
	defaultIdleTimeout = 45 * time.Second
	tryLaterWait       = 2 * time.Second  // the least wait after "try again later" (WebSocket 1013, slow consumer)
	pollWait           = 25 * time.Second // how long a long poll asks the edge to hold the request
	writeTimeout       = 10 * time.Second // longest one WebSocket control message may take to send
	replyTimeout       = 10 * time.Second // longest Subscribe and Unsubscribe wait for a reply without a deadline
	maxMessage         = 16 << 20         // largest SSE event, WebSocket frame or poll answer read
)

// Client follows topics on one or more edges. Create it with New and call Run; Cursor, Subscribe and Unsubscribe
// are safe to call from other goroutines while it runs.
type Client struct {
	urls        []string
	transport   string
	maxRate     float64
	http        *http.Client
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idleTimeout time.Duration
	onEvent     func(Event)
	log         *slog.Logger
	token       func(context.Context) (string, error)
	sent        string // the token of the connection being made; only Run's goroutine touches it
	refused     string // the last token an edge refused
	refusals    int    // how many times running it was refused

	cursor  atomic.Uint64
	running atomic.Bool
	last    map[string]uint64 // the last cursor delivered per topic; only Run's goroutine touches it

	mu     sync.Mutex
	topics []string   // what a (re)connect subscribes to
	ws     *wsSession // the live WebSocket session, if any
}

// New checks o and returns a client ready to Run. It returns ErrNoURL, ErrBadURL, ErrNoTopic or
// ErrUnknownTransport for options it cannot work with. Whether the topics are valid is the edge's to say: Run
// returns its refusal.
func New(o Options) (*Client, error) {
	c := &Client{
		transport:   o.Transport,
		maxRate:     max(o.MaxRate, 0),
		http:        o.HTTPClient,
		minBackoff:  o.MinBackoff,
		maxBackoff:  o.MaxBackoff,
		idleTimeout: o.IdleTimeout,
		onEvent:     o.OnEvent,
		log:         o.Log,
		token:       o.Token,
		last:        make(map[string]uint64),
	}
	switch c.transport {
	case "":
		c.transport = TransportSSE
	case TransportSSE, TransportWebSocket, TransportPoll:
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownTransport, o.Transport)
	}
	for _, raw := range o.URLs {
		base, err := baseURL(raw)
		if err != nil {
			return nil, err
		}
		c.urls = append(c.urls, base)
	}
	if len(c.urls) == 0 {
		return nil, ErrNoURL
	}
	for _, t := range o.Topics {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(c.topics, t) {
			c.topics = append(c.topics, t)
		}
	}
	if len(c.topics) == 0 {
		return nil, ErrNoTopic
	}
	if c.http == nil {
		c.http = http.DefaultClient
		if o.Dialer != nil {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.DialContext = o.Dialer.DialContext
			c.http = &http.Client{Transport: tr}
		}
	}
	if c.minBackoff <= 0 {
		c.minBackoff = defaultMinBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = defaultMaxBackoff
	}
	c.maxBackoff = max(c.maxBackoff, c.minBackoff)
	if c.idleTimeout <= 0 {
		c.idleTimeout = defaultIdleTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.cursor.Store(o.Cursor)
	return c, nil
}

// baseURL checks an edge URL and returns it without a trailing slash. ws:// and wss:// are taken as http:// and
// https://.
func baseURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrBadURL, raw, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("%w %q: use http://host:port or https://host", ErrBadURL, raw)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w %q: use http://host:port or https://host", ErrBadURL, raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// Cursor returns the resume cursor: the highest cursor delivered so far (or Options.Cursor before the first
// update). Another client created with it resumes where this one stopped.
func (c *Client) Cursor() uint64 { return c.cursor.Load() }

// Topics returns the topic patterns a reconnect subscribes to: Options.Topics, changed by Subscribe and Unsubscribe.
func (c *Client) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.topics)
}

// Run connects, hands every update to handle and reconnects when a connection fails, until ctx ends (it then
// returns nil) or a permanent error: handle's error, returned as is, or an *Error from the edge when retrying cannot
// help (an invalid topic, an endpoint the edge does not serve, a WebSocket closed for policy). Transient failures
// (the edge unreachable, restarting, overloaded) are retried forever; OnEvent hears of them.
//
// handle is called on Run's goroutine, one update at a time, in stream order per topic; while it runs, the
// connection is not read. Run returns ErrRunning if the client is already running; it returns only after every
// goroutine it started has ended.
func (c *Client) Run(ctx context.Context, handle func(Update) error) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	attempt := 0 // failures since the client was last live
	for i := 0; ; i = (i + 1) % len(c.urls) {
		base := c.urls[i]
		c.emit(Event{Kind: Connecting, URL: base, Attempt: attempt})
		var end ended
		switch c.transport {
		case TransportWebSocket:
			end = c.runWS(ctx, base, handle)
		case TransportPoll:
			end = c.runPoll(ctx, base, handle)
		default:
			end = c.runSSE(ctx, base, handle)
		}
		if ctx.Err() != nil && !end.handler {
			return nil
		}
		if end.permanent {
			return end.err
		}
		if end.live {
			attempt = 0
		}
		attempt++
		delay := c.delay(end, attempt)
		c.log.Debug("connection ended", "url", base, "err", end.err, "attempt", attempt, "retry_in", delay)
		c.emit(Event{Kind: Reconnecting, URL: base, Err: end.err, Attempt: attempt, Delay: delay})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// ended says why a connection ended and how soon to come back.
type ended struct {
	err       error
	permanent bool          // Run returns err
	handler   bool          // err is handle's
	live      bool          // the connection was live before it ended: the backoff starts over
	soon      bool          // the edge asked for an immediate reconnect (a restart): no backoff the first time
	atLeast   time.Duration // the edge asked for at least this wait (SSE retry:, Retry-After, try again later)
}

func failed(err error) ended     { return ended{err: err} }
func permanent(err error) ended  { return ended{err: err, permanent: true} }
func handlerErr(err error) ended { return ended{err: err, permanent: true, handler: true} }

// delay is the wait before attempt (1 for the first after a live connection): the backoff, MinBackoff doubled
// per failure up to MaxBackoff and jittered over its upper half, or less for a restart, or at least what the edge
// asked for.
func (c *Client) delay(e ended, attempt int) time.Duration {
	var d time.Duration
	if e.soon && attempt == 1 {
		d = rand.N(c.minBackoff) // spread a restarted edge's clients
	} else {
		d = c.backoff(attempt)
	}
	if e.atLeast > 0 && d < e.atLeast {
		d = e.atLeast + rand.N(e.atLeast/4+1)
	}
	return d
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff
	for i := 1; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.maxBackoff)
	return d/2 + rand.N(d/2+1)
}

func (c *Client) emit(e Event) {
	if c.onEvent != nil {
		c.onEvent(e)
	}
}

// deliver hands u to handle unless its topic has had it, or a later update, already.
func (c *Client) deliver(u Update, handle func(Update) error) error {
	if u.Cursor <= c.last[u.Topic] {
		return nil
	}
	c.last[u.Topic] = u.Cursor
	if u.Cursor > c.cursor.Load() {
		c.cursor.Store(u.Cursor) // only Run's goroutine stores
	}
	return handle(u)
}

// reset starts over after the edge said it could not resume: what was delivered no longer says what is new, and
// the snapshot that follows is the new starting point.
func (c *Client) reset(base string, cursor uint64, reason string) {
	clear(c.last)
	c.cursor.Store(0)
	c.log.Debug("reset", "url", base, "cursor", cursor, "reason", reason)
	c.emit(Event{Kind: Reset, URL: base, Cursor: cursor, Reason: reason})
}

// conflated tells the client's OnEvent that the edge skipped superseded updates.
func (c *Client) conflated(base string, skipped uint64) {
	c.log.Debug("conflated", "url", base, "skipped", skipped)
	c.emit(Event{Kind: Conflated, URL: base, Skipped: skipped})
}

func (c *Client) live(base string, cursor uint64) {
	c.log.Debug("live", "url", base, "transport", c.transport, "cursor", cursor)
	c.emit(Event{Kind: Live, URL: base, Cursor: cursor})
}

// topicQuery returns the query shared by SSE and polling: topics, maxRate and the given extras.
func (c *Client) topicQuery(extra ...string) url.Values {
	q := url.Values{"topic": c.Topics()}
	if c.maxRate > 0 {
		q.Set("maxRate", strconv.FormatFloat(c.maxRate, 'g', -1, 64))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q
}

// authorize sets the Authorization header of a request from Options.Token.
func (c *Client) authorize(ctx context.Context, h http.Header) error {
	if c.token == nil {
		return nil
	}
	tok, err := c.token(ctx)
	if err != nil {
		return fmt.Errorf("subscriber: getting a token: %w", err)
	}
	c.sent = tok
	h.Set("Authorization", "Bearer "+tok)
	return nil
}

// tokenRefused decides whether a connection refused for its token is worth another attempt (with backoff):
// Options.Token may give a fresh one, or its cache may catch up with an edge whose clock is ahead. The same token
// refused three times running is given up.
func (c *Client) tokenRefused() (retry bool) {
	if c.token == nil {
		return false
	}
	if c.sent != c.refused {
		c.refused, c.refusals = c.sent, 0
	}
	c.refusals++
	return c.refusals < maxTokenRefusals
}

const maxTokenRefusals = 3

// httpFailure is the package's httpFailure, except that a 401 is retried (with backoff) when Options.Token may
// give another token: the one sent may just have expired.
func (c *Client) httpFailure(resp *http.Response) ended {
	end := httpFailure(resp)
	var e *Error
	if end.permanent && errors.As(end.err, &e) && e.Status == http.StatusUnauthorized && c.tokenRefused() {
		end.permanent = false
	}
	return end
}

// httpFailure turns an answer other than 200 into how the connection ended: a permanent *Error for a refused
// request (4xx), a retry for an edge that is overloaded or failing (408, 429, 5xx), honouring Retry-After.
func httpFailure(resp *http.Response) ended {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	e := &Error{Status: resp.StatusCode}
	var answer wire.ErrorBody
	if json.Unmarshal(body, &answer) == nil {
		e.Code, e.Message = answer.Code, answer.Error
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 || e.Message == "" {
			e.Message = resp.Status
		}
	}
	s := resp.StatusCode
	if s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests {
		return permanent(e)
	}
	end := failed(e)
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		end.atLeast = time.Duration(min(secs, 300)) * time.Second
	}
	return end
}

// badCursor turns the edge's refusal of a resume cursor ahead of the stream (code bad_cursor: the stream was
// recreated, or the edge serves another deployment) into a reset: no edge of this stream can resume from it, so the
// client starts over from the snapshot, at once. Other endings pass through.
func (c *Client) badCursor(base string, since uint64, end ended) ended {
	var e *Error
	if since == 0 || !errors.As(end.err, &e) || e.Code != "bad_cursor" {
		return end
	}
	c.reset(base, 0, e.Message)
	return ended{err: e, soon: true}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// watchdog cancels a connection that stays silent: each kick proves it alive, and the timer, when it fires, looks
// at the last kick before deciding. A kick is one atomic store, so it costs nothing on the read path.
type watchdog struct {
	timeout time.Duration
	lastNS  atomic.Int64
	fired   atomic.Bool
	timer   *time.Timer
}

func newWatchdog(timeout time.Duration, cancel func()) *watchdog {
	w := &watchdog{timeout: timeout}
	w.kick()
	w.timer = time.AfterFunc(timeout, func() {
		if left := w.timeout - time.Duration(time.Now().UnixNano()-w.lastNS.Load()); left > 0 {
			w.timer.Reset(left)
			return
		}
		w.fired.Store(true)
		cancel()
	})
	return w
}

func (w *watchdog) kick() { w.lastNS.Store(time.Now().UnixNano()) }

func (w *watchdog) stop() { w.timer.Stop() }

// err returns the error to report in place of the one a silent connection was cut with.
func (w *watchdog) err(err error) error {
	if w.fired.Load() {
		return fmt.Errorf("subscriber: nothing from the edge for %v: %w", w.timeout, err)
	}
	return err
}

// kickReader kicks a watchdog on every read.
type kickReader struct {
	r io.Reader
	w *watchdog
}

func (k kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.w.kick()
	}
	return n, err
}

// closeError describes an edge's deliberate close.
func closeError(reason, message string) error {
	if message == "" {
		return fmt.Errorf("%w: %s", ErrClosedByEdge, reason)
	}
	return fmt.Errorf("%w: %s: %s", ErrClosedByEdge, reason, message)
}
