package push

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/livepush/livepush/subscriber/wire"
)

// Resuming: a client gives the cursor of the last update it has, and gets every update after it for its topics,
// then live ones, with no gap and no duplicate. Recent cursors are served from the hub's memory; older ones from
// the stream, streamed through the subscriber's queue at the pace the client reads; cursors older than the stream
// keeps get a reset and a fresh snapshot.

var (
	// ErrCursorAhead is returned for a cursor beyond the newest update in the stream.
	ErrCursorAhead = errors.New("push: cursor is ahead of the stream")
	// ErrCursorExpired is returned for a cursor older than the stream keeps: the client must start again from a
	// snapshot.
	ErrCursorExpired = errors.New("push: cursor is older than the stream keeps")
	// ErrUnavailable is returned when a resume needs the stream and NATS cannot be reached.
	ErrUnavailable = errors.New("push: stream unavailable")
)

// History is the stream as the hub needs it for resumes that reach further back than its memory.
type History interface {
	// Bounds returns the cursors of the oldest and the newest update the stream holds. The answer may be a moment
	// old, unless its newest is below need: a cursor that looks ahead of the stream is checked against the stream
	// itself.
	Bounds(ctx context.Context, need uint64) (first, last uint64, err error)
	// Replay calls each, in cursor order, for every update after cursor after whose topic matches one of
	// patterns, at least up to cursor until. It returns the cursor up to which it has passed every matching
	// update (at least until), or the error of each.
	Replay(ctx context.Context, after, until uint64, patterns []string, each func(*Update) error) (uint64, error)
}

// ParseCursor reads a cursor as clients send it: a decimal stream sequence.
func ParseCursor(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cursor %q is not a stream sequence (a decimal number)", truncate(s, 24))
	}
	return n, nil
}

// beginHistory tells the hub that every update after floor now reaches it in order, so its memory of recent
// updates can serve resumes. The source calls it once it has caught up with the stream.
func (h *Hub) beginHistory(floor uint64) {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	if !h.recent.on {
		h.recent.begin(floor)
	}
}

// Resume subscribes s to sub from just after cursor since: it queues reply (if not nil), every update after since
// for the topics that sub adds, then live updates. A cursor older than the stream keeps gets reply, a reset message
// and a snapshot instead (reset is then true). A rate-limited subscription wants latest values, not history: it gets
// the snapshot. Errors: ErrCursorAhead, ErrUnavailable, ErrBusy, ErrClosed, or ctx's.
func (h *Hub) Resume(ctx context.Context, s *Subscriber, sub Subscription, since uint64, reply *Update) (reset bool, err error) {
	return h.resume(ctx, s, sub, since, reply, h.checkCursor(ctx, since))
}

// checkedCursor is CheckCursor's verdict on a resume cursor, with the hub's epoch when it was given: a resume trusts
// the verdict only if the stream has not been recreated since.
type checkedCursor struct {
	err   error
	epoch uint64
}

func (h *Hub) checkCursor(ctx context.Context, since uint64) checkedCursor {
	epoch := h.epoch.Load()
	return checkedCursor{h.CheckCursor(ctx, since), epoch}
}

// resume is Resume after the cursor check, for transports that must check before they answer.
func (h *Hub) resume(ctx context.Context, s *Subscriber, sub Subscription, since uint64, reply *Update, checked checkedCursor) (reset bool, err error) {
	if sub.MaxRate > 0 {
		h.Subscribe(s, sub, reply)
		return false, nil
	}
	r := &resumption{hub: h, s: s, sub: sub, since: since, from: "memory"}
	if errors.Is(checked.err, ErrCursorExpired) {
		r.reset(reply)
		return true, nil
	} else if checked.err != nil {
		return false, checked.err
	}
	defer func() { h.metrics.replays.WithLabelValues(r.from).Inc() }()
	return r.run(ctx, reply, checked.epoch)
}

// A resumption brings one subscriber from a cursor to the live stream: every update after the cursor for the topics
// its subscription adds, from the hub's memory where that reaches back and from the stream before, then live
// updates, with no gap and no duplicate. It lives for one Resume.
type resumption struct {
	hub   *Hub
	s     *Subscriber
	sub   Subscription
	since uint64             // everything up to it is queued, or was not asked for
	keep  func(*Update) bool // what sub adds: updates it matches that none of the patterns s already had matches
	from  string             // where the catch-up came from ("memory", "stream"), for the resumes metric
}

