package push

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/prometheus/client_golang/prometheus"
)

// A shard owns a share of the hub's subscribers: their index (which patterns they hold, which pattern sets match a
// topic) and the goroutine that fans the published updates out to them. Each subscriber belongs to one shard for
// its life; the shards read the same fan-out log, each at its own pace, so that fan-out runs on every core and a
// subscribe, which locks only its own shard, holds up only that shard's fan-out.
type shard struct {
	hub *Hub

	// mu guards the index. The fan-out holds it for reading while it offers a batch (queueing only, never writing to
	// a socket); subscribing and unsubscribing hold it for writing.
	mu       sync.RWMutex
	patterns map[string]*patternSet   // distinct pattern → its subscribers
	matches  map[string][]*patternSet // topic → the pattern sets matching it; kept up to date as patterns come and go
	subs     map[*Subscriber]struct{}

	// The fan-out's position: the next entry of the log to fan out (read by the lag gauge), and, its goroutine's
	// alone, the cursor of the newest update fanned out (past which a conflated catch-up starts).
	pos    atomic.Uint64
	cursor uint64
	epoch  uint64        // the hub's epoch the cursor belongs to
	wake   chan struct{} // a send says the log has grown

	skipped prometheus.Counter // updates its fan-out skipped to catch up

	writers *writerPool // writes to its subscribers' connections
}

type patternSet struct {
	pattern string
	subs    []*Subscriber
}

func newShard(h *Hub, index int) *shard {
	return &shard{
		hub:      h,
		skipped:  h.metrics.fanOutConflated.WithLabelValues(strconv.Itoa(index)),
		patterns: make(map[string]*patternSet),
		matches:  make(map[string][]*patternSet),
		subs:     make(map[*Subscriber]struct{}),
		wake:     make(chan struct{}, 1),
		writers:  newWriterPool((h.opts.Writers+index)/h.opts.Shards, h.opts.WriteDelay),
	}
}

// notify tells the shard's fan-out that the log has grown. It never blocks.
func (sh *shard) notify() {
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

// fanOutBatch is how many updates the fan-out takes from the log at a time: a subscribe waits at most one batch.
const fanOutBatch = 256

// skipBacklog is how many updates must wait for a fan-out past its latency budget before it skips to the newest
// values: a moment's hiccup with a few updates waiting delivers them all; only a fan-out that cannot keep up with
// what arrives skips.
const skipBacklog = 4 * fanOutBatch

// run fans out what the log receives until ctx ends. When it falls further behind than the hub's latency budget
// (the oldest update it has not fanned out is older, with skipBacklog of them waiting), or the log has been
// overwritten past it, it conflates: it fans out the newest value of every topic published since, and goes on from
// there.
func (sh *shard) run(ctx context.Context) {
	h := sh.hub
	batch := make([]*Update, fanOutBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sh.wake:
		}
		for ctx.Err() == nil {
			if e := h.epoch.Load(); e != sh.epoch { // the stream was recreated: its cursors start over
				sh.epoch, sh.cursor = e, 0
			}
			n, lost := h.log.read(sh.pos.Load(), batch)
			if n == 0 && !lost {
				break
			}
			if lost || time.Since(batch[0].Recv) > h.opts.LatencyBudget && h.log.end()-sh.pos.Load() >= skipBacklog {
				clear(batch[:n])
				sh.catchUp()
				continue
			}
			sh.fanOut(batch[:n])
			sh.cursor = batch[n-1].Cursor
			sh.pos.Add(uint64(n))
			clear(batch[:n]) // let fanned-out updates be collected
			h.releaseLog()
		}
	}
}

// fanOut offers each update to the shard's subscribers whose patterns match it.
func (sh *shard) fanOut(batch []*Update) {
	sh.mu.RLock()
	for _, u := range batch {
		sets, ok := sh.matches[u.Topic]
		for !ok {
			sh.mu.RUnlock()
			sh.mu.Lock()
			sh.matchLocked(u.Topic)
			sh.mu.Unlock()
			sh.mu.RLock()
			sets, ok = sh.matches[u.Topic] // read again: the index may have changed while it was not held
		}
		for _, set := range sets {
			for _, s := range set.subs {
				s.offer(u)
			}
		}
	}
	sh.mu.RUnlock()
}

