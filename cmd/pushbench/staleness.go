package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepush/livepush/subscriber/topic"
)

// Staleness is what a user of a conflating service sees: not how long each delivered update took, but how out of
// date the value on the screen is. For a subscriber and a topic it follows, at an instant T: zero while it holds the
// newest update of the topic published so far; otherwise T minus the publish time of the first update it does not
// have, i.e. how long the value it shows has been superseded. A subscriber that skips updates (conflation, a rate
// limit, polling) but always soon holds the newest one stays fresh; one that gets every update late does not.
//
// The publisher knows what was published and when; the workers know what each subscriber holds. The coordinator
// sends every worker the publications (topic, n and ts of each) every stalenessEvery, and the worker then samples
// the subscribers it holds, up to stalenessPairs subscriber-topic pairs per sample, in turn, into a histogram. Only
// pushbench's own publisher's updates count (they carry n); without -publish-rate there is no staleness.

const (
	stalenessEvery = 100 * time.Millisecond
	stalenessPairs = 50_000
)

// published is a batch of publications, as the coordinator sends it to the workers: "pubs" and this, as JSON.
type published struct {
	Topic []int32  `json:"topic"` // the publisher's subject index
	N     []uint64 `json:"n"`
	TS    []int64  `json:"ts"` // Unix ns, the payload's ts
}

func (p *published) add(topic int, n uint64, ts int64) {
	p.Topic = append(p.Topic, int32(topic))
	p.N = append(p.N, n)
	p.TS = append(p.TS, ts)
}

// view is what one connection holds: for each topic it follows that the publisher publishes, the n of the newest
// update it has (0: none yet). Its reader stores, the sampler loads.
type view struct {
	subjects map[string]int32 // the publisher's, shared
	topics   []int32          // the subjects it follows
	held     []atomic.Uint64
}

// slot returns where the view keeps topic, or nil if it is none of the publisher's subjects the connection follows.
func (v *view) slot(topic string) *atomic.Uint64 {
	if v == nil {
		return nil
	}
	if t, ok := v.subjects[topic]; ok {
		for i, k := range v.topics {
			if k == t {
				return &v.held[i]
			}
		}
	}
	return nil
}

// hold notes that the connection holds update n of a topic (slot), if it is newer than what it held.
func hold(slot *atomic.Uint64, n uint64) {
	if slot != nil && n > slot.Load() {
		slot.Store(n)
	}
}

// staleness is a worker's side: the views of its connections and the publication times.
type staleness struct {
	once     sync.Once
	subjects map[string]int32 // the publisher's subjects, by name

	mu    sync.Mutex
	views []*view

	// The sampler's own: only the goroutine that reads the coordinator's commands touches them.
	times [][]int64 // per subject: the ts of n = 1, 2, … (0: not published, as far as it knows)
	next  int       // the view the next sample starts with
	batch Hist
}

func (s *staleness) subjectIndex(cfg *Config) map[string]int32 {
	s.once.Do(func() {
		s.subjects = make(map[string]int32, cfg.Symbols)
		for i := range cfg.Symbols {
			s.subjects["market."+symbolName(i, cfg.Symbols)] = int32(i)
		}
	})
	return s.subjects
}

// newView registers the view of a connection that follows patterns.
func (s *staleness) newView(cfg *Config, patterns []string) *view {
	v := &view{subjects: s.subjectIndex(cfg)}
	for name, i := range v.subjects {
		for _, p := range patterns {
			if topic.Match(p, name) {
				v.topics = append(v.topics, i)
				break
			}
		}
	}
	v.held = make([]atomic.Uint64, len(v.topics))
	s.mu.Lock()
	s.views = append(s.views, v)
	s.mu.Unlock()
	return v
}

// sample takes the publications of a batch (JSON) in, then samples the views at now into st.
func (s *staleness) sample(cfg *Config, batch []byte, now time.Time, st *liveStats) error {
	var p published
	if err := json.Unmarshal(batch, &p); err != nil {
		return err
	}
	if len(p.N) != len(p.Topic) || len(p.TS) != len(p.Topic) {
		return errors.New("a batch of publications with lists of different lengths")
	}
	if s.times == nil {
		s.times = make([][]int64, cfg.Symbols)
	}
	for i, t := range p.Topic {
		if t < 0 || int(t) >= len(s.times) || p.N[i] == 0 {
			continue
		}
		ts := &s.times[t]
		for uint64(len(*ts)) < p.N[i] {
			*ts = append(*ts, 0)
		}
		(*ts)[p.N[i]-1] = p.TS[i]
	}
	s.mu.Lock()
	views := s.views
	s.mu.Unlock()
	s.batch = Hist{}
	s.measure(views, now.UnixNano(), stalenessPairs)
	st.addStaleness(&s.batch)
	return nil
}

// measure records the staleness of up to budget subscriber-topic pairs at now (Unix ns) into s.batch, starting
// where the last sample stopped.
func (s *staleness) measure(views []*view, now int64, budget int) {
	for visited := 0; visited < len(views) && budget > 0; visited++ {
		s.next %= len(views)
		v := views[s.next]
		s.next++
		for i, t := range v.topics {
			if int(t) >= len(s.times) || len(s.times[t]) == 0 {
				continue // nothing published on it yet: nothing to be late with
			}
			budget--
			times := s.times[t]
			held := v.held[i].Load()
			if held >= uint64(len(times)) || times[held] == 0 {
				s.batch.Record(0) // it holds the newest (or one the coordinator has not reported yet)
				continue
			}
			s.batch.Record(uint64(max(0, now-times[held]))) // times[held] is the ts of n = held+1
		}
	}
}

// feedStaleness sends the workers the publications every stalenessEvery until done is closed.
func feedStaleness(done <-chan struct{}, pub *publisher, hs []*workerHandle) {
	t := time.NewTicker(stalenessEvery)
	defer t.Stop()
	var line bytes.Buffer
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		batch := pub.published()
		line.Reset()
		line.WriteString("pubs ")
		json.NewEncoder(&line).Encode(batch) // numbers: cannot fail
		for _, h := range hs {
			h.send(string(bytes.TrimSuffix(line.Bytes(), []byte("\n"))))
		}
	}
}