// run queues reply and then the catch-up, alternating between the stream and memory until memory reaches back to
// r.since (a burst can evict what memory held meanwhile), and joins the live stream. epoch is the hub's when the
// cursor was checked.
func (r *resumption) run(ctx context.Context, reply *Update, epoch uint64) (reset bool, err error) {
	ctx, cancel := r.s.replayContext(ctx)
	defer cancel()
	existing := r.s.Patterns()
	r.keep = func(u *Update) bool { return matchesAny(r.sub.Patterns, u.Topic) && !matchesAny(existing, u.Topic) }
	if reply != nil {
		r.s.Send(reply)
	}
	for {
		if r.hub.epoch.Load() != epoch { // since belongs to a stream that was deleted and created again
			return false, fmt.Errorf("%w: the stream was recreated", ErrCursorAhead)
		}
		if done, err := r.fromMemory(); done || err != nil {
			return false, err
		}
		r.from = "stream"
		// Memory does not reach back to since: read the stream up to where it does.
		err := r.fromStream(ctx)
		if errors.Is(err, ErrCursorExpired) {
			r.reset(nil)
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// reset queues reply, a reset message and a snapshot, for a cursor the stream no longer reaches back to.
func (r *resumption) reset(reply *Update) {
	r.hub.metrics.resets.Inc()
	if reply != nil {
		r.s.Send(reply)
	}
	r.s.Send(resetMessage(r.since))
	r.hub.Subscribe(r.s, r.sub, nil)
}

// aheadGrace is how long a cursor ahead of the stream's answer is given to reach this edge before the stream is
// asked again. A clustered stream's leader can answer with a last sequence a moment behind what a consumer on
// another node has already delivered to another edge, and a client resuming here with that edge's cursor is not
// ahead of anything.
const aheadGrace = time.Second

// CheckCursor tells whether since can be resumed: nil, ErrCursorExpired, ErrCursorAhead or ErrUnavailable.
// A cursor a little ahead of this edge but not of the stream (the client comes from an edge that is further along)
// waits until this edge catches up.
func (h *Hub) CheckCursor(ctx context.Context, since uint64) error {
	h.cacheMu.RLock()
	head, inMemory := h.head, h.recent.covers(since)
	h.cacheMu.RUnlock()
	if since <= head && inMemory {
		return nil // the common case answers without asking NATS
	}
	if h.history == nil {
		if since > head {
			return fmt.Errorf("%w (newest is %d)", ErrCursorAhead, head)
		}
		return ErrCursorExpired
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	first, last, err := h.history.Bounds(bctx, since)
	if err == nil && since > last && !waitUntil(bctx, aheadGrace, func() bool { return h.Head() >= since }) {
		first, last, err = h.history.Bounds(bctx, since)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if since > last && h.Head() < since {
		return fmt.Errorf("%w (newest is %d)", ErrCursorAhead, max(last, h.Head()))
	}
	if since+1 < first {
		return ErrCursorExpired
	}
	// Wait for this edge to follow the stream up to since, and to have started its memory of recent updates.
	following := func() bool {
		h.cacheMu.RLock()
		defer h.cacheMu.RUnlock()
		return h.recent.on && h.head >= since
	}
	if !waitUntil(bctx, 5*time.Second, following) { // bctx ends it first
		return fmt.Errorf("%w: this edge is not following the stream", ErrUnavailable)
	}
	return nil
}

// waitUntil checks done every 10 ms until it is true, ctx ends or d passes, and tells whether done came true.
func waitUntil(ctx context.Context, d time.Duration, done func() bool) bool {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !done() {
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
	return true
}

// fromMemory serves the rest of the catch-up from the hub's recent updates if they reach back to r.since. It copies
// what it can without holding the shard's index, then takes the index to add the few updates that came meanwhile
// and join the live stream. It reports done, or moves r.since to what it has queued and returns false when memory no
// longer reaches back that far.
func (r *resumption) fromMemory() (bool, error) {
	h, s := r.hub, r.s
	h.cacheMu.RLock()
	if !h.recent.covers(r.since) {
		h.cacheMu.RUnlock()
		return false, nil
	}
	batch := h.recent.after(nil, r.since, r.keep)
	seen := h.head
	h.cacheMu.RUnlock()
	s.mu.Lock()
	s.enqueueBatchLocked(batch)
	r.since = seen

	var (
		done bool
		err  error
	)
	sh := s.shard
	sh.change(func() {
		m := sh.members[s]
		if m == nil {
			done, err = true, ErrClosed
			return
		}
		h.cacheMu.RLock()
		if !h.recent.covers(seen) {
			h.cacheMu.RUnlock()
			return
		}
		tail := h.recent.after(nil, seen, r.keep)
		head := h.head
		h.cacheMu.RUnlock()
		sh.addPatternsLocked(m, r.sub)
		s.enqueueLocked(nil, tail, head)
		done = true
	})
	return done, err
}

// fromStream replays from the stream every update after r.since that r wants, until it reaches what the hub's
// memory holds, and moves r.since as far as it got.
func (r *resumption) fromStream(ctx context.Context) error {
	h, s := r.hub, r.s
	h.cacheMu.RLock()
	until := h.recent.floor
	h.cacheMu.RUnlock()
	first, _, err := h.history.Bounds(ctx, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if r.since+1 < first {
		// Retention removed what we were about to replay: the client has a gap it must know about.
		return ErrCursorExpired
	}
	r.since, err = h.replay(ctx, s.remote, 0, r.since, until, r.sub.Patterns, func(u *Update) error {
		if !r.keep(u) {
			return nil
		}
		return s.pushReplay(ctx, u)
	})
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// resetMessage tells a client its cursor is older than the stream keeps and a fresh snapshot follows.
func resetMessage(since uint64) *Update {
	return controlEvent(wire.EventReset, wire.Message{Type: wire.TypeReset, Cursor: strconv.FormatUint(since, 10),
		Reason: "cursor older than the stream keeps: a fresh snapshot follows"})
}

// replayFilters turns a client's patterns into the filter subjects of a stream consumer, which JetStream requires
// not to overlap: patterns covered by another are dropped, and if some still overlap, their roots are used instead
// (the edge filters exactly anyway).
func replayFilters(patterns []string) []string {
	var filters []string
	for i, p := range patterns {
		covered := false
		for j, q := range patterns {
			if i != j && topic.Covers(q, p) && (p != q || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			filters = append(filters, p)
		}
	}
	for i := range filters {
		for j := i + 1; j < len(filters); j++ {
			if topic.Overlap(filters[i], filters[j]) {
				return rootsOf(filters)
			}
		}
	}
	return filters
}

func rootsOf(patterns []string) []string {
	var roots []string
	for _, p := range patterns {
		root, _, _ := strings.Cut(p, ".")
		if r := root + ".>"; !slices.Contains(roots, r) {
			roots = append(roots, r)
		}
	}
	return roots
}
