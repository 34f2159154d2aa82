package push

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/subscriber/topic"
)

// HubOptions tune the hub. The zero value is usable: each zero field takes the default it documents.
type HubOptions struct {
	// QueueLimit is how many updates may wait for one subscriber before its queue is conflated to the latest update
	// of each topic. Zero: 256.
	QueueLimit int
	// QueueBytes is how much memory the updates waiting for one subscriber may hold before its queue is conflated
	// the same way. Zero: 4 MiB.
	QueueBytes int
	// SlowTimeout is how long a subscriber may stay behind (its queue conflated and never drained) before it is
	// disconnected as a slow consumer. Zero: 30s.
	SlowTimeout time.Duration
	// WriteTimeout bounds every write to a subscriber's socket; a write that takes longer disconnects it.
	// Zero: 10s.
	WriteTimeout time.Duration
	// Heartbeat is the longest a connection stays silent: a subscriber with nothing written for this long gets a
	// heartbeat (an SSE comment, a WebSocket ping). Zero: 15s.
	Heartbeat time.Duration
	// Retention is how long the last-value cache keeps a topic that has not been updated, matching the stream's
	// MaxAge so the cache does not grow with every finished match forever. Zero: 1h.
	Retention time.Duration
	// ReplayBuffer is how many recent updates the hub keeps in memory, so a client resuming from a recent cursor
	// (a reconnect, a move from another edge) is served without asking the stream. Zero: 16384.
	ReplayBuffer int
	// ReplayBytes bounds the memory those updates hold (payloads and their encodings); the oldest go first.
	// Zero: 64 MiB.
	ReplayBytes int
	// CacheBytes bounds the memory of the last-value cache: an update that would take it past this is rejected
	// (too_many_topics). Zero: 256 MiB.
	CacheBytes int
	// MaxTopics is the most topics the last-value cache holds. A message on a new topic beyond it is rejected
	// (too_many_topics) until topics expire: a producer publishing to endless subjects cannot grow the edge's memory
	// or its catalog without bound. Zero: 10,000.
	MaxTopics int
	// MaxStreamReads is the most reads of the stream's history (resumes from further back than ReplayBuffer, long
	// polls catching up) this edge runs at once; more wait their turn. Zero: 16.
	MaxStreamReads int
	// MaxStreamReadsPerIP is the most such reads one client address runs at once. Zero: 4.
	MaxStreamReadsPerIP int
	// StreamReadWait is how long a read may wait for its turn before the client is told to come back later
	// (ErrBusy). Zero: 10s.
	StreamReadWait time.Duration
	// LatencyBudget is how old an update may grow before the edge stops delivering every update and delivers the
	// newest value of each topic instead: when fan-out falls this far behind what the edge has received (the machine
	// is busy), it skips to the newest values. Zero: 100ms.
	LatencyBudget time.Duration
	// Shards is how many goroutines fan updates out, each to its share of the subscribers. Zero: GOMAXPROCS.
	Shards int
	// Writers is how many goroutines write to connections at once, shared out among the shards; a writer stuck in a
	// write to a client that is not reading is replaced and does not count. Zero: 2 per shard.
	Writers int
	// WriteDelay is how long a subscriber with something to write waits for its write, so that what arrives
	// meanwhile leaves in the same write: fewer, larger writes for a few milliseconds of latency. Zero: no wait.
	WriteDelay time.Duration
	// History is the stream, for resumes from further back than ReplayBuffer holds (a Source). Nil: such resumes
	// get a reset.
	History History
	// CloseGrace is how long the write in progress of a subscriber being closed (slow, draining, token expired) may
	// still take before the connection is cut without a goodbye. Zero: 5s, or WriteTimeout if that is shorter.
	CloseGrace time.Duration
}