// catchUp conflates a fan-out that has fallen behind: it offers the newest value of every topic updated since the
// last update it fanned out, in cursor order, and moves its position to the log's end. What it skips is counted.
func (sh *shard) catchUp() {
	h := sh.hub
	h.cacheMu.RLock()
	head, slots, end := h.head, h.slots, h.log.end()
	h.cacheMu.RUnlock()
	var latest []*Update
	for _, slot := range slots {
		if u := slot.load(); u.Cursor > sh.cursor && u.Cursor <= head {
			latest = append(latest, u)
		}
	}
	sortByCursor(latest)
	for i := 0; i < len(latest); i += fanOutBatch {
		sh.fanOut(latest[i:min(i+fanOutBatch, len(latest))])
	}
	if skipped := int(end-sh.pos.Load()) - len(latest); skipped > 0 {
		sh.skipped.Add(float64(skipped))
	}
	sh.cursor = max(sh.cursor, head)
	sh.pos.Store(end)
	h.releaseLog()
}

// matchLocked returns (and caches) the pattern sets that match topic t. sh.mu must be held for writing.
func (sh *shard) matchLocked(t string) []*patternSet {
	if sets, ok := sh.matches[t]; ok {
		return sets
	}
	var sets []*patternSet
	for p, set := range sh.patterns {
		if topic.Match(p, t) {
			sets = append(sets, set)
		}
	}
	sh.matches[t] = sets
	return sets
}

// addPatternsLocked registers the patterns of sub that s does not have yet and returns them; for those it has, it
// sets the new rate. sh.mu must be held for writing.
func (sh *shard) addPatternsLocked(s *Subscriber, sub Subscription) (added []string) {
	for _, p := range sub.Patterns {
		if i := s.patternIndexLocked(p); i >= 0 {
			s.patterns[i].maxRate = sub.MaxRate
			continue
		}
		if slices.Contains(added, p) {
			continue
		}
		added = append(added, p)
		set := sh.patterns[p]
		if set == nil {
			set = &patternSet{pattern: p}
			sh.patterns[p] = set
			sh.patternAddedLocked(set)
		}
		s.patterns = append(s.patterns, subscription{set: set, index: len(set.subs), maxRate: sub.MaxRate})
		set.subs = append(set.subs, s)
	}
	s.ratesChangedLocked()
	return added
}

func (sh *shard) removePatternLocked(s *Subscriber, p string) {
	i := s.patternIndexLocked(p)
	if i < 0 {
		return
	}
	sub := s.patterns[i]
	s.patterns = slices.Delete(s.patterns, i, i+1)
	set := sub.set
	last := len(set.subs) - 1
	if sub.index != last {
		moved := set.subs[last]
		set.subs[sub.index] = moved
		for j := range moved.patterns {
			if moved.patterns[j].set == set {
				moved.patterns[j].index = sub.index
				break
			}
		}
	}
	set.subs[last] = nil
	set.subs = set.subs[:last]
	if len(set.subs) == 0 {
		delete(sh.patterns, p)
		sh.patternRemovedLocked(set)
	}
}

// patternAddedLocked adds a new pattern's set to the topics it matches in the match cache: a literal pattern is
// one lookup, a wildcard one match per cached topic. Clearing the cache instead would make every topic's next
// fan-out take the index for writing and match it against every pattern. sh.mu must be held for writing.
func (sh *shard) patternAddedLocked(set *patternSet) {
	if topic.IsLiteral(set.pattern) {
		if sets, ok := sh.matches[set.pattern]; ok {
			sh.matches[set.pattern] = append(sets, set)
		}
		return
	}
	for t, sets := range sh.matches {
		if topic.Match(set.pattern, t) {
			sh.matches[t] = append(sets, set)
		}
	}
}

// patternRemovedLocked takes a pattern's set, now empty, out of the match cache. sh.mu must be held for writing.
func (sh *shard) patternRemovedLocked(set *patternSet) {
	drop := func(t string, sets []*patternSet) {
		if i := slices.Index(sets, set); i >= 0 {
			sh.matches[t] = slices.Delete(sets, i, i+1)
		}
	}
	if topic.IsLiteral(set.pattern) {
		if sets, ok := sh.matches[set.pattern]; ok {
			drop(set.pattern, sets)
		}
		return
	}
	for t, sets := range sh.matches {
		if topic.Match(set.pattern, t) {
			drop(t, sets)
		}
	}
}

// subscribers returns the shard's subscribers.
func (sh *shard) subscribers() []*Subscriber {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	subs := make([]*Subscriber, 0, len(sh.subs))
	for s := range sh.subs {
		subs = append(subs, s)
	}
	return subs
}
