package push

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

// ErrClosed is returned when a subscriber is closed while something is being queued for it.
var ErrClosed = errors.New("push: subscriber closed")

// sink is what a transport gives the hub: the writes of one connection. Only the subscriber's writer calls write,
// heartbeat and close, one at a time; abort may be called at any time to cut a connection that is stuck.
type sink interface {
	// write sends the batch in one socket write (SSE: one flush; WebSocket: one frame, or a frame per message),
	// within the hub's write timeout.
	write(batch []*Update) error
	// heartbeat proves the connection is alive to proxies and to the edge.
	heartbeat() error
	// close tells the client why it is being disconnected, if it can, and closes the connection.
	close(reason closeReason)
	// abort closes the connection at once.
	abort()
}

// closeReason says why the edge ends a connection, in each transport's terms.
type closeReason struct {
	code  int    // WebSocket close status
	err   string // machine-readable reason, also the SSE event's "reason"
	text  string // human-readable, at most 123 bytes (it rides in a WebSocket close frame)
	retry time.Duration
}

var (
	reasonClientGone = closeReason{code: 1000, err: "client_gone", text: "client went away"}
	reasonRestart    = closeReason{code: 1012, err: "server_restart",
		text: "edge restarting: reconnect and resume from your cursor", retry: time.Second}
	reasonSlow = closeReason{code: 1013, err: "slow_consumer",
		text: "too slow to keep up: reconnect and resume from your cursor", retry: 2 * time.Second}
	reasonWriteFailed  = closeReason{code: 1011, err: "write_failed", text: "write to the connection failed"}
	reasonTokenExpired = closeReason{code: 4001, err: "token_expired",
		text: "your token expired: reconnect with a new one and resume from your cursor", retry: time.Second}
	reasonUnavailable = closeReason{code: 1013, err: "unavailable",
		text: "stream unreachable: reconnect and resume from your cursor", retry: 2 * time.Second}
	reasonBusy = closeReason{code: 1013, err: "busy",
		text: "too many clients catching up from the stream here: reconnect later and resume", retry: retryAfter}
	reasonStreamRecreated = closeReason{code: 1012, err: "stream_recreated",
		text: "the stream was recreated and its cursors start over: reconnect for a fresh snapshot", retry: time.Second}
)

// Subscriber is one client connection as the hub sees it: its patterns, its queue of updates waiting to be written,
// and its write turns, which its shard's writer pool runs while it has something to write, so an idle connection
// costs no goroutine beyond its transport's reader.
type Subscriber struct {
	hub       *Hub
	shard     *shard // the share of the hub's subscribers s belongs to, for its life
	id        uint64
	sink      sink
	transport string
	remote    string
	metrics   subscriberMetrics
	onClose   func() // releases the connection's admission slot
	// Which patterns s holds is not here: the shard's index owns that (s's member).

	// mu guards the queue and the write turns.
	mu         sync.Mutex
	queue      []*Update
	spare      []*Update // the other of the two buffers the writer swaps with queue
	queued     int       // memory held by the queue's updates
	limit      int       // conflate when the queue grows past this many updates
	limitBytes int       // or this much memory
	last       uint64    // newest cursor queued: offer drops anything at or below it
	protect    uint64    // queued updates at or below it are a snapshot or a replay the client asked for: never conflated
	oldestLive time.Time // when the oldest live update waiting was received; zero when none waits
	writing    bool      // a write turn is scheduled or in progress
	scheduled  bool      // a write turn has been scheduled before: the first one goes ahead of the others' (writerPool.schedule)
	beat       bool      // a heartbeat is due
	closing    *closeReason
	behind     time.Time // when the queue was first conflated and not drained since; zero when caught up
	writeStart time.Time // when the write in progress began; zero when none is
	conflated  uint64
	unreported uint64               // updates conflated since the client was last told
	throttles  map[string]*throttle // per topic, for rate-limited subscriptions; nil entries: not limited
	room       chan struct{}        // signalled after each write while a replay waits for the queue to drain
	endReplay  context.CancelFunc   // cancels a replay in progress when s closes
	lastWrite  atomic.Int64         // unix nanoseconds of the last completed write
	catchUps   atomic.Int64         // updates queued by subscribes and resumes (snapshots, replays from memory)
	closedOnce sync.Once
}

// throttle limits one topic of one subscriber to a rate: an update arriving too soon waits as pending, replaced by
// any newer one, and goes out when the interval has passed, so the newest value always arrives.
type throttle struct {
	interval time.Duration
	sent     time.Time
	pending  *Update
	timer    *time.Timer // releases pending; nil when none is armed
}