func (o HubOptions) withDefaults() HubOptions {
	if o.QueueLimit <= 0 {
		o.QueueLimit = 256
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 4 << 20
	}
	if o.SlowTimeout <= 0 {
		o.SlowTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Retention <= 0 {
		o.Retention = time.Hour
	}
	if o.ReplayBuffer <= 0 {
		o.ReplayBuffer = 16384
	}
	if o.ReplayBytes <= 0 {
		o.ReplayBytes = 64 << 20
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 256 << 20
	}
	if o.MaxStreamReads <= 0 {
		o.MaxStreamReads = 16
	}
	if o.MaxStreamReadsPerIP <= 0 {
		o.MaxStreamReadsPerIP = 4
	}
	if o.StreamReadWait <= 0 {
		o.StreamReadWait = 10 * time.Second
	}
	if o.LatencyBudget <= 0 {
		o.LatencyBudget = 100 * time.Millisecond
	}
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.Writers <= 0 {
		o.Writers = 2 * o.Shards
	}
	if o.WriteDelay < 0 {
		o.WriteDelay = 0
	}
	if o.MaxTopics <= 0 {
		o.MaxTopics = 10_000
	}
	if o.CloseGrace <= 0 {
		o.CloseGrace = min(5*time.Second, o.WriteTimeout)
	}
	return o
}

// Hub routes updates to subscribers. It keeps the last update of every topic (the snapshot served on subscribe) and
// the recent history, and hands what is published to its shards, which fan it out to their subscribers, each on
// its own goroutine. Each subscriber owns its queue, and its shard's writer pool writes its socket: publishing never
// waits for fan-out, and fan-out never waits for a client.
type Hub struct {
	opts HubOptions

	shards []*shard
	log    *fanOutLog // what is published, for the shards

	// cacheMu guards the last-value cache, the recent history and appends to the log. Lock order: a shard's mu
	// before cacheMu. Readers that scan
	// the whole cache (a wildcard snapshot, the catalog) take slots under it and scan after releasing it, so that
	// a scan never holds up Publish.
	cacheMu sync.RWMutex
	head    uint64                // cursor of the newest update published
	latest  map[string]*topicSlot // topic → its slot
	slots   []*topicSlot          // every slot; replaced, never changed in place, when topics come and go
	cached  int                   // memory held by the slots' updates
	recent  ring                  // the latest updates, in cursor order: every update after recent.floor, once history is on

	history History       // the stream, for resumes from further back than recent holds; nil: none
	reads   *readGate     // bounds concurrent reads of history
	epoch   atomic.Uint64 // streams followed so far, minus one: a cursor means nothing across a recreation
	// untold counts fan-out catch-ups that skipped log positions already overwritten, whose updates no subscriber
	// could be told of (tellSkipped): a long poll waiting meanwhile reads its answer again by cursor.
	untold atomic.Uint64

	metrics *metrics
	nextID  atomic.Uint64
	live    sync.WaitGroup // subscribers not yet closed, for a graceful drain
	closing atomic.Bool
}

// NewHub returns an empty hub. Without opts.History, resumes older than the hub's memory get a reset.
func NewHub(opts HubOptions) *Hub {
	opts = opts.withDefaults()
	h := &Hub{
		opts:    opts,
		history: opts.History,
		metrics: newMetrics(),
		recent:  newRing(opts.ReplayBuffer, opts.ReplayBytes),
		log:     newFanOutLog(fanOutLogSize),
		latest:  make(map[string]*topicSlot),
		reads:   newReadGate(opts.MaxStreamReads, opts.MaxStreamReadsPerIP, opts.StreamReadWait),
	}
	for i := range opts.Shards {
		h.shards = append(h.shards, newShard(h, i))
	}
	h.metrics.gauge("livepush_stream_cursor", "Cursor of the newest update the edge has seen.",
		func() float64 { return float64(h.Head()) })
	h.metrics.gauge("livepush_topics", "Topics in the last-value cache.",
		func() float64 { return float64(h.Stats().Topics) })
	h.metrics.gauge("livepush_stream_reads", "Reads of the stream's history in progress for clients (old-cursor resumes and polls).",
		func() float64 { return float64(h.reads.inUse()) })
	h.metrics.gauge("livepush_fanout_lag_seconds", "How long ago the oldest update not yet fanned out was received: "+
		"past the latency budget, the fan-out skips to the newest values.", func() float64 { return h.fanOutLag().Seconds() })
	h.metrics.gauge("livepush_subscriptions", "Subscriptions: patterns held by subscribers, summed over subscribers.",
		func() float64 { return float64(h.subscriptionCount()) })
	return h
}

// fanOutLogSize is how many published updates the shards may fall behind before they must conflate.
const fanOutLogSize = 1 << 16

func (h *Hub) subscriptionCount() (n int) {
	for _, sh := range h.shards {
		sh.mu.RLock()
		for _, set := range sh.patterns {
			n += len(set.members)
		}
		sh.mu.RUnlock()
	}
	return n
}

// fanOutLag returns how long ago the oldest update a shard has yet to fan out was received.
func (h *Hub) fanOutLag() time.Duration {
	var lag time.Duration
	for _, sh := range h.shards {
		lag = max(lag, h.log.age(sh.pos.Load()))
	}
	return lag
}

// releaseLog lets the log drop what every shard has fanned out.
func (h *Hub) releaseLog() {
	pos := h.shards[0].pos.Load()
	for _, sh := range h.shards[1:] {
		pos = min(pos, sh.pos.Load())
	}
	h.log.release(pos)
}

// fannedOut reports whether every shard has fanned out everything published.
func (h *Hub) fannedOut() bool {
	end := h.log.end()
	for _, sh := range h.shards {
		if sh.pos.Load() < end {
			return false
		}
	}
	return true
}

// subscribers returns every subscriber.
func (h *Hub) subscribers() []*Subscriber {
	var subs []*Subscriber
	for _, sh := range h.shards {
		subs = append(subs, sh.subscribers()...)
	}
	return subs
}

// Head returns the cursor of the newest update the hub has seen.
func (h *Hub) Head() uint64 {
	h.cacheMu.RLock()
	defer h.cacheMu.RUnlock()
	return h.head
}

// Publish caches u as its topic's latest update and hands it to the shards, which offer it to every subscriber
// whose patterns match. Updates must come in cursor order; one at or below the head (a redelivery) is ignored. A
// new topic when the cache holds MaxTopics is refused with a *RejectedError. Publish never waits for fan-out, nor
// for a client: the source's consumer only ever ingests.
func (h *Hub) Publish(u *Update) error {
	h.cacheMu.Lock()
	if u.Cursor <= h.head {
		h.cacheMu.Unlock()
		return nil
	}
	slot := h.latest[u.Topic]
	if err := h.admitLocked(u, slot.load()); err != nil {
		h.cacheMu.Unlock()
		return err
	}
	if slot == nil {
		slot = &topicSlot{topic: u.Topic}
		h.latest[u.Topic] = slot
		h.slots = append(slices.Clip(h.slots), slot) // a new array: scans in progress keep theirs
	} else {
		h.cached -= slot.load().memSize()
	}
	slot.latest.Store(u)
	h.cached += u.memSize()
	h.head = u.Cursor
	h.recent.push(u)
	h.log.append(u)
	h.cacheMu.Unlock()
	for _, sh := range h.shards {
		sh.notify()
	}
	return nil
}

// admitLocked checks that the cache has room for u, which replaces old (nil for a new topic). h.cacheMu must be held.
func (h *Hub) admitLocked(u, old *Update) error {
	if old == nil && len(h.latest) >= h.opts.MaxTopics {
		return reject(RejectTooManyTopics, "the edge caches %d topics already (-max-cached-topics)", h.opts.MaxTopics)
	}
	grow := u.memSize()
	if old != nil {
		grow -= old.memSize()
	}
	if grow > 0 && h.cached+grow > h.opts.CacheBytes {
		return reject(RejectTooManyTopics, "the edge's cache of latest values is full (%d MiB, -cache-bytes)", h.opts.CacheBytes>>20)
	}
	return nil
}

// cachesTopic reports whether u would be accepted by the cache now.
func (h *Hub) cachesTopic(u *Update) bool {
	h.cacheMu.RLock()
	defer h.cacheMu.RUnlock()
	return h.admitLocked(u, h.latest[u.Topic].load()) == nil
}

// streamRecreated forgets what the hub holds of a stream that was deleted and created again, whose cursors start
// over, and closes every subscriber: their cursors mean nothing in the new stream. Clients that come back with one
// are refused as ahead of the stream (bad_cursor), which they take as a reset. The source calls it while no
// consumer feeds the hub.
func (h *Hub) streamRecreated() {
	h.cacheMu.Lock()
	h.epoch.Add(1)
	h.head, h.cached, h.slots = 0, 0, nil
	clear(h.latest)
	h.recent.stop()
	h.log.clear()
	h.cacheMu.Unlock()
	for _, s := range h.subscribers() {
		s.Close(reasonStreamRecreated)
	}
}

// newSubscriber registers a connection with the hub. Its patterns start empty.
func (h *Hub) newSubscriber(sink sink, transport, remote string, onClose func()) (*Subscriber, bool) {
	s := &Subscriber{
		hub:        h,
		id:         h.nextID.Add(1),
		sink:       sink,
		transport:  transport,
		remote:     remote,
		onClose:    onClose, // set before s is visible: another goroutine may close it from then on
		limit:      h.opts.QueueLimit,
		limitBytes: h.opts.QueueBytes,
		metrics:    h.metrics.forTransport(transport),
	}
	s.shard = h.shards[s.id%uint64(len(h.shards))]
	s.lastWrite.Store(time.Now().UnixNano())
	joined := false
	s.shard.change(func() {
		if h.closing.Load() { // Shutdown sets it before it takes the shards' subscribers
			return
		}
		s.shard.members[s] = &member{s: s}
		h.live.Add(1)
		h.metrics.connections.WithLabelValues(transport).Inc()
		h.metrics.connectionsTotal.WithLabelValues(transport).Inc()
		joined = true
	})
	if !joined {
		return nil, false
	}
	return s, true
}

// Subscription is what a client asks for: topic patterns and, optionally, a rate limit per topic.
type Subscription struct {
	Patterns []string
	// MaxRate is the most updates per second delivered for each topic, the latest value winning; the newest value
	// always arrives. Zero: no limit.
	MaxRate float64
}

// Subscribe adds sub's patterns to s, queues reply (if not nil), then the snapshot (the latest update of every topic
// that the new patterns match and the old ones did not), then live updates: with no gap and no duplicate between
// them. For patterns s already has, only the rate changes.
//
// The snapshot is taken without the subscription index, so that a wildcard over many topics holds up no publishing:
// the cache as of some cursor first, then, holding the index, what was published since, from memory.
func (h *Hub) Subscribe(s *Subscriber, sub Subscription, reply *Update) {
	existing := s.Patterns() // only this subscriber's own control flow changes them, and it is here
	var added []string
	for _, p := range sub.Patterns {
		if !slices.Contains(existing, p) && !slices.Contains(added, p) {
			added = append(added, p)
		}
	}
	keep := func(t string) bool { return matchesAny(added, t) && !matchesAny(existing, t) }
	var asOf uint64
	var snapshot []*Update
	if len(added) > 0 {
		asOf, snapshot = h.latestAsOf(added, keep)
	}

	sh := s.shard
	sh.change(func() {
		m := sh.members[s]
		if m == nil { // removed meanwhile
			return
		}
		sh.addPatternsLocked(m, sub)
		// Holding the shard's index keeps its fan-out from offering anything until s is ready: updates up to head
		// are in the snapshot, and the cursor check in offer drops them when the fan-out gets to them.
		h.cacheMu.RLock()
		head := h.head
		switch {
		case len(added) == 0 || head == asOf:
		case h.recent.covers(asOf):
			snapshot = h.recent.after(snapshot, asOf, func(u *Update) bool { return keep(u.Topic) })
		default: // memory does not reach back that far (the edge is still catching up): look again, holding the cache
			snapshot = scanLatest(h.slots, head, added, keep, nil)
			sortByCursor(snapshot)
		}
		h.cacheMu.RUnlock()
		s.enqueueLocked(reply, snapshot, head)
	})
}

// Unsubscribe removes patterns from s, drops the updates queued for s that no remaining pattern matches, and queues
// reply (if not nil): after the reply, s receives nothing for the removed patterns.
func (h *Hub) Unsubscribe(s *Subscriber, patterns []string, reply *Update) {
	sh := s.shard
	sh.change(func() {
		m := sh.members[s]
		if m == nil {
			return
		}
		for _, p := range patterns {
			sh.removePatternLocked(m, p)
		}
		sh.ratesChangedLocked(m)
		s.purge(m.matches, reply)
	})
}

// remove takes s out of the hub entirely. It reports false if s was already removed.
func (h *Hub) remove(s *Subscriber) (removed bool) {
	sh := s.shard
	sh.change(func() {
		m := sh.members[s]
		if m == nil {
			return
		}
		for len(m.subs) > 0 {
			sh.removePatternLocked(m, m.subs[len(m.subs)-1].set.pattern)
		}
		delete(sh.members, s)
		removed = true
	})
	return removed
}

// Snapshot returns the head cursor and the latest update of every topic matching one of patterns, in cursor order.
func (h *Hub) Snapshot(patterns []string) (head uint64, updates []*Update) {
	return h.latestAsOf(patterns, func(string) bool { return true })
}

// latestAsOf returns a cursor and, in cursor order, the latest update as of that cursor of every topic that one of
// patterns matches and keep accepts. Topics named in full, as most subscriptions are, are looked up; wildcards
// scan the cache without holding it.
func (h *Hub) latestAsOf(patterns []string, keep func(topic string) bool) (asOf uint64, updates []*Update) {
	h.cacheMu.RLock()
	asOf, slots := h.head, h.slots
	literal := !slices.ContainsFunc(patterns, func(p string) bool { return !topic.IsLiteral(p) })
	if literal {
		for i, t := range patterns {
			if u := h.latest[t].load(); u != nil && !slices.Contains(patterns[:i], t) && keep(t) {
				updates = append(updates, u)
			}
		}
	}
	h.cacheMu.RUnlock()
	if !literal {
		updates = scanLatest(slots, asOf, patterns, keep, nil)
	}
	sortByCursor(updates)
	return asOf, updates
}

// scanLatest appends to dst the latest update of each slot whose topic one of patterns matches and keep accepts,
// if it is at or before asOf: one published since is left for the caller to take from memory.
func scanLatest(slots []*topicSlot, asOf uint64, patterns []string, keep func(string) bool, dst []*Update) []*Update {
	for _, slot := range slots {
		if u := slot.load(); u.Cursor <= asOf && matchesAny(patterns, slot.topic) && keep(slot.topic) {
			dst = append(dst, u)
		}
	}
	return dst
}

func sortByCursor(updates []*Update) {
	slices.SortFunc(updates, func(a, b *Update) int { return cmp.Compare(a.Cursor, b.Cursor) })
}

// topicSlot holds the latest update of one topic. The update is swapped atomically, so a scan of every slot needs
// no lock.
type topicSlot struct {
	topic  string
	latest atomic.Pointer[Update]
}

// load returns the slot's update, or nil for no slot.
func (t *topicSlot) load() *Update {
	if t == nil {
		return nil
	}
	return t.latest.Load()
}

// Run fans out what is published (on a goroutine per shard), sends heartbeats to idle subscribers, disconnects
// stuck ones and expires old topics from the cache, until ctx ends. Nothing reaches subscribers while it does not
// run.
func (h *Hub) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, sh := range h.shards {
		wg.Go(func() { sh.run(ctx) })
		sh.notify() // what was published before Run
	}
	tick := time.NewTicker(min(h.opts.Heartbeat, h.opts.SlowTimeout) / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			h.sweep(now)
		}
	}
}

