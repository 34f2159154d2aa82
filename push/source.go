package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/internal/topic"
)

// Source feeds the hub from the stream: one ordered consumer per edge process, whatever the number of clients.
// It starts with the last update of every topic (the snapshot cache) and then follows the stream live. The ordered
// consumer recreates itself after NATS trouble at the sequence after the last one it delivered, so a NATS restart
// costs the edge no update.
type Source struct {
	js     jetstream.JetStream
	stream stream.Config
	hub    *Hub
	log    *slog.Logger

	caughtUp atomic.Bool   // the consumer has delivered everything the stream held when it started
	running  atomic.Bool   // a consumer is consuming
	dropped  atomic.Int64  // messages that could not be delivered (bad topic or payload)
	lastMsg  atomic.Int64  // unix nanoseconds of the last message consumed
	target   atomic.Uint64 // the stream's last cursor when the consumer started: caught up once past it
	started  atomic.Int64  // consumers started, the first included

	created    time.Time     // when the stream the hub holds updates of was created; Run's goroutine only
	checkEvery time.Duration // how often the consumer is checked for a stall or a recreated stream (tests shorten it)
}

// NewSource returns a source that feeds hub from the stream described by cfg over js, and serves the hub's resumes
// from further back than its memory.
func NewSource(js jetstream.JetStream, cfg stream.Config, hub *Hub, log *slog.Logger) *Source {
	s := &Source{js: js, stream: cfg, hub: hub, log: log, checkEvery: stallCheck}
	hub.history = s
	hub.metrics.gauge("livepush_nats_connected", "1 while the edge's NATS connection is up.", func() float64 {
		if js.Conn().IsConnected() {
			return 1
		}
		return 0
	})
	hub.metrics.gauge("livepush_ready", "1 while the edge follows the stream and has caught up.", func() float64 {
		if s.Ready() == nil {
			return 1
		}
		return 0
	})
	return s
}

var _ History = (*Source)(nil)

// Run ensures the stream exists and consumes it until ctx ends. While NATS is unreachable it keeps trying.
func (s *Source) Run(ctx context.Context) error {
	name := s.stream.StreamName()
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for {
		began := time.Now()
		err := s.consume(ctx, name)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Minute {
			backoff = minBackoff // it worked for a while: this is a new failure, not the same one again
		}
		s.log.Warn("stream consumer failed, retrying", "stream", name, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Source) consume(ctx context.Context, name string) error {
	if _, err := stream.Ensure(ctx, s.js, s.stream, s.log); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := s.info(cctx)
	if err != nil {
		return err
	}
	head := s.hub.Head()
	if s.recreated(info, head) && info.Created.Equal(s.created) {
		// Shorter than the hub but created at the same time: ask once more before believing it, in case a
		// replica that lags answered.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		if info, err = s.info(cctx); err != nil {
			return err
		}
	}
	if s.recreated(info, head) {
		s.log.Warn("the stream was recreated and its cursors start over: closing every subscriber, who come back for a fresh snapshot",
			"stream", name, "head", head, "stream_last", info.State.LastSeq)
		s.caughtUp.Store(false)
		s.hub.streamRecreated()
		head = 0
	}
	s.created = info.Created
	s.target.Store(info.State.LastSeq)
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: stream.Subjects,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	}
	if head > 0 {
		// Restarting after a failure: continue where the hub is.
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, head+1
	}
	cons, err := s.js.OrderedConsumer(cctx, name, cfg)
	if err != nil {
		return err
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		s.caughtUpAt(max(head, info.State.LastSeq))
	}
	cc, err := cons.Consume(s.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recovers by itself (it recreates its server-side consumer after the last sequence it
		// delivered): these are for the operator to see.
		if !errors.Is(err, jetstream.ErrOrderedConsumerReset) {
			s.log.Warn("stream consumer interrupted", "err", err)
		}
	}))
	if err != nil {
		return err
	}
	s.running.Store(true)
	s.started.Add(1)
	s.lastMsg.Store(time.Now().UnixNano()) // a stall is measured from here, not from the last consumer's messages
	s.log.Info("consuming stream", "stream", name, "from", cfg.DeliverPolicy.String(), "head", s.hub.Head())
	defer func() {
		s.running.Store(false)
		cc.Stop()
	}()
	// A watch for two things the ordered consumer cannot see by itself: a stall (the stream holds updates past the
	// hub's head and nothing has arrived for a while; seen once when a cluster lost the node hosting the consumer),
	// and the stream deleted and created again (the consumer would wait for the new stream to pass the old head).
	// Either way, start over.
	watch := time.NewTicker(s.checkEvery)
	defer watch.Stop()
	behind := false // the stream's last cursor was below the hub's head at the previous check
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.Closed():
			return errors.New("push: consumer closed")
		case <-watch.C:
			// The head first: updates stored after the stream's answer may reach the hub before this line, and
			// must not make a busy stream look shorter than the hub.
			head := s.hub.Head()
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := s.info(bctx)
			cancel()
			if err != nil {
				continue // NATS trouble: the ordered consumer rides it out, or cc closes
			}
			// Another creation time is proof; a stream shorter than the hub must be so twice running, in case an
			// answer came from a replica that lags.
			if s.recreated(info, head) && (!info.Created.Equal(s.created) || behind) {
				return errors.New("push: the stream was recreated")
			}
			behind = info.State.LastSeq < head
			idle := time.Since(time.Unix(0, s.lastMsg.Load())) >= stallCheck
			if idle && info.State.LastSeq > head {
				return fmt.Errorf("push: consumer stalled at %d while the stream is at %d", head, info.State.LastSeq)
			}
		}
	}
}

