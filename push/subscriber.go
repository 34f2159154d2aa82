package push

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/internal/topic"
)

// sink is what a transport gives the hub: the writes of one connection. Only the subscriber's writer calls write,
// heartbeat and close, one at a time; abort may be called at any time to cut a connection that is stuck.
type sink interface {
	// write sends the batch in one flush (SSE) or one frame (WebSocket), within the hub's write timeout.
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
	reasonWriteFailed = closeReason{code: 1011, err: "write_failed", text: "write to the connection failed"}
)

// Subscriber is one client connection as the hub sees it: its patterns, its queue of updates waiting to be written,
// and its writer. The writer is a goroutine that exists only while there is something to write, so an idle
// connection costs no goroutine beyond its transport's reader.
type Subscriber struct {
	hub       *Hub
	id        uint64
	sink      sink
	transport string
	remote    string

	// Guarded by hub.mu.
	patterns []subscription
	removed  bool

	mu         sync.Mutex
	queue      []*Update
	spare      []*Update // the other of the two buffers the writer swaps with queue
	limit      int       // conflate when the queue grows past this
	last       uint64    // newest cursor queued: offer drops anything at or below it
	writing    bool      // a writer goroutine is running
	beat       bool      // a heartbeat is due
	closing    *closeReason
	behind     time.Time // when the queue was first conflated and not drained since; zero when caught up
	conflated  uint64
	lastWrite  atomic.Int64 // unix nanoseconds of the last completed write
	closedOnce sync.Once
}

type subscription struct {
	set   *patternSet
	index int // position of the subscriber in set.subs
}

// ID returns the connection's id, unique in this process, used in logs.
func (s *Subscriber) ID() uint64 { return s.id }

// hasPatternLocked reports whether s has p. hub.mu must be held.
func (s *Subscriber) hasPatternLocked(p string) bool {
	for _, sub := range s.patterns {
		if sub.set.pattern == p {
			return true
		}
	}
	return false
}

// matchesLocked reports whether one of the first n patterns of s matches topic t. hub.mu must be held.
func (s *Subscriber) matchesLocked(t string, n int) bool {
	for _, sub := range s.patterns[:n] {
		if topic.Match(sub.set.pattern, t) {
			return true
		}
	}
	return false
}

// Patterns returns the patterns s is subscribed to.
func (s *Subscriber) Patterns() []string {
	s.hub.mu.RLock()
	defer s.hub.mu.RUnlock()
	ps := make([]string, len(s.patterns))
	for i, sub := range s.patterns {
		ps[i] = sub.set.pattern
	}
	return ps
}

// offer queues a live update. It runs on the publish path under hub.mu (read): it must never block, never write to
// the socket, and never take hub.mu.
func (s *Subscriber) offer(u *Update) {
	s.mu.Lock()
	if s.closing != nil || u.Cursor <= s.last {
		s.mu.Unlock()
		return
	}
	s.last = u.Cursor
	s.queue = append(s.queue, u)
	if len(s.queue) > s.limit && s.conflateLocked(u.Recv) {
		s.mu.Unlock()
		go s.Close(reasonSlow) // Close takes hub.mu: never on the publish path
		return
	}
	s.startWriterLocked()
}

// Send queues a control message (a reply, an error) in order with the updates.
func (s *Subscriber) Send(ctrl *Update) {
	s.mu.Lock()
	if s.closing == nil {
		s.queue = append(s.queue, ctrl)
		s.startWriterLocked()
		return
	}
	s.mu.Unlock()
}

// enqueueSnapshot queues reply, then the snapshot, and moves the live cursor to head. Called under hub.mu.
func (s *Subscriber) enqueueSnapshot(reply *Update, snapshot []*Update, head uint64) {
	s.mu.Lock()
	if s.closing != nil {
		s.mu.Unlock()
		return
	}
	if reply != nil {
		s.queue = append(s.queue, reply)
	}
	s.queue = append(s.queue, snapshot...)
	s.last = max(s.last, head)
	// The snapshot is at most one update per topic: let the queue hold it without calling it slow.
	s.limit = max(s.limit, 2*len(s.queue))
	s.startWriterLocked()
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
		}
	}
	clear(s.queue[len(q):])
	s.queue = q
	if reply != nil {
		s.queue = append(s.queue, reply)
	}
	s.startWriterLocked()
}

// conflateLocked keeps only the newest queued update of each topic (and every control message), in order. It
// reports true when the subscriber has been behind for longer than the hub's SlowTimeout and should be dropped.
func (s *Subscriber) conflateLocked(now time.Time) (tooSlow bool) {
	seen := make(map[string]struct{}, len(s.queue))
	w := len(s.queue)
	for i := len(s.queue) - 1; i >= 0; i-- {
		u := s.queue[i]
		if u.Topic != "" {
			if _, dup := seen[u.Topic]; dup {
				continue
			}
			seen[u.Topic] = struct{}{}
		}
		w--
		s.queue[w] = u
	}
	s.conflated += uint64(w)
	n := copy(s.queue, s.queue[w:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	// What is left is one update per topic: the queue may hold twice that before conflating again, so memory stays
	// proportional to the topics subscribed, not to the update rate.
	s.limit = max(s.hub.opts.QueueLimit, 2*n)
	if s.behind.IsZero() {
		s.behind = now
	}
	return now.Sub(s.behind) > s.hub.opts.SlowTimeout
}

// startWriterLocked starts the writer unless it runs, and unlocks s.mu.
func (s *Subscriber) startWriterLocked() {
	start := !s.writing
	s.writing = true
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// writeLoop drains the queue, each turn writing everything queued so far in one write, and exits when the queue is
// empty. It alone writes to the connection.
func (s *Subscriber) writeLoop() {
	var batch []*Update
	for {
		s.mu.Lock()
		if batch != nil {
			clear(batch) // let written updates be collected
			s.spare = batch[:0]
			batch = nil
		}
		if reason := s.closing; reason != nil {
			s.queue = nil
			s.mu.Unlock()
			s.sink.close(*reason)
			s.hub.live.Done()
			return
		}
		if len(s.queue) == 0 {
			s.behind = time.Time{}
			s.limit = max(s.hub.opts.QueueLimit, s.limit/2)
			if !s.beat {
				s.writing = false
				s.mu.Unlock()
				return
			}
			s.beat = false
			s.mu.Unlock()
			if err := s.sink.heartbeat(); err != nil {
				s.Close(reasonWriteFailed)
			}
			continue
		}
		batch, s.queue, s.spare = s.queue, s.spare, nil
		s.mu.Unlock()

		if err := s.sink.write(batch); err != nil {
			s.Close(reasonWriteFailed)
			continue
		}
		s.lastWrite.Store(time.Now().UnixNano())
	}
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
		s.mu.Lock()
		s.closing = &reason
		s.startWriterLocked()
	})
}

// Closed reports whether s is closing or closed.
func (s *Subscriber) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing != nil
}