func (h *Hub) sweep(now time.Time) {
	idle := now.Add(-h.opts.Heartbeat).UnixNano()
	for _, s := range h.subscribers() {
		s.check(now, idle)
	}

	expired := now.Add(-h.opts.Retention)
	h.cacheMu.Lock()
	if slices.ContainsFunc(h.slots, func(t *topicSlot) bool { return t.load().Recv.Before(expired) }) {
		live := make([]*topicSlot, 0, len(h.slots)) // a new array: scans in progress keep theirs
		for _, slot := range h.slots {
			if u := slot.load(); u.Recv.Before(expired) {
				delete(h.latest, slot.topic)
				h.cached -= u.memSize()
			} else {
				live = append(live, slot)
			}
		}
		h.slots = live
	}
	topics := len(h.latest)
	h.cacheMu.Unlock()

	// A match cache gains an entry per topic ever published (every new match); start it afresh when it holds far
	// more topics than are alive.
	for _, sh := range h.shards {
		sh.mu.Lock()
		if len(sh.matches) > 2*topics+1024 {
			clear(sh.matches)
		}
		sh.mu.Unlock()
	}
}

// Shutdown closes every subscriber with reason (WebSocket clients get its close code, SSE clients a final event
// telling them to reconnect) and refuses new ones. It waits until all have been told or ctx ends; then it cuts the
// connections that are still stuck.
func (h *Hub) Shutdown(ctx context.Context, reason closeReason) error {
	h.closing.Store(true) // before the subscribers are taken: newSubscriber checks it holding its shard
	subs := h.subscribers()
	for _, s := range subs {
		s.Close(reason)
	}
	done := make(chan struct{})
	go func() { h.live.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, s := range subs {
			s.sink.abort()
		}
		return ctx.Err()
	}
}

