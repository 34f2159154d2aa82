package push

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The hub's timing rules (rate limits, stall detection, slow-consumer cut-off, heartbeats, topic expiry) checked on
// a virtual clock: inside a synctest bubble time passes only when every goroutine waits, so the tests assert exact
// intervals however loaded the machine is. The transports' own tests check the same rules end to end over real
// sockets, with bounds that hold on a busy machine.

// clockSink is a client connection in memory: it records what is written and when, and can be made to block
// in its writes like a client that stops reading.
type clockSink struct {
	mu       sync.Mutex
	writes   []clockWrite
	beats    int
	closedBy *closeReason
	aborted  bool
	hold     chan struct{} // while not nil, writes wait on it, as on a full socket
	told     uint64        // what conflated notices said was skipped
}

type clockWrite struct {
	at      time.Time
	cursors []uint64
}

func (r *clockSink) write(batch []*Update) error {
	r.mu.Lock()
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	w := clockWrite{at: time.Now()}
	var told uint64
	for _, u := range batch {
		var m wire.Message
		if u.Topic != "" {
			w.cursors = append(w.cursors, u.Cursor)
		} else if json.Unmarshal(u.JSON(), &m) == nil && m.Type == wire.TypeConflated {
			told += m.Skipped
		}
	}
	r.mu.Lock()
	r.told += told
	r.writes = append(r.writes, w)
	r.mu.Unlock()
	return nil
}

func (r *clockSink) heartbeat() error {
	r.mu.Lock()
	r.beats++
	r.mu.Unlock()
	return nil
}

func (r *clockSink) close(reason closeReason) {
	r.mu.Lock()
	r.closedBy = &reason
	r.mu.Unlock()
}

func (r *clockSink) abort() {
	r.mu.Lock()
	r.aborted = true
	if r.hold != nil {
		close(r.hold) // a cut connection fails the write in progress
		r.hold = nil
	}
	r.mu.Unlock()
}

// delivered returns every cursor written, in order, with when it was written.
func (r *clockSink) delivered() (cursors []uint64, at []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.writes {
		for _, c := range w.cursors {
			cursors = append(cursors, c)
			at = append(at, w.at)
		}
	}
	return cursors, at
}

// publishQuote publishes a quote of topic at cursor on h.
func publishQuote(h *Hub, topic string, cursor uint64) {
	u, err := NewUpdate(topic, cursor, fmt.Appendf(nil, `{"kind":"quote","n":%d}`, cursor), time.Now())
	if err != nil {
		panic(err)
	}
	h.Publish(u)
}

// A rate-limited topic gets at most its rate, each update at least the interval after the last, and always the
// newest value in the end.
func TestClockMaxRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(HubOptions{})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		sink := &clockSink{}
		s, _ := h.newSubscriber(sink, "test", "", nil)
		h.Subscribe(s, Subscription{Patterns: []string{"market.FAST"}, MaxRate: 2}, nil)
		var last uint64
		for i := range 60 { // 20 a second for 3 s
			last = uint64(i + 1)
			publishQuote(h, "market.FAST", last)
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // the last pending update is released
		synctest.Wait()
		got, at := sink.delivered()
		if len(got) > 7 || len(got) < 6 {
			t.Errorf("%d updates in 3 s at maxRate 2, want 6 or 7: %v", len(got), got)
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < 500*time.Millisecond {
				t.Errorf("updates %d and %d only %v apart", got[i-1], got[i], gap)
			}
		}
		if got[len(got)-1] != last {
			t.Errorf("the last update delivered is %d, want the newest, %d", got[len(got)-1], last)
		}
		s.Close(reasonClientGone)
	})
}