// ID returns the connection's id, unique in this process, used in logs.
func (s *Subscriber) ID() uint64 { return s.id }

// Patterns returns the patterns s is subscribed to.
func (s *Subscriber) Patterns() []string { return s.shard.patternsOf(s) }

// offer queues a live update for s, whose place in the index is m. It runs on the fan-out path under the shard's mu
// (read): it must never block, never write to the socket, and never take the shard's mu.
func (s *Subscriber) offer(u *Update, m *member) {
	s.mu.Lock()
	if s.closing != nil || u.Cursor <= s.last {
		s.mu.Unlock()
		return
	}
	s.last = u.Cursor
	if m.rated && !s.allowLocked(u, m) {
		s.mu.Unlock()
		return
	}
	s.appendLocked(u)
	if s.oldestLive.IsZero() {
		s.oldestLive = u.Recv
	}
	if (s.overLimitLocked() && s.stalledLocked(u.Recv) || s.agedLocked(u.Recv)) && s.conflateLocked(u.Recv) {
		s.mu.Unlock()
		go s.Close(reasonSlow) // Close takes the shard's mu: never on the fan-out path
		return
	}
	s.startWriterLocked()
}

// skippedByFanOut notes the updates for s, whose place in the index is m, that a conflating fan-out skipped after
// what s had already been sent or given in a snapshot: its next write begins with a notice.
func (s *Subscriber) skippedByFanOut(m *member, skipped map[*patternSet][]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing == nil {
		n := m.skippedAfter(s.last, skipped)
		s.conflated += n
		s.unreported += n
	}
}

// Send queues a control message (a reply, an error) in order with the updates.
func (s *Subscriber) Send(ctrl *Update) {
	s.mu.Lock()
	if s.closing == nil {
		s.appendLocked(ctrl)
		s.startWriterLocked()
		return
	}
	s.mu.Unlock()
}

// enqueueLocked queues reply, then updates (a snapshot or a replay), and moves the live cursor to head. shard.mu
// must be held for writing, so no live update can slip in between.
func (s *Subscriber) enqueueLocked(reply *Update, updates []*Update, head uint64) {
	s.mu.Lock()
	if s.closing != nil {
		s.mu.Unlock()
		return
	}
	if reply != nil {
		s.appendLocked(reply)
	}
	s.appendLocked(updates...)
	s.catchUps.Add(int64(len(updates)))
	s.protectLocked(updates)
	s.last = max(s.last, head)
	// A snapshot is one update per topic and a replay from memory is already in memory: let the queue hold them
	// without calling the subscriber slow.
	s.raiseLimitsLocked()
	s.startWriterLocked()
}

// enqueueBatchLocked queues updates already held in memory; s.mu must be held and is released.
func (s *Subscriber) enqueueBatchLocked(updates []*Update) {
	if s.closing != nil {
		s.mu.Unlock()
		return
	}
	s.appendLocked(updates...)
	s.catchUps.Add(int64(len(updates)))
	s.protectLocked(updates)
	s.raiseLimitsLocked()
	s.startWriterLocked()
}

// pushReplay queues one update read from the stream for a resume, waiting while the queue is full so a client far
// behind streams its catch-up instead of having it loaded whole.
func (s *Subscriber) pushReplay(ctx context.Context, u *Update) error {
	s.mu.Lock()
	for (len(s.queue) >= s.hub.opts.QueueLimit || s.queued >= s.hub.opts.QueueBytes) && s.closing == nil {
		if s.room == nil {
			s.room = make(chan struct{}, 1)
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	if s.closing != nil {
		s.mu.Unlock()
		return ErrClosed
	}
	s.appendLocked(u)
	s.protect = max(s.protect, u.Cursor)
	s.startWriterLocked()
	return nil
}

// replayContext returns a context for a replay that ends when s closes.
func (s *Subscriber) replayContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		cancel()
	}
	s.endReplay = cancel
	return ctx, cancel
}

func (s *Subscriber) signalRoomLocked() {
	if s.room != nil {
		select {
		case s.room <- struct{}{}:
		default:
		}
	}
}

// allowLocked applies the rate limit of u's topic: it reports true if u may be queued now; otherwise u waits as
// the topic's pending update. Runs under the shard's mu (read) and s.mu.
func (s *Subscriber) allowLocked(u *Update, m *member) bool {
	th, ok := s.throttles[u.Topic]
	if !ok {
		if rate := m.rateFor(u.Topic); rate > 0 {
			th = &throttle{interval: time.Duration(float64(time.Second) / rate)}
		}
		if s.throttles == nil {
			s.throttles = make(map[string]*throttle)
		}
		s.throttles[u.Topic] = th
	}
	if th == nil {
		return true
	}
	now := time.Now()
	if since := now.Sub(th.sent); since >= th.interval {
		th.sent = now
		th.pending = nil // superseded: u is newer
		return true
	}
	th.pending = u
	if th.timer == nil {
		th.timer = time.AfterFunc(th.interval-now.Sub(th.sent), func() { s.release(th) })
	}
	return false
}