// Topic is one entry of the catalog.
type Topic struct {
	Topic  string `json:"topic"`
	Kind   string `json:"kind"`
	Cursor uint64 `json:"cursor,string"`
}

// Topics returns the catalog: every topic in the last-value cache, sorted by name, and the head cursor.
func (h *Hub) Topics() (head uint64, topics []Topic) {
	h.cacheMu.RLock()
	head, slots := h.head, h.slots
	h.cacheMu.RUnlock()
	topics = make([]Topic, 0, len(slots))
	for _, slot := range slots {
		if u := slot.load(); u.Cursor <= head {
			topics = append(topics, Topic{Topic: slot.topic, Kind: u.Kind, Cursor: u.Cursor})
		}
	}
	slices.SortFunc(topics, func(a, b Topic) int { return cmp.Compare(a.Topic, b.Topic) })
	return head, topics
}

// Stats counts what the hub holds, for health and metrics.
type Stats struct {
	Subscribers int
	Patterns    int
	Topics      int
	Head        uint64
}

// Stats returns current counts.
func (h *Hub) Stats() Stats {
	var st Stats
	for _, sh := range h.shards {
		sh.mu.RLock()
		st.Subscribers += len(sh.members)
		st.Patterns += len(sh.patterns)
		sh.mu.RUnlock()
	}
	h.cacheMu.RLock()
	st.Topics, st.Head = len(h.latest), h.head
	h.cacheMu.RUnlock()
	return st
}

func matchesAny(patterns []string, t string) bool {
	for _, p := range patterns {
		if topic.Match(p, t) {
			return true
		}
	}
	return false
}
