package main

import (
	"sync"
	"sync/atomic"

	"github.com/livepush/livepush/subscriber/wire"
)

// What pushbench reads in a payload, without decoding it: "ts" (every payload has it: when it was published),
// and "run" and "n", which pushbench's own publisher adds: the run that published it and the update's number in
// its topic, 1, 2, 3… A gap in n is an update the edge lost; n again is one it sent twice.
type payloadFields struct {
	ts   int64 // Unix nanoseconds; 0 if none
	n    uint64
	hasN bool
	run  []byte
}

var payloadKeys = []string{"ts", "n", "run"}

func parsePayload(data []byte) (f payloadFields) {
	var m [3]wire.Field
	wire.Scan(data, payloadKeys, m[:])
	if ts, ok := m[0].Str(); ok {
		f.ts, _ = wire.ParseTime(ts)
	}
	f.n, f.hasN = m[1].Uint()
	f.run, _ = m[2].Str()
	return f
}

// verdict is what the tracker makes of an update.
type verdict uint8

const (
	first   verdict = iota // the first update of its topic on this connection: the baseline (the snapshot)
	inOrder                // the next one
	gap                    // n jumped: updates are missing
	same                   // the cursor it already had for the topic: a duplicate (for polling: nothing new)
	older                  // a cursor below the one it had for the topic: out of order, a duplicate
	repeat                 // a new cursor but an n it had already: the same update again
)

// tracker follows one connection's topics: the last cursor and n of each.
type tracker struct {
	topics []topicState
	index  map[string]int // when the connection follows many topics
	view   *view          // where the sampler of staleness reads the n it holds; nil: not sampled
}

type topicState struct {
	topic  string
	cursor uint64
	n      uint64         // 0: no number seen yet
	held   *atomic.Uint64 // n again, in the view
}

// observe checks an update and returns its verdict, and for a gap the number of updates missing. n is checked only
// when checkN: the payload has one, from the current run.
func (t *tracker) observe(in *interner, topic []byte, cursor, n uint64, checkN bool) (verdict, uint64) {
	st := t.find(topic)
	if st == nil {
		name := in.intern(topic)
		held := t.view.slot(name)
		hold(held, nIf(checkN, n))
		t.add(topicState{topic: name, cursor: cursor, n: nIf(checkN, n), held: held})
		return first, 0
	}
	switch {
	case cursor == st.cursor:
		return same, 0
	case cursor < st.cursor:
		return older, 0
	}
	st.cursor = cursor
	if !checkN {
		return inOrder, 0
	}
	prev := st.n
	st.n = max(st.n, n)
	hold(st.held, n)
	switch {
	case prev == 0 || n == prev+1:
		return inOrder, 0
	case n > prev+1:
		return gap, n - prev - 1
	}
	return repeat, 0
}

func nIf(ok bool, n uint64) uint64 {
	if ok {
		return n
	}
	return 0
}

// reset forgets every topic: after the edge's reset, a fresh snapshot is the new baseline.
func (t *tracker) reset() {
	t.topics = t.topics[:0]
	t.index = nil
}

func (t *tracker) find(topic []byte) *topicState {
	if t.index != nil {
		if i, ok := t.index[string(topic)]; ok {
			return &t.topics[i]
		}
		return nil
	}
	for i := range t.topics {
		if t.topics[i].topic == string(topic) {
			return &t.topics[i]
		}
	}
	return nil
}

func (t *tracker) add(st topicState) {
	t.topics = append(t.topics, st)
	switch {
	case t.index != nil:
		t.index[st.topic] = len(t.topics) - 1
	case len(t.topics) > 16:
		t.index = make(map[string]int, 2*len(t.topics))
		for i, s := range t.topics {
			t.index[s.topic] = i
		}
	}
}

// interner shares one copy of each topic name among a worker's connections.
type interner struct {
	mu sync.RWMutex
	m  map[string]string
}

func (in *interner) intern(b []byte) string {
	in.mu.RLock()
	s, ok := in.m[string(b)]
	in.mu.RUnlock()
	if ok {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil {
		in.m = make(map[string]string)
	}
	s = string(b)
	in.m[s] = s
	return s
}
