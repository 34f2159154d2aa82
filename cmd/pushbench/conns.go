package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/livepush/livepush/subscriber"
	"github.com/livepush/livepush/subscriber/wire"
)

// conns holds what a worker's connections share: the configuration, the counters, and the dialers.
type conns struct {
	cfg   *Config
	run   string // the publisher's run: payloads of other runs are stale
	st    *liveStats
	in    interner
	pace  *pacer
	stale staleness

	mu      sync.Mutex
	dialers map[string]*net.Dialer
	clients map[string]*http.Client
}

// countConn counts the bytes that cross a connection, headers and framing included.
type countConn struct {
	net.Conn
	st *liveStats
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.st.bytesRead.Add(int64(n))
		c.st.reads.Add(1)
	}
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.st.bytesWritten.Add(int64(n))
	}
	return n, err
}

// dial returns the dial function of connection i: from its source address, counting bytes.
func (cs *conns) dial(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	ip := cs.cfg.sourceFor(i)
	cs.mu.Lock()
	if cs.dialers == nil {
		cs.dialers = map[string]*net.Dialer{}
	}
	d := cs.dialers[ip.String()]
	if d == nil {
		d = &net.Dialer{}
		if ip != nil {
			d.LocalAddr = &net.TCPAddr{IP: ip}
			d.Control = bindNoPort
		}
		cs.dialers[ip.String()] = d
	}
	cs.mu.Unlock()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countConn{Conn: c, st: cs.st}, nil
	}
}

// httpClient returns the HTTP client of connection i for polling: one per source address, keeping its connections
// alive between polls.
func (cs *conns) httpClient(i int) *http.Client {
	key := cs.cfg.sourceFor(i).String()
	dial := cs.dial(i)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.clients == nil {
		cs.clients = map[string]*http.Client{}
	}
	if c := cs.clients[key]; c != nil {
		return c
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 1 << 20,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
		TLSClientConfig:     cs.cfg.tls,
	}}
	cs.clients[key] = c
	return c
}

// runStream holds connection i over SSE or WebSocket until ctx ends, reconnecting (and resuming from its cursor)
// when the connection fails or the edge ends it.
func (cs *conns) runStream(ctx context.Context, i int, transport string) {
	idle := cs.cfg.IdleTimeout
	if idle == 0 {
		idle = -1
	}
	o := subscriber.StreamOptions{URL: cs.cfg.urlFor(i), Transport: transport, Topics: cs.cfg.topicsFor(i),
		Dial: cs.dial(i), TLSConfig: cs.cfg.tls, BufferSize: cs.cfg.ReadBuffer, IdleTimeout: idle}
	tr := &tracker{view: cs.stale.newView(cs.cfg, cs.cfg.topicsFor(i))}
	var loc local
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !cs.again(ctx) {
			return
		}
		began := time.Now()
		dctx, cancel := context.WithTimeout(ctx, cs.cfg.ConnectTimeout)
		s, err := subscriber.DialStream(dctx, o)
		cancel()
		cs.st.requests.Add(1)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cs.st.connectError(errorKind(err))
			continue
		}
		cs.connected(i, began)
		stop := context.AfterFunc(ctx, func() { s.Close() })
		err = cs.read(s, i, tr, &loc)
		stop()
		s.Close()
		cs.st.flush(&loc)
		cs.st.connsUp.Add(-1)
		if ctx.Err() != nil {
			return
		}
		cs.st.disconnect(errorKind(err))
		if c := s.Cursor(); c > 0 {
			o.Cursor = c
		}
	}
}

func (cs *conns) connected(i int, began time.Time) {
	cs.st.connects.Add(1)
	cs.st.connectTime.record(i, uint64(time.Since(began)))
	cs.st.connsUp.Add(1)
}

// again waits before a reconnect: the reconnect delay, jittered, then a turn of the connect rate.
func (cs *conns) again(ctx context.Context) bool {
	d := cs.cfg.ReconnectDelay
	if d > 0 {
		d = d/2 + rand.N(d)
	}
	return sleep(ctx, d) && cs.pace.wait(ctx) == nil
}

func (cs *conns) read(s *subscriber.Stream, key int, tr *tracker, loc *local) error {
	told := s.Skipped()
	for {
		m, err := s.Next()
		if k := s.Skipped(); k != told { // a conflated notice came before m
			loc.told += int64(k - told)
			told = k
		}
		if err != nil {
			return err
		}
		if m.Reset {
			cs.st.resets.Add(1)
			tr.reset()
			continue
		}
		cs.observe(key, tr, loc, m.Topic, m.Cursor, m.Data, false)
		if s.Buffered() == 0 {
			cs.st.flush(loc) // the next Next waits for the network
		}
	}
}