// A burst larger than the queue limit does not conflate a subscriber whose writes keep completing: only one whose
// write stalls is slow. Past sixteen times the limit, memory wins and the queue is conflated anyway.
func TestClockBurstConflatesOnlyStalledWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(HubOptions{QueueLimit: 16})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		steady := &pacedSink{delay: 20 * time.Millisecond} // each write completes well within stallAfter
		stalled := &pacedSink{delay: time.Second}
		sSteady, _ := h.newSubscriber(steady, "test", "", nil)
		sStalled, _ := h.newSubscriber(stalled, "test", "", nil)
		for _, s := range []*Subscriber{sSteady, sStalled} {
			h.Subscribe(s, Subscription{Patterns: []string{"market.*"}}, nil)
		}
		publish := func(from, count int) {
			for i := from; i < from+count; i++ {
				publishQuote(h, fmt.Sprintf("market.S%d", i%4), uint64(i))
			}
		}
		publish(1, 1)
		time.Sleep(150 * time.Millisecond) // both writers are in a write now: 20 ms and 1 s long
		publish(2, 200)                    // 12 times the limit, within 16
		synctest.Wait()                    // fanned out
		if c := sSteady.conflated; c != 0 {
			t.Errorf("a subscriber whose writes complete was conflated by a burst (%d updates)", c)
		}
		if sStalled.conflated == 0 {
			t.Errorf("a subscriber stuck in a write was not conflated")
		}
		publish(202, 400) // past 16 times the limit: conflated whatever the writer does
		synctest.Wait()
		sSteady.mu.Lock()
		if len(sSteady.queue) > 16*16 {
			t.Errorf("queue of %d updates, past the hard bound of %d", len(sSteady.queue), 16*16)
		}
		sSteady.mu.Unlock()
		sSteady.Close(reasonClientGone)
		sStalled.Close(reasonClientGone)
		time.Sleep(2 * time.Second) // the writers finish their writes and leave
	})
}

// A subscriber whose write never completes is conflated, disconnected as slow once it has been behind for
// SlowTimeout, and cut off CloseGrace after that if its write still has not completed.
func TestClockStuckSubscriberCutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(HubOptions{QueueLimit: 4, SlowTimeout: 2 * time.Second, CloseGrace: 3 * time.Second})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		sink := &clockSink{hold: make(chan struct{})}
		s, _ := h.newSubscriber(sink, "test", "", nil)
		h.Subscribe(s, Subscription{Patterns: []string{"market.*"}}, nil)
		began := time.Now()
		for i := range 40 {
			publishQuote(h, fmt.Sprintf("market.S%d", i%2), uint64(i+1))
			time.Sleep(200 * time.Millisecond)
			if s.Closed() {
				break
			}
		}
		closedAt := time.Since(began)
		if !s.Closed() || s.conflated == 0 {
			t.Fatalf("after %v: closed %v, conflated %d", closedAt, s.Closed(), s.conflated)
		}
		// Behind from the first conflation (the queue past 4 while the first write hangs), closed on the publish
		// or sweep after SlowTimeout.
		if closedAt < 2*time.Second || closedAt > 4*time.Second {
			t.Errorf("closed as slow after %v, want SlowTimeout (2 s) after it fell behind", closedAt)
		}
		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if !sink.aborted || sink.closedBy == nil || sink.closedBy.err != reasonSlow.err {
			t.Errorf("after the close grace: aborted %v, closed with %+v; want cut off and closed as slow", sink.aborted, sink.closedBy)
		}
	})
}

// A connection silent for the heartbeat interval gets a heartbeat, and one that is written to does not.
func TestClockHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(HubOptions{Heartbeat: time.Second})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		quiet, busy := &clockSink{}, &clockSink{}
		sq, _ := h.newSubscriber(quiet, "test", "", nil)
		sb, _ := h.newSubscriber(busy, "test", "", nil)
		h.Subscribe(sq, Subscription{Patterns: []string{"market.QUIET"}}, nil)
		h.Subscribe(sb, Subscription{Patterns: []string{"market.BUSY"}}, nil)
		for i := range 50 { // 5 s, the busy one written every 100 ms
			publishQuote(h, "market.BUSY", uint64(i+1))
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		quiet.mu.Lock()
		busy.mu.Lock()
		q, b := quiet.beats, busy.beats
		busy.mu.Unlock()
		quiet.mu.Unlock()
		// The sweep runs every half interval: a silent connection gets one every 1 to 1.5 s.
		if q < 3 || q > 5 || b != 0 {
			t.Errorf("over 5 s with a 1 s heartbeat: quiet connection %d heartbeats, busy one %d; want 3 to 5 and 0", q, b)
		}
		sq.Close(reasonClientGone)
		sb.Close(reasonClientGone)
		synctest.Wait()
	})
}

