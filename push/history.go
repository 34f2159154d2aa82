package push

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/livepush/livepush/subscriber/topic"
)

// History for charts: GET /api/history?topic=T answers the updates of one topic that the stream keeps (the last N,
// or those after a cursor), or, with interval, one OHLC bar of their prices per interval. The answer's cursor is the
// edge's head when it was read: every update of T up to it is in the answer (or was before since), and every update
// after it reaches a subscriber of T live, so a chart that joins the two at that cursor has no gap and no duplicate.
//
// Reading a topic's history from the stream costs one read of everything the stream keeps of it, so the edge reads
// it once and keeps it: per topic, a point (cursor, time, price) of every update, and the encodings of the latest
// updates, within HistoryOptions' bounds. Later answers only add what came since, from the hub's memory of recent
// updates when it reaches back far enough, from the stream otherwise.

// HistoryOptions bound /api/history. The zero value is usable: each zero field takes the default it documents.
type HistoryOptions struct {
	// MaxUpdates is the most updates, or bars, one answer carries, and the most updates of one topic the cache keeps
	// for answers. Zero: 10,000.
	MaxUpdates int
	// MaxBytes bounds the updates one answer carries, and those one topic keeps in the cache. Zero: 4 MiB.
	MaxBytes int
	// CacheBytes bounds the memory of the history cache, across topics: the topics asked for least recently leave
	// it first. Zero: 64 MiB.
	CacheBytes int
}

func (o HistoryOptions) withDefaults() HistoryOptions {
	if o.MaxUpdates <= 0 {
		o.MaxUpdates = 10_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 4 << 20
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 64 << 20
	}
	return o
}

// Intervals of bars: from a second to a day, in whole seconds.
const (
	minInterval = time.Second
	maxInterval = 24 * time.Hour
)

// historyCache holds the history of the topics clients asked for, least recently asked last.
type historyCache struct {
	opts HistoryOptions

	mu      sync.Mutex
	entries map[string]*topicHistory
	order   list.List // of *topicHistory, most recently asked first
	bytes   int       // the entries' sizes, as last accounted
}

func newHistoryCache(opts HistoryOptions) *historyCache {
	return &historyCache{opts: opts.withDefaults(), entries: make(map[string]*topicHistory)}
}

// topicHistory is what the cache keeps of one topic. Its fields are guarded by lock, held by one request at a time:
// the one that reads the stream for it, while the others wait for its result instead of reading the same again.
type topicHistory struct {
	topic string
	lock  chan struct{} // a mutex that a waiter can give up on
	elem  *list.Element // in historyCache.order; nil once evicted
	size  int           // accounted in historyCache.bytes; guarded by historyCache.mu

	epoch   uint64 // the hub's epoch when filled: a recreated stream's cursors start over
	filled  bool
	floor   uint64 // the stream keeps every update after this cursor, as last asked
	through uint64 // everything of the topic up to this cursor has been seen
	// points has the point of every update after from (up to through) that has a price and a time.
	from   uint64
	points []historyPoint
	// lines are the encodings of every update after linesFrom: the latest, at most MaxUpdates and MaxBytes of them.
	linesFrom uint64
	lines     []historyLine
	lineBytes int
}

type historyPoint struct {
	cursor uint64
	ts     int64 // unix nanoseconds, from the payload's ts
	price  float64
}

type historyLine struct {
	cursor uint64
	json   []byte // the update as the WebSocket and polling send it, newline included
}

const (
	pointSize     = 24
	lineOverhead  = 40
	entryOverhead = 512
)

func (e *topicHistory) memSize() int {
	return entryOverhead + pointSize*cap(e.points) + lineOverhead*cap(e.lines) + e.lineBytes
}