// release queues a throttled topic's pending update once its interval has passed.
func (s *Subscriber) release(th *throttle) {
	s.mu.Lock()
	th.timer = nil
	u := th.pending
	th.pending = nil
	if u == nil || s.closing != nil {
		s.mu.Unlock()
		return
	}
	th.sent = time.Now()
	s.appendLocked(u)
	s.startWriterLocked()
}

// resetThrottles forgets the per-topic throttles after the subscriptions changed, queueing what they held so no
// latest value is lost. Its shard calls it holding the index for writing, so no offer runs meanwhile.
func (s *Subscriber) resetThrottles() {
	s.mu.Lock()
	released := false
	for _, th := range s.throttles {
		if th != nil && th.pending != nil {
			s.appendLocked(th.pending)
			th.pending = nil
			released = true
		}
	}
	s.stopThrottlesLocked()
	if !released { // a write turn for nothing would also use up a new subscriber's first turn
		s.mu.Unlock()
		return
	}
	s.startWriterLocked()
}

// stopThrottlesLocked forgets the throttles and stops their timers, so that none keeps s reachable after it is
// gone. s.mu must be held.
func (s *Subscriber) stopThrottlesLocked() {
	for _, th := range s.throttles {
		if th != nil && th.timer != nil {
			th.timer.Stop()
			th.timer = nil
		}
	}
	s.throttles = nil
}

// purge drops queued updates whose topic keep rejects, then queues reply. Control messages stay.
func (s *Subscriber) purge(keep func(topic string) bool, reply *Update) {
	s.mu.Lock()
	if s.closing != nil {
		s.mu.Unlock()
		return
	}
	q := s.queue[:0]
	for _, u := range s.queue {
		if u.Topic == "" || keep(u.Topic) {
			q = append(q, u)
		} else {
			s.queued -= queuedSize(u)
		}
	}
	clear(s.queue[len(q):])
	s.queue = q
	if reply != nil {
		s.appendLocked(reply)
	}
	s.startWriterLocked()
}

// stallAfter is how long one write may take before its subscriber counts as not keeping up: a client reading as
// fast as it can is not conflated by a burst, one whose socket is full is.
const stallAfter = 100 * time.Millisecond

// appendLocked queues us, counting the memory they hold. s.mu must be held.
func (s *Subscriber) appendLocked(us ...*Update) {
	for _, u := range us {
		s.queued += queuedSize(u)
	}
	s.queue = append(s.queue, us...)
}

// protectLocked keeps updates a snapshot or replay queued out of conflation: the client asked for them.
func (s *Subscriber) protectLocked(updates []*Update) {
	for _, u := range updates {
		s.protect = max(s.protect, u.Cursor)
	}
}

// queuedSize is what a queued update counts against a queue's byte limit: the memory it keeps alive.
func queuedSize(u *Update) int { return u.memSize() }

// overLimitLocked reports whether the queue holds more updates or more memory than it may before conflating.
func (s *Subscriber) overLimitLocked() bool {
	return len(s.queue) > s.limit || s.queued > s.limitBytes
}

// raiseLimitsLocked lets the queue hold twice what it holds now without calling the subscriber slow.
func (s *Subscriber) raiseLimitsLocked() {
	s.limit = max(s.limit, 2*len(s.queue))
	s.limitBytes = max(s.limitBytes, 2*s.queued)
}

// stalledLocked reports whether the queue, over its limit, should be conflated: the write in progress has taken
// longer than stallAfter, or the queue has grown past 16 times its limit in updates or 4 times in memory whatever
// the writer does.
func (s *Subscriber) stalledLocked(now time.Time) bool {
	return !s.writeStart.IsZero() && now.Sub(s.writeStart) > stallAfter ||
		len(s.queue) > 16*s.limit || s.queued > 4*s.limitBytes
}

// agedLocked reports whether live updates have waited longer than the latency budget: whatever the cause (a client
// that reads slowly, or a machine too busy to write), a subscriber then gets the newest value of each topic, not a
// backlog.
func (s *Subscriber) agedLocked(now time.Time) bool {
	return len(s.queue) >= agedBacklog && !s.oldestLive.IsZero() && now.Sub(s.oldestLive) > s.hub.opts.LatencyBudget
}