// recreated tells whether info describes another stream than the one the hub's updates, up to head, came from: one
// created since, or one that holds less than the hub has seen (a stream's sequence never goes back otherwise).
func (s *Source) recreated(info *jetstream.StreamInfo, head uint64) bool {
	if head == 0 {
		return false
	}
	return info.State.LastSeq < head || !s.created.IsZero() && !info.Created.Equal(s.created)
}

// stallCheck is how often the source checks its consumer, and how long without a message counts as a stall.
const stallCheck = 10 * time.Second

// handle turns a stream message into an update for the hub. It runs on the consumer's goroutine and must be quick.
func (s *Source) handle(m jetstream.Msg) {
	s.lastMsg.Store(time.Now().UnixNano())
	md, err := m.Metadata()
	if err != nil {
		s.drop("bad metadata", m.Subject(), err)
		return
	}
	if u := s.update(m, md); u != nil {
		s.hub.Publish(u)
	}
	if md.NumPending == 0 && !s.caughtUp.Load() {
		s.caughtUpAt(md.Sequence.Stream)
	}
}

// update makes an update of a stream message, or returns nil (counted, logged) if it cannot be delivered.
func (s *Source) update(m jetstream.Msg, md *jetstream.MsgMetadata) *Update {
	if err := topic.ValidateTopic(m.Subject()); err != nil {
		s.drop("topic not deliverable", m.Subject(), err)
		return nil
	}
	u, err := NewUpdate(m.Subject(), md.Sequence.Stream, m.Data(), time.Now())
	if err != nil {
		s.drop("payload not deliverable", m.Subject(), err)
		return nil
	}
	return u
}

// caughtUpAt marks the edge current: every update after floor now reaches the hub in order.
func (s *Source) caughtUpAt(floor uint64) {
	s.caughtUp.Store(true)
	s.hub.beginHistory(floor)
}

// Bounds returns the cursors of the oldest and newest update in the stream.
func (s *Source) Bounds(ctx context.Context) (first, last uint64, err error) {
	info, err := s.info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

func (s *Source) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	str, err := s.js.Stream(ctx, s.stream.StreamName())
	if err != nil {
		return nil, err
	}
	return str.CachedInfo(), nil
}

// Replay reads the stream after cursor after with a short-lived ordered consumer filtered on patterns, passing each
// deliverable update to each, until it has passed until and everything matching that the stream held.
func (s *Source) Replay(ctx context.Context, after, until uint64, patterns []string, each func(*Update) error) (uint64, error) {
	cons, err := s.js.OrderedConsumer(ctx, s.stream.StreamName(), jetstream.OrderedConsumerConfig{
		FilterSubjects: replayFilters(patterns),
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	})
	if err != nil {
		return after, err
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return max(after, until), nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return after, err
	}
	defer it.Stop()
	reached := after
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return reached, err
		}
		md, err := m.Metadata()
		if err != nil {
			return reached, err
		}
		if u := s.update(m, md); u != nil {
			if err := each(u); err != nil {
				return reached, err
			}
		}
		reached = md.Sequence.Stream
		if md.NumPending == 0 || reached >= until {
			return max(reached, until), nil
		}
	}
}

func (s *Source) drop(what, subject string, err error) {
	n := s.dropped.Add(1)
	s.hub.metrics.dropped.Inc()
	if n <= 10 || n%1000 == 0 { // a misbehaving producer must not flood the log
		s.log.Warn("dropping stream message: "+what, "subject", subject, "err", err, "dropped", n)
	}
}

// CatchingUpTo is the cursor the edge must reach to have caught up with the stream, as the stream stood when the
// consumer started; 0 before the stream was reached.
func (s *Source) CatchingUpTo() uint64 { return s.target.Load() }

// Ready reports whether the edge can serve current data: NATS connected, the consumer running and caught up.
// The error says what is missing.
func (s *Source) Ready() error {
	switch {
	case !s.js.Conn().IsConnected():
		return errors.New("NATS not connected")
	case !s.running.Load():
		return errors.New("stream not reachable")
	case !s.caughtUp.Load():
		return errors.New("catching up with the stream")
	}
	return nil
}