// acquire returns the topic's entry, locked, creating it if needed; release it with done.
func (c *historyCache) acquire(ctx context.Context, t string) (*topicHistory, error) {
	c.mu.Lock()
	e := c.entries[t]
	if e == nil {
		e = &topicHistory{topic: t, lock: make(chan struct{}, 1)}
		e.elem = c.order.PushFront(e)
		c.entries[t] = e
	} else if e.elem != nil {
		c.order.MoveToFront(e.elem)
	}
	c.mu.Unlock()
	select {
	case e.lock <- struct{}{}:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// done accounts for what e holds now, evicting the topics asked for least recently while the cache is over its
// bound, and unlocks e.
func (c *historyCache) done(e *topicHistory) {
	size := e.memSize()
	c.mu.Lock()
	if e.elem != nil {
		c.bytes += size - e.size
		e.size = size
		for c.bytes > c.opts.CacheBytes {
			last := c.order.Back()
			if last == nil || last == e.elem {
				break
			}
			c.evictLocked(last.Value.(*topicHistory))
		}
	}
	c.mu.Unlock()
	<-e.lock
}

// evictLocked forgets e; a request holding it finishes with what it has. c.mu must be held.
func (c *historyCache) evictLocked(e *topicHistory) {
	c.order.Remove(e.elem)
	e.elem = nil
	c.bytes -= e.size
	if c.entries[e.topic] == e {
		delete(c.entries, e.topic)
	}
}

// size returns the memory the cache holds, as last accounted.
func (c *historyCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// errHistoryTooLarge is an answer that would pass HistoryOptions' bounds; its text says which and what to ask instead.
type errHistoryTooLarge struct{ msg string }

func (e *errHistoryTooLarge) Error() string { return e.msg }

// historyRequest is a parsed /api/history query.
type historyRequest struct {
	topic    string
	last     int // 0: no limit
	since    uint64
	hasSince bool
	interval time.Duration // 0: the updates themselves
}

func (s *Server) handleHistory(c *gin.Context) {
	req, ok := s.historyRequest(c)
	if !ok {
		return
	}
	if _, ok := s.authorize(c, []string{req.topic}); !ok {
		return
	}
	reset := false
	if req.hasSince {
		checked, ok := s.checkCursor(c, req.since)
		if !ok {
			return
		}
		if errors.Is(checked.err, ErrCursorExpired) {
			reset, req.since = true, 0 // what the stream keeps, and the client told that it has a gap
		}
	}
	if len(unknownOf(c)) > 0 {
		// Nothing of it in the catalog: nothing in the stream either. Nothing is read, nothing is kept.
		s.writeHistory(c, req, s.hub.Head(), nil, nil, reset)
		return
	}
	e, err := s.history.acquire(c.Request.Context(), req.topic)
	if err != nil {
		return // the client left
	}
	err = s.hub.extendHistory(c.Request.Context(), c.ClientIP(), e, s.history.opts)
	var lines [][]byte
	var bars []bar
	if err == nil {
		if req.interval > 0 {
			bars, err = e.bars(req, s.history.opts)
		} else {
			lines, err = e.answer(req, s.history.opts)
		}
	}
	through := e.through
	if req.hasSince && req.since < e.floor {
		reset = true // the stream no longer keeps all that came after since, whatever this edge's memory holds
	}
	s.history.done(e)

	var tooLarge *errHistoryTooLarge
	switch {
	case err == nil:
		s.writeHistory(c, req, through, lines, bars, reset)
	case errors.As(err, &tooLarge):
		writeError(c, http.StatusRequestEntityTooLarge, "too_large", tooLarge.msg)
	case errors.Is(err, ErrBusy):
		c.Header("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
		writeError(c, http.StatusServiceUnavailable, "busy",
			"too many clients are reading the stream's history on this edge: retry shortly")
	case c.Request.Context().Err() != nil:
	default:
		s.log.Warn("history: reading the stream failed", "topic", req.topic, "err", err)
		c.Header("Retry-After", "2")
		writeError(c, http.StatusServiceUnavailable, "unavailable", "the stream is unreachable right now: retry shortly")
	}
}

// historyRequest reads and checks the query, or answers 400 and returns false.
func (s *Server) historyRequest(c *gin.Context) (historyRequest, bool) {
	bad := func(code, msg string) (historyRequest, bool) {
		writeError(c, http.StatusBadRequest, code, msg)
		return historyRequest{}, false
	}
	topics := c.QueryArray("topic")
	if len(topics) != 1 {
		return bad("bad_request", "give one topic, as in ?topic=market.AAPL&last=100")
	}
	t := topics[0]
	if err := topic.ValidatePattern(t); err != nil {
		return bad("invalid_topic", err.Error())
	}
	if !topic.IsLiteral(t) {
		return bad("invalid_topic", fmt.Sprintf("history is read for one topic named in full, not a pattern (%s)", t))
	}
	s.noteUnknown(c, topics)
	req := historyRequest{topic: t}
	most := s.history.opts.MaxUpdates
	if v := c.Query("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > most {
			return bad("bad_request", fmt.Sprintf("last must be from 1 to %d", most))
		}
		req.last = n
	}
	since, given, ok := cursorFromRequest(c, "", "since")
	if !ok {
		return historyRequest{}, false
	}
	req.since, req.hasSince = since, given
	if v := c.Query("interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < minInterval || d > maxInterval || d%time.Second != 0 {
			return bad("bad_request", fmt.Sprintf("interval must be a whole number of seconds from %s to %s, as in 1m or 5s",
				minInterval, "24h"))
		}
		req.interval = d
	}
	return req, true
}

// extendHistory brings e up to the hub's head: from the hub's memory of recent updates when it reaches back to
// what e has, from the stream otherwise, within the edge's bounds on stream reads. Updates older than the stream
// keeps leave e.
func (h *Hub) extendHistory(ctx context.Context, remote string, e *topicHistory, opts HistoryOptions) error {
	if epoch := h.epoch.Load(); e.epoch != epoch || !e.filled {
		e.clear(epoch)
	}
	var first uint64
	if h.history != nil {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		f, _, err := h.history.Bounds(bctx, 0)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		first = f
	}
	floor := first - min(first, 1) // every update after floor is kept by the stream
	if !e.filled {
		e.filled, e.through, e.from, e.linesFrom = true, floor, floor, floor
	}
	e.forget(floor)

	h.cacheMu.RLock()
	if h.recent.covers(e.through) || h.history == nil {
		recent := h.recent.after(nil, e.through, func(u *Update) bool { return u.Topic == e.topic })
		head := h.head
		h.cacheMu.RUnlock()
		for _, u := range recent {
			e.add(u, opts)
		}
		e.through = max(e.through, head)
		e.trimPoints(opts)
		h.metrics.historyReads.WithLabelValues("memory").Inc()
		return nil
	}
	head := h.head
	h.cacheMu.RUnlock()
	h.metrics.historyReads.WithLabelValues("stream").Inc()
	// A read that fails keeps what it had read: add moves through along, in order.
	_, err := h.replay(ctx, remote, historyReadTimeout, e.through, head, []string{e.topic}, func(u *Update) error {
		if u.Topic == e.topic {
			e.add(u, opts)
		}
		return nil
	})
	if err == nil {
		e.through = max(e.through, head)
	}
	e.trimPoints(opts)
	return err
}

// clear forgets what e holds, for a stream of the given epoch.
func (e *topicHistory) clear(epoch uint64) {
	e.epoch, e.filled, e.floor, e.through, e.from, e.linesFrom = epoch, false, 0, 0, 0, 0
	e.points, e.lines, e.lineBytes = nil, nil, 0
}

// add appends u, keeping the lines within the bounds.
func (e *topicHistory) add(u *Update, opts HistoryOptions) {
	if u.Cursor <= e.through {
		return
	}
	e.through = u.Cursor
	if ts, price, ok := pricePoint(u.Data); ok {
		e.points = append(e.points, historyPoint{cursor: u.Cursor, ts: ts, price: price})
	}
	e.lines = append(e.lines, historyLine{cursor: u.Cursor, json: u.json})
	e.lineBytes += len(u.json)
	drop := 0
	for n := len(e.lines); n-drop > opts.MaxUpdates || e.lineBytes > opts.MaxBytes && n-drop > 1; drop++ {
		e.lineBytes -= len(e.lines[drop].json)
	}
	if drop > 0 {
		e.linesFrom = e.lines[drop-1].cursor
		e.lines = e.lines[drop:]
		if cap(e.lines) > 2*opts.MaxUpdates { // let go of the array the dropped lines were in
			e.lines = append([]historyLine(nil), e.lines...)
		}
	}
}

// forget drops what is older than the stream keeps: the history is what the stream holds.
func (e *topicHistory) forget(floor uint64) {
	e.floor = floor
	if floor > e.from {
		i := sort.Search(len(e.points), func(i int) bool { return e.points[i].cursor > floor })
		e.points = e.points[i:]
		e.from = floor
	}
	if floor > e.linesFrom {
		i := sort.Search(len(e.lines), func(i int) bool { return e.lines[i].cursor > floor })
		for _, l := range e.lines[:i] {
			e.lineBytes -= len(l.json)
		}
		e.lines = e.lines[i:]
		e.linesFrom = floor
	}
	e.through = max(e.through, floor)
}

// trimPoints keeps one topic's points within the cache's bound, dropping the oldest.
func (e *topicHistory) trimPoints(opts HistoryOptions) {
	room := (opts.CacheBytes - entryOverhead - lineOverhead*cap(e.lines) - e.lineBytes) / pointSize
	if drop := len(e.points) - max(room, 0); drop > 0 {
		e.from = e.points[drop-1].cursor
		e.points = append([]historyPoint(nil), e.points[drop:]...)
	}
}

// pricePoint reads the numeric "price" and the "ts" of a payload, for bars.
func pricePoint(data []byte) (ts int64, price float64, ok bool) {
	var p struct {
		Price *float64 `json:"price"`
		TS    string   `json:"ts"`
	}
	if json.Unmarshal(data, &p) != nil || p.Price == nil || math.IsInf(*p.Price, 0) || math.IsNaN(*p.Price) {
		return 0, 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, p.TS)
	if err != nil {
		return 0, 0, false
	}
	return t.UnixNano(), *p.Price, true
}

// answer returns the encodings of the updates req asks for, or an *errHistoryTooLarge.
func (e *topicHistory) answer(req historyRequest, opts HistoryOptions) ([][]byte, error) {
	i := sort.Search(len(e.lines), func(i int) bool { return e.lines[i].cursor > req.since })
	lines := e.lines[i:]
	if req.last > 0 && len(lines) >= req.last {
		lines = lines[len(lines)-req.last:]
	} else if max(req.since, e.floor) < e.linesFrom {
		// Some of what was asked for is not kept: there is more than an answer may carry.
		what := "the stream keeps"
		if req.hasSince {
			what = fmt.Sprintf("there are after cursor %d", req.since)
		}
		return nil, &errHistoryTooLarge{fmt.Sprintf("more updates of %s than an answer carries (%d updates, %d bytes) %s: "+
			"ask for the last=N, or for bars with interval=1m", e.topic, opts.MaxUpdates, opts.MaxBytes, what)}
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = l.json
	}
	return out, nil
}

// bar is the open, high, low and close of the prices of the updates in one interval, with their number and first
// and last cursors.
type bar struct {
	start                  int64 // unix nanoseconds
	open, high, low, close float64
	n                      int
	first, last            uint64
}

// bars returns the OHLC bars req asks for, or an *errHistoryTooLarge.
func (e *topicHistory) bars(req historyRequest, opts HistoryOptions) ([]bar, error) {
	i := sort.Search(len(e.points), func(i int) bool { return e.points[i].cursor > req.since })
	step := int64(req.interval)
	var bars []bar
	for _, p := range e.points[i:] {
		start := p.ts - (p.ts%step+step)%step // floor, for times before 1970 too
		if n := len(bars); n > 0 && start <= bars[n-1].start {
			b := &bars[n-1] // the same interval, or a time stamp out of order: it joins the latest bar
			b.high, b.low, b.close = max(b.high, p.price), min(b.low, p.price), p.price
			b.n++
			b.last = p.cursor
			continue
		}
		bars = append(bars, bar{start: start, open: p.price, high: p.price, low: p.price, close: p.price, n: 1,
			first: p.cursor, last: p.cursor})
	}
	if req.last > 0 && len(bars) > req.last {
		bars = bars[len(bars)-req.last:]
	}
	if len(bars) > opts.MaxUpdates {
		return nil, &errHistoryTooLarge{fmt.Sprintf("%d bars of %s at %s, more than an answer carries (%d): "+
			"ask for a longer interval or the last=N", len(bars), e.topic, req.interval, opts.MaxUpdates)}
	}
	return bars, nil
}

// writeHistory answers {"topic":…,"cursor":…,"updates":[…]} or, for bars, {…,"interval":…,"bars":[…]}.
func (s *Server) writeHistory(c *gin.Context, req historyRequest, cursor uint64, lines [][]byte, bars []bar, reset bool) {
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Type", "application/json")
	c.Status(http.StatusOK)
	w := c.Writer
	b := append([]byte(`{"topic":`), marshalJSON(req.topic)...)
	b = b[:len(b)-1] // without marshalJSON's newline
	b = append(b, `,"cursor":"`...)
	b = strconv.AppendUint(b, cursor, 10)
	b = append(b, '"')
	if reset {
		b = append(b, `,"reset":true`...)
	}
	if req.interval > 0 {
		b = append(b, `,"interval":"`...)
		b = append(b, formatInterval(req.interval)...)
		b = append(b, `","bars":[`...)
		for i, br := range bars {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendBar(b, br)
		}
		w.Write(b)
	} else {
		w.Write(append(b, `,"updates":[`...))
		for i, l := range lines {
			if i > 0 {
				w.Write(comma)
			}
			w.Write(l[:len(l)-1]) // without its newline
		}
	}
	w.Write(closeList)
	w.WriteString(unknownField(unknownOf(c)))
	w.Write(closeObject)
}

func appendBar(b []byte, br bar) []byte {
	num := func(b []byte, name string, v float64) []byte {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		return strconv.AppendFloat(b, v, 'f', -1, 64)
	}
	b = append(b, `{"t":"`...)
	b = time.Unix(0, br.start).UTC().AppendFormat(b, time.RFC3339)
	b = append(b, '"')
	b = num(b, "open", br.open)
	b = num(b, "high", br.high)
	b = num(b, "low", br.low)
	b = num(b, "close", br.close)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, int64(br.n), 10)
	b = append(b, `,"first":"`...)
	b = strconv.AppendUint(b, br.first, 10)
	b = append(b, `","last":"`...)
	b = strconv.AppendUint(b, br.last, 10)
	return append(b, `"}`...)
}

// formatInterval writes an interval the short way: 1m rather than 1m0s.
func formatInterval(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}