// A topic not updated for Retention leaves the cache (its snapshot and the catalog); the others stay.
func TestClockTopicsExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(HubOptions{Retention: time.Minute, Heartbeat: 10 * time.Second})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		publishQuote(h, "market.OLD", 1)
		for i := range 12 { // two minutes, market.NEW updated every 10 s
			publishQuote(h, "market.NEW", uint64(i+2))
			time.Sleep(10 * time.Second)
		}
		synctest.Wait()
		_, topics := h.Topics()
		if len(topics) != 1 || topics[0].Topic != "market.NEW" {
			t.Errorf("after 2 minutes with a 1 minute retention the catalog is %+v, want market.NEW alone", topics)
		}
		if _, snap := h.Snapshot([]string{"market.*"}); len(snap) != 1 || snap[0].Topic != "market.NEW" {
			t.Errorf("snapshot %v, want market.NEW alone", snap)
		}
		if got := h.Stats().Topics; got != 1 {
			t.Errorf("%d topics cached", got)
		}
	})
}

// A fan-out that has fallen further behind than the latency budget, with many updates waiting, skips to the newest
// value of each topic instead of offering every old one; a short backlog is offered whole however old (the
// subscriber's own queue then conflates what is past the budget). Either way the newest of each topic arrives, and
// the subscriber is told how many it was not sent.
func TestClockFanOutSkipsToTheNewestWhenBehind(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published int
		skipped   int // by the fan-out
	}{
		{"a short backlog", 100, 0},
		{"a long one", 5000, 4990},
		{"more than the log holds", fanOutLogSize + 100, fanOutLogSize + 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := NewHub(HubOptions{LatencyBudget: 100 * time.Millisecond, QueueLimit: 1 << 20})
				sink := &clockSink{}
				s, _ := h.newSubscriber(sink, "test", "", nil)
				h.Subscribe(s, Subscription{Patterns: []string{"market.*"}}, nil)
				// Two patterns that match the same updates, and a subscriber that joins halfway with a snapshot.
				overlapping, late := &clockSink{}, &clockSink{}
				o, _ := h.newSubscriber(overlapping, "test", "", nil)
				h.Subscribe(o, Subscription{Patterns: []string{"market.*", "market.S1"}}, nil)
				l, _ := h.newSubscriber(late, "test", "", nil)
				received := time.Now().Add(-time.Second) // received a second ago, and not fanned out since
				newest := map[string]uint64{}
				half := tc.published / 2
				for i := range tc.published {
					if i == half {
						h.Subscribe(l, Subscription{Patterns: []string{"market.*"}}, nil)
					}
					topic := fmt.Sprintf("market.S%d", i%10)
					u, _ := NewUpdate(topic, uint64(i+1), []byte(`{"kind":"quote"}`), received)
					h.Publish(u)
					newest[topic] = uint64(i + 1)
				}
				ctx, stop := context.WithCancel(context.Background())
				go h.Run(ctx)
				synctest.Wait()
				got, _ := sink.delivered()
				if len(got) < 10 || !slices.Equal(slices.Sorted(slices.Values(got[len(got)-10:])), slices.Sorted(maps.Values(newest))) {
					t.Errorf("%d updates published while the fan-out was a second behind: the last delivered are %v, want the newest of each topic",
						tc.published, got[max(0, len(got)-10):])
				}
				for _, sh := range h.shards {
					if skipped := testutil.ToFloat64(sh.skipped); int(skipped) != tc.skipped {
						t.Errorf("the fan-out skipped %v, want %d", skipped, tc.skipped)
					}
				}
				// Each client is told what was skipped for it, all of it that the log still held: what it received
				// and what it was told add up to what was published for it.
				overwritten := max(0, tc.published-fanOutLogSize)
				for _, c := range []struct {
					name string
					sink *clockSink
					want int
				}{
					{"market.*", sink, tc.published - overwritten},
					{"market.* and market.S1", overlapping, tc.published - overwritten},
					{"market.* from halfway, with a snapshot of 10", late, tc.published - half + 10},
				} {
					got, _ := c.sink.delivered()
					c.sink.mu.Lock()
					told := c.sink.told
					c.sink.mu.Unlock()
					if uint64(len(got))+told != uint64(c.want) {
						t.Errorf("%s: %d delivered and %d told skipped, want %d in all (%d published, %d overwritten in the log)",
							c.name, len(got), told, c.want, tc.published, overwritten)
					}
				}
				o.Close(reasonClientGone)
				l.Close(reasonClientGone)
				s.Close(reasonClientGone)
				stop()
				synctest.Wait()
			})
		})
	}
}

