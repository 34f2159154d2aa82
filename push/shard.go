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

	// mu guards the index: who belongs to the shard and which patterns each holds. The fan-out holds it for reading
	// while it offers a batch (queueing only, never writing to a socket); subscribing and unsubscribing hold it for
	// writing.
	mu       sync.RWMutex
	patterns map[string]*patternSet   // distinct pattern → its members
	matches  map[string][]*patternSet // topic → the pattern sets matching it; kept up to date as patterns come and go
	members  map[*Subscriber]*member  // a subscriber is here from newSubscriber until hub.remove

	// Changes to the index waiting for the goroutine that applies them (see change).
	changesMu sync.Mutex
	changes   []*indexChange
	applying  bool // a goroutine is applying changes, or has been handed the turn to

	// The fan-out's position: the next entry of the log to fan out (read by the lag gauge), and, its goroutine's
	// alone, the cursor of the newest update fanned out (past which a conflated catch-up starts).
	pos    atomic.Uint64
	cursor uint64
	epoch  uint64        // the hub's epoch the cursor belongs to
	wake   chan struct{} // a send says the log has grown

	skipped prometheus.Counter // updates its fan-out skipped to catch up
	rounds  uint64             // catch-ups that told subscribers what they skipped (tellSkipped's)

	writers *writerPool // writes to its subscribers' connections
}

type patternSet struct {
	pattern string
	members []*member
}

// member is a subscriber's place in its shard's index: the patterns it holds. The index owns it (guarded by the
// shard's mu); the subscriber owns its queue and is handed its member when the fan-out offers it an update.
type member struct {
	s     *Subscriber
	subs  []subscription
	rated bool // some subscription has a rate limit

	told uint64 // the catch-up that last counted what it skipped for s (tellSkipped's, on the fan-out goroutine)
}

type subscription struct {
	set     *patternSet
	index   int     // position of the member in set.members
	maxRate float64 // updates per second per topic; zero: unlimited
}

// find returns the index of p in m.subs, or -1.
func (m *member) find(p string) int {
	for i, sub := range m.subs {
		if sub.set.pattern == p {
			return i
		}
	}
	return -1
}

// matches reports whether one of m's patterns matches topic t.
func (m *member) matches(t string) bool {
	for _, sub := range m.subs {
		if topic.Match(sub.set.pattern, t) {
			return true
		}
	}
	return false
}

// patterns returns the patterns m holds.
func (m *member) patterns() []string {
	ps := make([]string, len(m.subs))
	for i, sub := range m.subs {
		ps[i] = sub.set.pattern
	}
	return ps
}

// rateFor returns the rate limit of topic t: the least restrictive of the subscriptions matching it, or 0 when one
// of them is unlimited.
func (m *member) rateFor(t string) float64 {
	rate := 0.0
	for _, sub := range m.subs {
		if topic.Match(sub.set.pattern, t) {
			if sub.maxRate <= 0 {
				return 0
			}
			rate = max(rate, sub.maxRate)
		}
	}
	return rate
}

