package main

import (
	"bytes"
	"sync"
	"time"
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

var (
	tsKey  = []byte(`"ts":"`)
	nKey   = []byte(`"n":`)
	runKey = []byte(`"run":"`)
)

func parsePayload(data []byte) (f payloadFields) {
	if i := bytes.Index(data, runKey); i >= 0 {
		v := data[i+len(runKey):]
		if j := bytes.IndexByte(v, '"'); j >= 0 {
			f.run = v[:j]
		}
	}
	if i := bytes.Index(data, nKey); i >= 0 {
		v := data[i+len(nKey):]
		j := 0
		for j < len(v) && v[j] >= '0' && v[j] <= '9' {
			f.n = f.n*10 + uint64(v[j]-'0')
			j++
		}
		f.hasN = j > 0
	}
	if i := bytes.Index(data, tsKey); i >= 0 {
		v := data[i+len(tsKey):]
		if j := bytes.IndexByte(v, '"'); j >= 0 {
			f.ts, _ = parseTime(v[:j])
		}
	}
	return f
}

// parseTime reads an RFC 3339 time in UTC as the publishers write it ("2026-11-25T19:30:49.545229729Z") without
// time.Parse, and anything else through it.
func parseTime(b []byte) (int64, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' ||
		b[len(b)-1] != 'Z' {
		return parseTimeSlow(b)
	}
	num := func(s []byte) (int64, bool) {
		var n int64
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int64(c-'0')
		}
		return n, true
	}
	y, ok1 := num(b[0:4])
	mo, ok2 := num(b[5:7])
	d, ok3 := num(b[8:10])
	h, ok4 := num(b[11:13])
	mi, ok5 := num(b[14:16])
	s, ok6 := num(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 {
		return parseTimeSlow(b)
	}
	var frac int64
	if rest := b[19 : len(b)-1]; len(rest) > 0 {
		if rest[0] != '.' || len(rest) < 2 || len(rest) > 10 {
			return parseTimeSlow(b)
		}
		f, ok := num(rest[1:])
		if !ok {
			return parseTimeSlow(b)
		}
		for range 10 - len(rest) {
			f *= 10
		}
		frac = f
	}
	// Days from the civil date (H. Hinnant's algorithm).
	if mo <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	m := (mo + 9) % 12
	doy := (153*m+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := era*146097 + doe - 719468
	return ((days*24+h)*60+mi)*60*1e9 + s*1e9 + frac, true
}

func parseTimeSlow(b []byte) (int64, bool) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
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
}

type topicState struct {
	topic  string
	cursor uint64
	n      uint64 // 0: no number seen yet
}

// observe checks an update and returns its verdict, and for a gap the number of updates missing. n is checked only
// when checkN: the payload has one, from the current run.
func (t *tracker) observe(in *interner, topic []byte, cursor, n uint64, checkN bool) (verdict, uint64) {
	st := t.find(topic)
	if st == nil {
		t.add(topicState{topic: in.intern(topic), cursor: cursor, n: nIf(checkN, n)})
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
