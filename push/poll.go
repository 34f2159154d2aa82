package push

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// Long polling: GET /api/poll?topic=…&cursor=N&timeout=25s answers as soon as there are updates after N for the
// topics, or with an empty list when the timeout passes; the client asks again with the cursor it got. Without a
// cursor it answers the snapshot at once. A poll that finds updates already waiting (the usual case under load) is
// served from the hub's memory without registering anything; one that has to wait becomes a short-lived subscriber.

const (
	defaultPollTimeout = 25 * time.Second
	maxPollTimeout     = 2 * time.Minute
	defaultPollLimit   = 1000
	maxPollLimit       = 10000
)

// pollSink hands the first batch written to a long-poll subscriber to the waiting request.
type pollSink struct {
	got    chan []*Update
	closed chan struct{}
}

func (p *pollSink) write(batch []*Update) error {
	select {
	case p.got <- slices.Clone(batch): // the writer reuses batch
	default: // the request has its answer already; the rest waits for the next poll
	}
	return nil
}

func (p *pollSink) heartbeat() error    { return nil }
func (p *pollSink) close(_ closeReason) { close(p.closed) }
func (p *pollSink) abort()              {}

func (s *Server) handlePoll(c *gin.Context) {
	sub, ok := s.subscriptionFromQuery(c)
	if !ok {
		return
	}
	if _, ok := s.authorize(c, sub.Patterns); !ok {
		return
	}
	since, resume, ok := cursorFromRequest(c, "", "cursor")
	if !ok {
		return
	}
	timeout, limit, err := pollParams(c)
	if err != nil {
		writeError(c, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if !resume {
		head, updates := s.hub.Snapshot(sub.Patterns)
		writeUpdates(c, head, updates[:min(len(updates), limit)], `,"reset":false`)
		return
	}
	checked, ok := s.checkCursor(c, since)
	if !ok {
		return
	}
	if errors.Is(checked.err, ErrCursorExpired) {
		head, updates := s.hub.Snapshot(sub.Patterns)
		writeUpdates(c, head, updates[:min(len(updates), limit)], `,"reset":true`)
		return
	}

	// maxRate, statelessly: answer no sooner than 1/maxRate after the update the cursor names, with at most the
	// latest update of each topic. Successive polls are then spaced by at least that interval.
	var notBefore time.Time
	if sub.MaxRate > 0 {
		if recv, ok := s.hub.receivedAt(since); ok {
			notBefore = recv.Add(time.Duration(float64(time.Second) / sub.MaxRate))
		}
	}
	deadline := time.Now().Add(timeout)
	if wait := min(time.Until(notBefore), timeout); wait > 0 {
		select {
		case <-c.Request.Context().Done():
		case <-time.After(wait):
		}
	}

	cursor, updates, err := s.poll(c.Request.Context(), deadline, c.ClientIP(), Subscription{Patterns: sub.Patterns}, since,
		answerLimit{limit, s.cfg.PollBytes})
	var refused *refusal
	if errors.As(err, &refused) {
		s.refuse(c, refused.status, refused.reason)
		return
	}
	if errors.Is(err, ErrCursorAhead) { // the stream was recreated after the cursor check
		writeError(c, http.StatusBadRequest, "bad_cursor", fmt.Sprintf("cursor %d is ahead of the stream", since))
		return
	}
	if errors.Is(err, ErrCursorExpired) { // retention passed the cursor while we were about to read from it
		head, updates := s.hub.Snapshot(sub.Patterns)
		writeUpdates(c, head, updates[:min(len(updates), limit)], `,"reset":true`)
		return
	}
	if errors.Is(err, ErrBusy) {
		c.Header("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
		writeError(c, http.StatusServiceUnavailable, "busy",
			"too many clients are catching up from the stream on this edge: retry shortly")
		return
	}
	if err != nil {
		s.log.Warn("long poll: reading the stream failed", "err", err)
		c.Header("Retry-After", "2")
		writeError(c, http.StatusServiceUnavailable, "unavailable", "the stream is unreachable right now: retry shortly")
		return
	}
	if sub.MaxRate > 0 {
		updates = latestPerTopic(updates)
	}
	writeUpdates(c, cursor, updates, `,"reset":false`)
}

// answerLimit bounds one long-poll answer: at most count updates and, past the first, bytes of their encoding.
type answerLimit struct{ count, bytes int }

// take reports how many of updates fit in one answer.
func (l answerLimit) take(updates []*Update) int {
	size := 0
	for i, u := range updates {
		if size += len(u.json); i == l.count || i > 0 && size > l.bytes {
			return i
		}
	}
	return len(updates)
}

// poll returns the updates after since (within limit) and the cursor to poll from next, waiting until there are
// some or the deadline passes. ctx is the request's.
func (s *Server) poll(ctx context.Context, deadline time.Time, remote string, sub Subscription, since uint64, limit answerLimit) (uint64, []*Update, error) {
	cursor, updates, inMemory := s.hub.recentAfter(sub.Patterns, since, limit)
	if inMemory && len(updates) > 0 {
		return cursor, updates, nil // answered from memory at once: cheap enough to need no admission
	}
	release, status, reason := s.admission.admit(remote)
	if release == nil {
		return since, nil, &refusal{status, reason}
	}
	if !inMemory && s.hub.history != nil {
		// Further back than memory: read at most limit updates from the stream and answer with them. A client far
		// behind catches up one bounded answer at a time instead of each poll replaying all it missed. The read
		// has a bound of its own, not the poll's wait: a poll with timeout=0 must be able to catch up too.
		cursor, updates, err := s.hub.historyAfter(ctx, remote, sub.Patterns, since, limit)
		if err != nil || len(updates) > 0 {
			release()
			return cursor, updates, err
		}
		since = cursor // nothing for these topics up to the head: wait for the next one
	}
	request := ctx
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	untold := s.hub.untold.Load()
	sink := &pollSink{got: make(chan []*Update, 1), closed: make(chan struct{})}
	subscriber, ok := s.hub.newSubscriber(sink, "poll", remote, release)
	if !ok {
		release()
		return since, nil, nil // draining: an empty answer sends the client elsewhere
	}
	defer subscriber.Close(reasonClientGone)
	if _, err := s.hub.Resume(ctx, subscriber, sub, since, nil); err != nil && ctx.Err() == nil {
		return since, nil, err
	}
	// A poll answer has no place for a conflated notice. If the edge skipped updates for this poll (it fell behind),
	// or skipped some it could not attribute to anyone, the answer is read again by cursor, from memory or the
	// stream, so that the client misses nothing. (If the edge closed the poll meanwhile, its admission slot is free
	// already: a read from the stream is still bounded by the hub's read gate.)
	skipped := func() bool { return subscriber.skippedAny() || s.hub.untold.Load() != untold }
	reread := func() (uint64, []*Update, error) {
		if cursor, updates, ok := s.hub.recentAfter(sub.Patterns, since, limit); ok {
			return cursor, updates, nil
		}
		if s.hub.history != nil {
			return s.hub.historyAfter(request, remote, sub.Patterns, since, limit)
		}
		return since, nil, ErrCursorExpired
	}
	answer := func(batch []*Update) (uint64, []*Update, bool) {
		var updates []*Update
		for _, u := range batch {
			if u.Topic != "" { // the only control message a poll is sent is a conflated notice, checked for below
				updates = append(updates, u)
			}
		}
		if updates = updates[:limit.take(updates)]; len(updates) > 0 {
			return updates[len(updates)-1].Cursor, updates, true
		}
		return 0, nil, false
	}
	for waiting := true; waiting; {
		select {
		case batch := <-sink.got:
			if skipped() {
				return reread()
			}
			if cursor, updates, ok := answer(batch); ok {
				return cursor, updates, nil
			}
		case <-sink.closed:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	// Nothing handed over by the deadline, or the edge is closing the poll. Updates queued at the last moment are
	// either handed over now or, if the edge dropped them, not skipped: the cursor moves only past what this poll
	// has seen through.
	for {
		cursor, idle := subscriber.closeIfIdle(reasonClientGone)
		if skipped() && (idle || subscriber.Closed()) {
			return reread()
		}
		if idle || subscriber.Closed() {
			select {
			case batch := <-sink.got:
				if cursor, updates, ok := answer(batch); ok {
					return cursor, updates, nil
				}
			default:
			}
			if !idle {
				cursor = since // closed by the edge with updates queued: they are gone, and so is any progress
			}
			return max(since, cursor), nil, nil
		}
		select {
		case batch := <-sink.got:
			if skipped() {
				return reread()
			}
			if cursor, updates, ok := answer(batch); ok {
				return cursor, updates, nil
			}
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// refusal is a long poll refused by a connection limit.
type refusal struct {
	status int
	reason string
}

func (r *refusal) Error() string { return r.reason }

func pollParams(c *gin.Context) (timeout time.Duration, limit int, err error) {
	timeout, limit = defaultPollTimeout, defaultPollLimit
	if v := c.Query("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			secs, err2 := strconv.ParseFloat(v, 64)
			if err2 != nil {
				return 0, 0, fmt.Errorf("timeout %q: a duration such as 25s, or seconds", truncate(v, 16))
			}
			timeout = time.Duration(secs * float64(time.Second))
		}
		if timeout < 0 || timeout > maxPollTimeout {
			return 0, 0, fmt.Errorf("timeout must be from 0 to %s", maxPollTimeout)
		}
	}
	if v := c.Query("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxPollLimit {
			return 0, 0, fmt.Errorf("limit must be from 1 to %d", maxPollLimit)
		}
	}
	return timeout, limit, nil
}

// latestPerTopic keeps the newest update of each topic, in cursor order.
func latestPerTopic(updates []*Update) []*Update {
	latest := make(map[string]*Update, len(updates))
	for _, u := range updates {
		latest[u.Topic] = u
	}
	out := make([]*Update, 0, len(latest))
	for _, u := range latest {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *Update) int { return cmp.Compare(a.Cursor, b.Cursor) })
	return out
}

// recentAfter returns from memory the updates after since matching patterns (within limit) and the cursor to poll
// from next; ok is false when memory does not reach back to since.
func (h *Hub) recentAfter(patterns []string, since uint64, limit answerLimit) (cursor uint64, updates []*Update, ok bool) {
	h.cacheMu.RLock()
	defer h.cacheMu.RUnlock()
	if !h.recent.covers(since) || since > h.head {
		return 0, nil, false
	}
	updates = h.recent.after(nil, since, func(u *Update) bool { return matchesAny(patterns, u.Topic) })
	if n := limit.take(updates); n < len(updates) {
		updates = updates[:n]
		return updates[n-1].Cursor, updates, true
	}
	return h.head, updates, true
}

// errEnough stops a replay that has read as much as was asked for.
var errEnough = errors.New("push: enough")

// historyReadTimeout bounds one long poll's read from the stream, once its turn has come.
const historyReadTimeout = 10 * time.Second

// historyAfter reads from the stream the updates after since matching patterns, at most limit, and returns them
// with the cursor to poll from next. Errors: ErrCursorExpired when retention has passed since, ErrBusy,
// ErrUnavailable.
// A read cut short by ctx answers with what it has.
func (h *Hub) historyAfter(ctx context.Context, remote string, patterns []string, since uint64, limit answerLimit) (uint64, []*Update, error) {
	h.metrics.replays.WithLabelValues("stream").Inc()
	first, _, err := h.history.Bounds(ctx, 0)
	if err != nil {
		return since, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if since+1 < first {
		return since, nil, ErrCursorExpired
	}
	var updates []*Update
	size := 0
	reached, err := h.replay(ctx, remote, historyReadTimeout, since, h.Head(), patterns, func(u *Update) error {
		if !matchesAny(patterns, u.Topic) { // the read's filter may be wider than the patterns
			return nil
		}
		updates = append(updates, u)
		if size += len(u.json); len(updates) == limit.count || size >= limit.bytes {
			return errEnough
		}
		return nil
	})
	switch {
	case errors.Is(err, errEnough), err != nil && len(updates) > 0 && ctx.Err() != nil:
		return updates[len(updates)-1].Cursor, updates, nil
	case errors.Is(err, ErrBusy):
		return since, nil, err
	case err != nil:
		return since, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return reached, updates, nil
}

// receivedAt returns when the edge received the update with cursor, if it still remembers it.
func (h *Hub) receivedAt(cursor uint64) (time.Time, bool) {
	h.cacheMu.RLock()
	defer h.cacheMu.RUnlock()
	if u := h.recent.find(cursor); u != nil {
		return u.Recv, true
	}
	return time.Time{}, false
}