func newShard(h *Hub, index int) *shard {
	return &shard{
		hub:      h,
		skipped:  h.metrics.fanOutConflated.WithLabelValues(strconv.Itoa(index)),
		patterns: make(map[string]*patternSet),
		matches:  make(map[string][]*patternSet),
		members:  make(map[*Subscriber]*member),
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

// indexChange is a change to a shard's index waiting to be applied.
type indexChange struct {
	apply    func()
	turn     chan bool // receives false once applied, or true: its goroutine is to apply the changes waiting
	panicked any       // what apply panicked with, to panic with in the goroutine the change is for
}

// run applies c, keeping a panic for c's own goroutine: the applier goes on with the others.
func (c *indexChange) run() {
	defer func() {
		if r := recover(); r != nil {
			c.panicked = r
		}
	}()
	c.apply()
}

// maxChangesPerHold and maxHoldTime bound one hold of the index, so that a connect storm holds up the fan-out for
// a moment at a time. The time bound is for changes that cost more than most: a new wildcard pattern is matched
// against every topic in the match cache, and a stranger can send many distinct ones from many connections.
const (
	maxChangesPerHold = 256
	maxHoldTime       = time.Millisecond
)

// change runs apply holding sh.mu for writing and returns once it has run. Every connect, subscribe and disconnect
// changes the index, and on a saturated edge a storm of them queued for mu one at a time: the mutex hands itself to
// each waiter in turn, and each must wait for the fan-out's batch and then to be scheduled, so a few hundred got in
// a second while thousands of clients timed out and came back. So changes wait in a list, and one goroutine at a
// time applies all that are waiting, up to maxChangesPerHold, under one hold of mu; then it hands the turn to the
// goroutine of the next change waiting, if any.
func (sh *shard) change(apply func()) {
	c := &indexChange{apply: apply, turn: make(chan bool, 1)}
	sh.changesMu.Lock()
	sh.changes = append(sh.changes, c)
	first := !sh.applying
	sh.applying = true
	sh.changesMu.Unlock()
	if first || <-c.turn { // else another goroutine applied it
		sh.applyChanges()
	}
	if c.panicked != nil {
		panic(c.panicked)
	}
}

// applyChanges applies the changes waiting, holding mu, and tells their goroutines. Those left when the hold's
// time is up go back to the front of the list, for the next hold.
func (sh *shard) applyChanges() {
	sh.changesMu.Lock()
	n := min(len(sh.changes), maxChangesPerHold)
	batch := slices.Clone(sh.changes[:n])
	sh.changes = slices.Delete(sh.changes, 0, n)
	sh.changesMu.Unlock()
	sh.mu.Lock()
	start := time.Now()
	for i, c := range batch {
		c.run()
		if i+1 < len(batch) && time.Since(start) > maxHoldTime {
			n = i + 1
			break
		}
	}
	sh.mu.Unlock()

	sh.changesMu.Lock()
	sh.changes = slices.Insert(sh.changes, 0, batch[n:]...)
	batch = batch[:n]
	var next *indexChange
	if len(sh.changes) > 0 {
		next = sh.changes[0]
	} else {
		sh.applying = false
	}
	sh.changesMu.Unlock()
	for _, c := range batch {
		c.turn <- false
	}
	if next != nil {
		next.turn <- true
	}
}

// fanOutBatch is how many updates the fan-out takes from the log at a time: changes to the index wait at most one
// batch for it.
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
		for _, set := range sh.matchingRLocked(u.Topic) {
			for _, m := range set.members {
				m.s.offer(u, m)
			}
		}
	}
	sh.mu.RUnlock()
}