// A subscriber whose writes take longer than updates arrive gets the newest value of each topic: nothing in a write
// of agedBacklog updates or more has been superseded for longer than the latency budget when the write begins, and
// the last value of each topic arrives. A replay it asked for is delivered whole however slowly.
func TestClockLatencyBudgetConflates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget, write = 100 * time.Millisecond, 300 * time.Millisecond
		h := NewHub(HubOptions{LatencyBudget: budget, QueueLimit: 1 << 16})
		h.beginHistory(0)
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go h.Run(ctx)
		var mu sync.Mutex
		type published struct {
			cursor uint64
			at     time.Time
		}
		history := map[string][]published{}
		// newestBy returns the newest cursor of topic published at or before at.
		newestBy := func(topic string, at time.Time) uint64 {
			mu.Lock()
			defer mu.Unlock()
			var c uint64
			for _, p := range history[topic] {
				if !p.at.After(at) {
					c = p.cursor
				}
			}
			return c
		}
		sink := &agedSink{delay: write, check: func(u *Update, batch int, writeStart time.Time) {
			// A batch shorter than agedBacklog may hold a superseded update: a few updates past the budget are a
			// hiccup, delivered whole. A longer one must hold nothing superseded for longer than the budget.
			if newer := newestBy(u.Topic, writeStart.Add(-budget)); newer > u.Cursor && batch >= agedBacklog {
				t.Errorf("%s: wrote %d when %d had been waiting for more than the budget", u.Topic, u.Cursor, newer)
			}
		}}
		s, _ := h.newSubscriber(sink, "test", "", nil)
		h.Subscribe(s, Subscription{Patterns: []string{"market.*"}}, nil)
		newest := map[string]uint64{}
		for cursor := uint64(1); cursor <= 2000; cursor++ { // 10 s of 200 updates a second on 2 topics
			topic := fmt.Sprintf("market.S%d", cursor%2)
			mu.Lock()
			history[topic] = append(history[topic], published{cursor, time.Now()})
			mu.Unlock()
			publishQuote(h, topic, cursor)
			newest[topic] = cursor
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(2 * write)
		synctest.Wait()
		sink.mu.Lock()
		written, last, skipped, notices := sink.count, sink.last, sink.skipped, sink.notices
		sink.mu.Unlock()
		if s.conflated == 0 || written >= 2000 {
			t.Errorf("%d updates written, %d conflated: want the writes to skip to the newest", written, s.conflated)
		}
		// The client is told: what it was sent and what the notices say was skipped account for every update.
		if uint64(written)+skipped != 2000 || notices == 0 {
			t.Errorf("%d updates written and %d reported skipped in %d notices, want 2000 in all", written, skipped, notices)
		}
		for topic, c := range newest {
			if last[topic] != c {
				t.Errorf("%s: last written %d, want its newest %d", topic, last[topic], c)
			}
		}

		// A resume from memory into the same slow client: every update it asked for arrives.
		rs := &agedSink{delay: write}
		r, _ := h.newSubscriber(rs, "test", "", nil)
		if _, err := h.Resume(ctx, r, Subscription{Patterns: []string{"market.*"}}, 1900, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		rs.mu.Lock()
		if rs.count != 100 {
			t.Errorf("a resume after cursor 1900 of 2000 wrote %d updates, want all 100", rs.count)
		}
		rs.mu.Unlock()
		s.Close(reasonClientGone)
		r.Close(reasonClientGone)
		time.Sleep(time.Second)
	})
}

// agedSink takes delay for each write, counts what it writes and the last one of each topic, and calls check
// (if set) with each update and when its write began.
type agedSink struct {
	countingSink
	delay time.Duration
	check func(u *Update, batch int, writeStart time.Time)

	mu      sync.Mutex
	last    map[string]uint64
	count   int
	skipped uint64 // what the edge's conflated notices said it skipped
	notices int
}