// observe checks one update and counts it. With polling, an update seen before is not a duplicate but a topic
// that did not change, and skipped numbers are what polling misses, not gaps.
func (cs *conns) observe(key int, tr *tracker, loc *local, topic []byte, cursor uint64, data []byte, polling bool) {
	now := time.Now().UnixNano()
	f := parsePayload(data)
	stale := cs.run != "" && string(f.run) != cs.run
	v, missed := tr.observe(&cs.in, topic, cursor, f.n, f.hasN && !stale)
	switch v {
	case same:
		if polling {
			loc.unchanged++
			return
		}
		loc.duplicates++
	case older:
		loc.outOfOrder++
	case repeat:
		loc.duplicates++
	case gap:
		if !polling {
			loc.gaps++
		}
		loc.missed += int64(missed)
	}
	loc.deliveries++
	switch {
	case stale:
		loc.stale++
	case v == first:
		loc.snapshot++ // its ts says when it was published, not how long delivery took
	case f.ts > 0:
		cs.st.latency.record(key, uint64(max(0, now-f.ts)))
	}
}

// get makes one request and decodes its answer.
func (cs *conns) get(ctx context.Context, client *http.Client, u string, timeout time.Duration) (*wire.PollAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	cs.st.requests.Add(1)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, &subscriber.Error{Status: resp.StatusCode, Message: resp.Status}
	}
	var a wire.PollAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	io.Copy(io.Discard, resp.Body) // let the connection be reused
	return &a, nil
}

// runPoll holds connection i over long polling (/api/poll) or plain polling (/api/snapshot every interval).
func (cs *conns) runPoll(ctx context.Context, i int, long bool) {
	client := cs.httpClient(i)
	q := url.Values{"topic": cs.cfg.topicsFor(i)}
	base := cs.cfg.urlFor(i) + "/api/snapshot?" + q.Encode()
	timeout := cs.cfg.ConnectTimeout + cs.cfg.IdleTimeout
	var tick *time.Ticker
	if long {
		base = cs.cfg.urlFor(i) + "/api/poll?" + q.Encode() + "&timeout=" + cs.cfg.LongPollTimeout.String()
		timeout += cs.cfg.LongPollTimeout
	} else {
		// Spread the polls of all connections over the interval.
		phase := time.Duration(randomSource(cs.cfg.Seed, i).Int64N(int64(cs.cfg.PollInterval)))
		if !sleep(ctx, phase) {
			return
		}
		tick = time.NewTicker(cs.cfg.PollInterval)
		defer tick.Stop()
	}
	tr := &tracker{view: cs.stale.newView(cs.cfg, cs.cfg.topicsFor(i))}
	var loc local
	var cursor uint64
	up := false
	defer func() {
		if up {
			cs.st.connsUp.Add(-1)
		}
	}()
	for polls := 0; ; polls++ {
		if !long && polls > 0 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		u := base
		if long && cursor > 0 {
			u += "&cursor=" + strconv.FormatUint(cursor, 10)
		}
		began := time.Now()
		a, err := cs.get(ctx, client, u, timeout)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if up {
				cs.st.disconnect(errorKind(err))
				cs.st.connsUp.Add(-1)
				up = false
			} else {
				cs.st.connectError(errorKind(err))
			}
			if !cs.again(ctx) {
				return
			}
			continue
		}
		if !up {
			cs.connected(i, began)
			up = true
		}
		if a.Reset {
			cs.st.resets.Add(1)
			tr.reset()
		}
		for _, m := range a.Updates {
			c, _ := wire.ParseCursor([]byte(m.Cursor))
			cs.observe(i, tr, &loc, []byte(m.Topic), c, m.Data, !long)
		}
		cs.st.flush(&loc)
		if c, ok := wire.ParseCursor([]byte(a.Cursor)); ok && c > cursor {
			cursor = c
		}
	}
}

// errorKind names an error for the counts: refused, timeout, reset, eof, http_503, closed_server_restart, …
func errorKind(err error) string {
	var refused *subscriber.Error
	var closed *subscriber.ClosedError
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &closed):
		return "closed_" + closed.Reason
	case errors.As(err, &refused) && refused.Status != 0:
		return "http_" + strconv.Itoa(refused.Status)
	case errors.As(err, &refused):
		return "refused_" + refused.Code
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// pacer spaces connects to a rate, shared by everyone who connects in a process.
type pacer struct {
	mu   sync.Mutex
	next time.Time
	gap  time.Duration
}

func newPacer(rate float64) *pacer {
	return &pacer{gap: time.Duration(float64(time.Second) / rate)}
}

// wait returns at the caller's turn; turns less than 10ms away do not sleep, so the rate holds on a busy machine
// whose timers are late, in bursts of at most 10ms worth of connects.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = at.Add(p.gap)
	p.mu.Unlock()
	if d := at.Sub(now); d > 10*time.Millisecond && !sleep(ctx, d) {
		return ctx.Err()
	}
	return ctx.Err()
}

// sleep waits d, or less if ctx ends; it reports whether ctx is still going.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