// matchingRLocked returns the pattern sets matching topic t, holding sh.mu for reading; the first time t is seen it
// lets go of it a moment to fill the match cache.
func (sh *shard) matchingRLocked(t string) []*patternSet {
	sets, ok := sh.matches[t]
	for !ok {
		sh.mu.RUnlock()
		sh.mu.Lock()
		sh.matchLocked(t)
		sh.mu.Unlock()
		sh.mu.RLock()
		sets, ok = sh.matches[t] // read again: the index may have changed while it was not held
	}
	return sets
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
	sh.tellSkipped(sh.pos.Load(), end, latest)
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

// tellSkipped counts, for each subscriber, the updates between log positions from and end that it would have been
// offered and that the catch-up skips (all but latest), so that its next write begins with a conflated notice: what
// a client receives plus what it is told adds up to what was published for it. The skipped cursors are gathered per
// pattern set, not per subscriber, so that the work is the skipped updates times the sets they match plus a
// binary search per subscriber, however many subscribers share a pattern. Positions the log has overwritten cannot
// be attributed and go untold; rate-limited subscribers, which conflate anyway, are not told.
func (sh *shard) tellSkipped(from, end uint64, latest []*Update) {
	kept := make(map[*Update]struct{}, len(latest))
	for _, u := range latest {
		kept[u] = struct{}{}
	}
	skipped := make(map[*patternSet][]uint64) // ascending
	batch := make([]*Update, fanOutBatch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for from < end {
		n, lost := sh.hub.log.read(from, batch[:min(uint64(len(batch)), end-from)])
		if lost {
			if oldest := sh.hub.log.oldest(); oldest > from {
				sh.hub.untold.Add(1)
				from = oldest
				continue
			}
			break // the stream was recreated
		}
		if n == 0 {
			break
		}
		for _, u := range batch[:n] {
			if _, ok := kept[u]; !ok {
				for _, set := range sh.matchingRLocked(u.Topic) {
					skipped[set] = append(skipped[set], u.Cursor)
				}
			}
		}
		clear(batch[:n])
		from += uint64(n)
	}
	sh.rounds++
	for set := range skipped {
		for _, m := range set.members {
			if m.rated || m.told == sh.rounds {
				continue
			}
			m.told = sh.rounds
			m.s.skippedByFanOut(m, skipped)
		}
	}
}

// skippedAfter counts the cursors above floor (what m had already been sent, or given in a snapshot) that skipped
// holds for m's patterns, each once.
func (m *member) skippedAfter(floor uint64, skipped map[*patternSet][]uint64) uint64 {
	above := func(cursors []uint64) []uint64 {
		i, _ := slices.BinarySearch(cursors, floor+1)
		return cursors[i:]
	}
	var n uint64
	if m.disjoint() {
		for _, sub := range m.subs {
			n += uint64(len(above(skipped[sub.set])))
		}
		return n
	}
	var all []uint64 // patterns that overlap can match the same update: count it once
	for _, sub := range m.subs {
		all = append(all, above(skipped[sub.set])...)
	}
	slices.Sort(all)
	return uint64(len(slices.Compact(all)))
}

// disjoint reports whether no topic matches two of m's patterns: distinct literal patterns never overlap.
func (m *member) disjoint() bool {
	for i, a := range m.subs {
		if topic.IsLiteral(a.set.pattern) {
			continue
		}
		for j, b := range m.subs {
			if i != j && topic.Overlap(a.set.pattern, b.set.pattern) {
				return false
			}
		}
	}
	return true
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

// addPatternsLocked registers the patterns of sub that m does not hold yet and returns them; for those it holds, it
// sets the new rate. sh.mu must be held for writing.
func (sh *shard) addPatternsLocked(m *member, sub Subscription) (added []string) {
	for _, p := range sub.Patterns {
		if i := m.find(p); i >= 0 {
			m.subs[i].maxRate = sub.MaxRate
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
		m.subs = append(m.subs, subscription{set: set, index: len(set.members), maxRate: sub.MaxRate})
		set.members = append(set.members, m)
	}
	sh.ratesChangedLocked(m)
	return added
}

// removePatternLocked takes p from m. sh.mu must be held for writing.
func (sh *shard) removePatternLocked(m *member, p string) {
	i := m.find(p)
	if i < 0 {
		return
	}
	sub := m.subs[i]
	m.subs = slices.Delete(m.subs, i, i+1)
	set := sub.set
	last := len(set.members) - 1
	if sub.index != last {
		moved := set.members[last]
		set.members[sub.index] = moved
		for j := range moved.subs {
			if moved.subs[j].set == set {
				moved.subs[j].index = sub.index
				break
			}
		}
	}
	set.members[last] = nil
	set.members = set.members[:last]
	if len(set.members) == 0 {
		delete(sh.patterns, p)
		sh.patternRemovedLocked(set)
	}
}

// ratesChangedLocked notes whether m has a rate limit left and has its subscriber start its throttles afresh, after
// its subscriptions changed. sh.mu must be held for writing.
func (sh *shard) ratesChangedLocked(m *member) {
	m.rated = false
	for _, sub := range m.subs {
		m.rated = m.rated || sub.maxRate > 0
	}
	m.s.resetThrottles()
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
	subs := make([]*Subscriber, 0, len(sh.members))
	for s := range sh.members {
		subs = append(subs, s)
	}
	return subs
}

// patternsOf returns the patterns s holds.
func (sh *shard) patternsOf(s *Subscriber) []string {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if m := sh.members[s]; m != nil {
		return m.patterns()
	}
	return nil
}