func (a *agedSink) write(batch []*Update) error {
	start := time.Now()
	updates := 0
	for _, u := range batch {
		if u.Topic != "" {
			updates++
		}
	}
	for i, u := range batch {
		if a.check != nil && u.Topic != "" {
			a.check(u, updates, start)
		}
		var m wire.Message
		if u.Topic == "" && json.Unmarshal(u.JSON(), &m) == nil && m.Type == wire.TypeConflated {
			if i != 0 || m.Skipped == 0 {
				return fmt.Errorf("conflated notice %s at %d of a batch, want one skipping something, first", u.JSON(), i)
			}
			a.mu.Lock()
			a.skipped += m.Skipped
			a.notices++
			a.mu.Unlock()
		}
	}
	time.Sleep(a.delay)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]uint64{}
	}
	for _, u := range batch {
		if u.Topic != "" {
			a.last[u.Topic] = u.Cursor
			a.count++
		}
	}
	return nil
}

// A long poll waiting when the edge falls behind: the fan-out skips to the newest value of each topic, which a
// stream is told with a conflated notice. A poll answer has no notice to carry, so the poll answers with the
// updates after its cursor, every one of them, read again from memory: a client polling on misses nothing. That
// holds too when what the poll's topic skipped was overwritten in the fan-out's log before it could be counted
// (the poll follows market.A, whose 100 updates came before a whole log of market.B).
func TestClockLongPollIsNeverConflated(t *testing.T) {
	for _, tc := range []struct {
		name    string
		topic   func(i int) string
		count   int
		pattern string
		want    int // updates in the answer: the first ones, in order
	}{
		{"a backlog", func(i int) string { return fmt.Sprintf("market.S%d", i%10) }, 5000, "market.*", defaultPollLimit},
		{"more than the log holds", func(i int) string {
			if i < 100 {
				return "market.A"
			}
			return "market.B"
		}, fanOutLogSize + 200, "market.A", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := NewHub(HubOptions{LatencyBudget: 100 * time.Millisecond, ReplayBuffer: 2 * fanOutLogSize})
				srv := NewServer(Config{Log: testLogger(t)}, h, nil)
				h.beginHistory(0) // as a source that has caught up with an empty stream
				type answer struct {
					cursor  uint64
					updates []*Update
					err     error
				}
				answered := make(chan answer, 1)
				go func() {
					cursor, updates, err := srv.poll(t.Context(), time.Now().Add(25*time.Second), "",
						Subscription{Patterns: []string{tc.pattern}}, 0, answerLimit{defaultPollLimit, 1 << 20})
					answered <- answer{cursor, updates, err}
				}()
				synctest.Wait() // the poll waits for an update after 0, on an edge that has none yet

				// A backlog the fan-out finds a second old: it offers the newest of each topic instead of every update.
				received := time.Now().Add(-time.Second)
				for i := range tc.count {
					u, _ := NewUpdate(tc.topic(i), uint64(i+1), []byte(`{"kind":"quote"}`), received)
					h.Publish(u)
				}
				ctx, stop := context.WithCancel(context.Background())
				go h.Run(ctx)
				synctest.Wait()
				var skipped float64
				for _, sh := range h.shards {
					skipped += testutil.ToFloat64(sh.skipped)
				}
				if skipped == 0 {
					t.Fatal("the fan-out skipped nothing: the test did not make the edge fall behind")
				}

				a := <-answered
				if a.err != nil {
					t.Fatal(a.err)
				}
				var cursors []uint64
				for _, u := range a.updates {
					cursors = append(cursors, u.Cursor)
				}
				want := make([]uint64, 0, tc.want)
				for c := uint64(1); len(want) < tc.want; c++ {
					want = append(want, c)
				}
				if !slices.Equal(cursors, want) || a.cursor < want[len(want)-1] {
					t.Errorf("the fan-out skipped %v updates while a poll after 0 waited: it answered %d updates up to cursor %d (%v…), want 1 to %d, each once",
						skipped, len(cursors), a.cursor, cursors[:min(len(cursors), 5)], want[len(want)-1])
				}
				stop()
				synctest.Wait()
			})
		})
	}
}
