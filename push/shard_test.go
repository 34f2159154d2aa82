package push

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A storm of connects, subscribes, unsubscribes and disconnects while updates are published as fast as the hub
// takes them: the changes are applied in batches, between two updates of a fan-out, and each subscriber still gets
// its snapshot and then every update of its topics, none twice, none missing, in order.
func TestSubscribeStormWhilePublishing(t *testing.T) {
	const (
		topics      = 20
		clients     = 400
		publishedN  = 20_000
		maxPatterns = 3
	)
	h := NewHub(HubOptions{LatencyBudget: time.Hour, QueueLimit: 1 << 20, QueueBytes: 1 << 30, Shards: 2})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go h.Run(ctx)

	topicOf := func(i int) string { return fmt.Sprintf("market.S%d", i%topics) }
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range publishedN {
			publishQuote(h, topicOf(i), uint64(i+1))
		}
	}()

	type client struct {
		sink   *clockSink
		s      *Subscriber
		topics []string // what it holds at the end
		closed bool
	}
	cs := make([]*client, clients)
	var wg sync.WaitGroup
	for i := range cs {
		c := &client{sink: &clockSink{}}
		cs[i] = c
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			s, ok := h.newSubscriber(c.sink, "test", "", nil)
			if !ok {
				t.Error("newSubscriber refused")
				return
			}
			c.s = s
			for range 1 + rng.IntN(maxPatterns) {
				if tp := topicOf(rng.IntN(topics)); !slices.Contains(c.topics, tp) {
					c.topics = append(c.topics, tp)
				}
			}
			h.Subscribe(s, Subscription{Patterns: c.topics}, nil)
			switch i % 4 {
			case 1: // drops its first topic: receives nothing more of it after the unsubscribe
				h.Unsubscribe(s, c.topics[:1], nil)
				c.topics = c.topics[1:]
			case 2:
				s.Close(reasonClientGone)
				c.closed = true
			}
		})
	}
	wg.Wait()
	<-published

	newest := map[string]uint64{}
	for i := range publishedN {
		newest[topicOf(i)] = uint64(i + 1)
	}
	// perTopic returns what c received of topic tp, in order.
	perTopic := func(c *client, tp string) []uint64 {
		got, _ := c.sink.delivered()
		var mine []uint64
		for _, cur := range got {
			if topicOf(int(cur-1)) == tp {
				mine = append(mine, cur)
			}
		}
		return mine
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range cs {
		if c.closed {
			continue
		}
		for _, tp := range c.topics {
			for {
				mine := perTopic(c, tp)
				if len(mine) > 0 && mine[len(mine)-1] == newest[tp] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("subscriber %d has %d updates of %s, the last %v; the newest published is %d",
						c.s.id, len(mine), tp, mine[max(0, len(mine)-1):], newest[tp])
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	for _, c := range cs {
		if c.closed {
			continue
		}
		for _, tp := range c.topics {
			mine := perTopic(c, tp)
			// From the snapshot on, every update of the topic, in order: cursors of one topic are topics apart.
			for k := 1; k < len(mine); k++ {
				if mine[k] != mine[k-1]+topics {
					t.Fatalf("subscriber %d, %s: %d followed by %d (want %d): a gap, a duplicate or out of order",
						c.s.id, tp, mine[k-1], mine[k], mine[k-1]+topics)
				}
			}
		}
		c.s.Close(reasonClientGone)
	}
	if st := h.Stats(); st.Subscribers != 0 || st.Patterns != 0 {
		t.Errorf("after every client left, the hub holds %d subscribers and %d patterns", st.Subscribers, st.Patterns)
	}
}

// A change that panics does so in the goroutine it was made for, which the server's recovery handles as before; the
// changes applied in the same hold after it are applied all the same, and nobody waits forever.
func TestIndexChangePanicsInItsOwnGoroutine(t *testing.T) {
	h := NewHub(HubOptions{Shards: 1})
	sh := h.shards[0]
	queued := func() (waiting int, applying bool) {
		sh.changesMu.Lock()
		defer sh.changesMu.Unlock()
		return len(sh.changes), sh.applying
	}
	// As a fan-out batch does, the test holds the index: the first change's goroutine takes it out of the list and
	// waits for the index, and the others queue up behind it, to be applied together in the next hold.
	sh.mu.RLock()
	const n, panicking = 5, 2
	applied := make([]bool, n)
	recovered := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() { recovered[i] = recover() }()
			sh.change(func() {
				if i == panicking {
					panic("change 2 broke")
				}
				applied[i] = true
			})
		})
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if waiting, applying := queued(); applying && waiting == i {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("change %d did not join the list", i)
			}
		}
	}
	sh.mu.RUnlock()
	wg.Wait()
	for i := range n {
		if i == panicking {
			if recovered[i] != "change 2 broke" || applied[i] {
				t.Errorf("the panicking change's own goroutine recovered %v, want its panic", recovered[i])
			}
			continue
		}
		if !applied[i] || recovered[i] != nil {
			t.Errorf("change %d: applied %v, its goroutine recovered %v; want applied, no panic", i, applied[i], recovered[i])
		}
	}
	if waiting, applying := queued(); applying || waiting != 0 {
		t.Errorf("after the storm: applying %v, %d changes waiting", applying, waiting)
	}
}

// A hold of the index is bounded in time as well as in count: changes that are slow to apply (new wildcard patterns,
// matched against every cached topic) must let a waiting fan-out in between them, not hold it up for all of them.
func TestSlowIndexChangesLetTheFanOutIn(t *testing.T) {
	h := NewHub(HubOptions{Shards: 1})
	sh := h.shards[0]
	waiting := func() int {
		sh.changesMu.Lock()
		defer sh.changesMu.Unlock()
		if !sh.applying {
			return -1
		}
		return len(sh.changes)
	}
	// Holding the index as a fan-out batch does, the test lets the first change take the list's only entry and wait,
	// then queues the slow ones behind it, to be applied in the holds after.
	sh.mu.RLock()
	const n = 20
	slow := 5 * maxHoldTime
	var applied atomic.Int32
	secondHold := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sh.change(func() {
				if i == 1 {
					close(secondHold)
				}
				if i > 0 {
					time.Sleep(slow)
				}
				applied.Add(1)
			})
		})
		for deadline := time.Now().Add(10 * time.Second); waiting() != i; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("change %d did not join the list", i)
			}
		}
	}
	sh.mu.RUnlock()
	<-secondHold
	sh.mu.RLock() // the fan-out, waiting for the index while the slow changes are applied
	seen := applied.Load()
	sh.mu.RUnlock()
	wg.Wait()
	if seen >= n {
		t.Errorf("a reader waiting for the index got it after all %d slow changes (%v each): holds are not bounded in time", n, slow)
	}
	if got := applied.Load(); got != n || waiting() != -1 {
		t.Errorf("%d of %d changes applied, %d still waiting", got, n, waiting())
	}
}