// agedBacklog is how many updates must wait past the budget before they are conflated: a moment's hiccup with a few
// updates waiting delivers them all.
const agedBacklog = 32

// conflateLocked keeps only the newest queued update of each topic (and every control message, and what a
// snapshot or replay queued), in order. It reports true when the subscriber has been behind for longer than the
// hub's SlowTimeout and should be dropped.
func (s *Subscriber) conflateLocked(now time.Time) (tooSlow bool) {
	seen := make(map[string]struct{}, len(s.queue))
	w := len(s.queue)
	for i := len(s.queue) - 1; i >= 0; i-- {
		u := s.queue[i]
		if u.Topic != "" && u.Cursor > s.protect {
			if _, dup := seen[u.Topic]; dup {
				continue
			}
			seen[u.Topic] = struct{}{}
		}
		w--
		s.queue[w] = u
	}
	s.conflated += uint64(w)
	s.unreported += uint64(w)
	s.hub.metrics.conflated.Add(float64(w))
	for _, u := range s.queue[:w] {
		s.queued -= queuedSize(u)
	}
	n := copy(s.queue, s.queue[w:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	// What is left is one update per topic: the queue may hold twice that before conflating again, so memory stays
	// proportional to the topics subscribed, not to the update rate.
	s.limit = max(s.hub.opts.QueueLimit, 2*n)
	s.limitBytes = max(s.hub.opts.QueueBytes, 2*s.queued)
	s.oldestLive = now // what is left is the newest of each topic
	if s.behind.IsZero() {
		s.behind = now
	}
	return now.Sub(s.behind) > s.hub.opts.SlowTimeout
}

// startWriterLocked schedules a write turn unless one is scheduled or in progress, and unlocks s.mu.
func (s *Subscriber) startWriterLocked() {
	start, first := !s.writing, !s.scheduled
	s.writing, s.scheduled = true, true
	s.mu.Unlock()
	if start {
		s.shard.writers.schedule(s, first)
	}
}

// writeTurn makes s's next write: the goodbye if s is closing, else as much of the queue as one write takes, else a
// heartbeat that is due. Only the shard's writer pool calls it, for one subscriber at a time, so it alone writes to
// the connection. It reports whether s has more to write; if not, s is no longer scheduled.
func (s *Subscriber) writeTurn() (more bool) {
	s.mu.Lock()
	if reason := s.closing; reason != nil {
		s.queue, s.queued = nil, 0
		s.mu.Unlock() // s.writing stays set: s is never scheduled again
		s.sink.close(*reason)
		s.hub.live.Done()
		return false
	}
	if len(s.queue) == 0 {
		if !s.beat {
			s.caughtUpLocked()
			s.mu.Unlock()
			return false
		}
		s.beat = false
		s.mu.Unlock()
		if err := s.sink.heartbeat(); err != nil {
			s.Close(reasonWriteFailed)
		} else {
			s.lastWrite.Store(time.Now().UnixNano()) // the next one is due an interval from now, not at the next sweep
		}
		return s.endTurn(nil)
	}
	batch := s.takeBatchLocked()
	s.writeStart = time.Now()
	s.mu.Unlock()

	if err := s.sink.write(batch); err != nil {
		s.Close(reasonWriteFailed)
	} else {
		now := time.Now()
		s.lastWrite.Store(now.UnixNano())
		s.metrics.written(batch, now)
	}
	return s.endTurn(batch)
}

// endTurn recycles the batch just written and reports whether s has more to write.
func (s *Subscriber) endTurn(batch []*Update) (more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if batch != nil && now.Sub(s.writeStart) < stallAfter && !s.agedLocked(now) {
		// The client takes what it is sent as fast as it comes: if it was conflated, that was a busy edge's doing,
		// and it is not behind. Under a steady flow its queue may never be empty.
		s.behind = time.Time{}
	}
	s.writeStart = time.Time{}
	if batch != nil {
		clear(batch) // let written updates be collected
		s.spare = batch[:0]
		s.signalRoomLocked()
	}
	if s.closing != nil || len(s.queue) > 0 || s.beat {
		return true
	}
	s.caughtUpLocked()
	return false
}

// caughtUpLocked records that everything queued has been written: s is no longer behind, its queue limits relax
// back towards the hub's, and it is no longer scheduled.
func (s *Subscriber) caughtUpLocked() {
	s.behind = time.Time{}
	s.limit = max(s.hub.opts.QueueLimit, s.limit/2)
	s.limitBytes = max(s.hub.opts.QueueBytes, s.limitBytes/2)
	s.writing = false
}

// maxWriteBytes bounds one write: a queue holding more leaves in several writes, so no write buffer grows with a
// client's backlog.
const maxWriteBytes = 256 << 10

// takeBatchLocked takes the next write's updates from the queue: all of them, or as many as fit in maxWriteBytes
// (at least one). s.mu must be held.
func (s *Subscriber) takeBatchLocked() []*Update {
	if s.agedLocked(time.Now()) {
		// Updates have waited past the budget (the last write was slow): what leaves now is the newest of each topic.
		s.conflateLocked(time.Now())
	}
	if s.unreported > 0 {
		s.reportConflatedLocked()
	}
	size, k := 0, 0
	for k < len(s.queue) {
		size += len(s.queue[k].json) + len(s.queue[k].sse)
		if size > 2*maxWriteBytes && k > 0 { // each transport writes one of the two encodings
			break
		}
		k++
	}
	var batch []*Update
	if k == len(s.queue) {
		batch, s.queue, s.spare = s.queue, s.spare, nil
		s.queued, s.oldestLive = 0, time.Time{}
		return batch
	}
	batch, s.spare = append(s.spare[:0], s.queue[:k]...), nil
	for _, u := range batch {
		s.queued -= queuedSize(u)
	}
	n := copy(s.queue, s.queue[k:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	return batch
}

// reportConflatedLocked puts a notice of the updates conflated since the last one at the head of the queue, so
// the client reads it before the newest values that replaced them. s.mu must be held.
func (s *Subscriber) reportConflatedLocked() {
	notice := controlEvent(wire.EventConflated, wire.Message{Type: wire.TypeConflated, Skipped: s.unreported})
	s.unreported = 0
	s.queue = slices.Insert(s.queue, 0, notice)
	s.queued += queuedSize(notice)
}

// check runs on the hub's sweep: it asks for a heartbeat if nothing was written since idleSince and closes a
// subscriber that has been behind for too long.
func (s *Subscriber) check(now time.Time, idleSince int64) {
	s.mu.Lock()
	if s.closing != nil {
		s.mu.Unlock()
		return
	}
	if !s.behind.IsZero() && now.Sub(s.behind) > s.hub.opts.SlowTimeout {
		s.mu.Unlock()
		s.Close(reasonSlow)
		return
	}
	if s.lastWrite.Load() > idleSince || s.writing {
		s.mu.Unlock()
		return
	}
	s.beat = true
	s.startWriterLocked()
}

// Close removes s from the hub and has its writer say goodbye with reason and close the connection. Safe to call
// more than once and from any goroutine except the publish path.
func (s *Subscriber) Close(reason closeReason) {
	s.closedOnce.Do(func() {
		s.hub.remove(s)
		s.hub.metrics.connections.WithLabelValues(s.transport).Dec()
		s.hub.metrics.disconnects.WithLabelValues(reason.err).Inc()
		if s.onClose != nil {
			s.onClose()
		}
		s.mu.Lock()
		s.closing = &reason
		s.stopThrottlesLocked()
		s.signalRoomLocked() // wake a replay waiting for room
		if s.endReplay != nil {
			s.endReplay()
		}
		if !s.writeStart.IsZero() {
			// The writer is in a write; it says goodbye when the write ends. A client still reading gets there; one
			// that has stopped would keep the connection until the write timeout: cut it after a grace period.
			time.AfterFunc(s.hub.opts.CloseGrace, s.abortIfStuck)
		}
		s.startWriterLocked()
	})
}

// closeIfIdle closes s, as Close does, if nothing is queued for it or being written, and returns the newest cursor
// it has been handed everything up to. With updates still on their way it does nothing and reports false.
func (s *Subscriber) closeIfIdle(reason closeReason) (cursor uint64, closed bool) {
	s.mu.Lock()
	if s.closing != nil || len(s.queue) > 0 || !s.writeStart.IsZero() {
		s.mu.Unlock()
		return 0, false
	}
	s.closing = &reason // nothing more is queued from here on
	cursor = s.last
	s.mu.Unlock()
	s.Close(reason)
	return cursor, true
}

// abortIfStuck cuts the connection if the write that was in progress at the close is still going on.
func (s *Subscriber) abortIfStuck() {
	s.mu.Lock()
	stuck := !s.writeStart.IsZero() && time.Since(s.writeStart) >= s.hub.opts.CloseGrace
	s.mu.Unlock()
	if stuck {
		s.sink.abort()
	}
}

// skippedAny reports whether any update for s has been conflated or skipped by the fan-out.
func (s *Subscriber) skippedAny() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflated > 0
}

// Closed reports whether s is closing or closed.
func (s *Subscriber) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing != nil
}
