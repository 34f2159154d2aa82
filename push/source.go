package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/subscriber/topic"
	"github.com/prometheus/client_golang/prometheus"
)

// Source feeds the hub from the stream: one ordered consumer per edge process, whatever the number of clients.
// It starts with the last update of every topic (the snapshot cache) and then follows the stream live. The ordered
// consumer recreates itself after NATS trouble at the sequence after the last one it delivered, so a NATS restart
// costs the edge no update.
type Source struct {
	js       jetstream.JetStream
	stream   stream.Config
	hub      *Hub // the hub Run feeds; Run's goroutines only
	log      *slog.Logger
	contract Contract
	history  *stream.History
	drops    dropLog
	dropped  *prometheus.CounterVec // stream messages rejected, by reason
	metrics  []prometheus.Collector // the source's, for the edge's /metrics

	caughtUp atomic.Bool   // the consumer has delivered everything the stream held when it started
	running  atomic.Bool   // a consumer is consuming
	troubled atomic.Bool   // the consumer may be cut off (trouble reported, a reconnect, silent behind the stream)
	lastMsg  atomic.Int64  // unix nanoseconds of the last message consumed
	consumed atomic.Uint64 // the stream cursor of the last message consumed, an update or refused
	pending  atomic.Uint64 // messages the stream holds that the consumer has not delivered yet, as of the last one
	lagNanos atomic.Int64  // how long the last message waited in the stream before the edge took it
	target   atomic.Uint64 // the stream's last cursor when the consumer started: caught up once past it
	started  atomic.Int64  // consumers started, the first included

	created    time.Time     // when the stream the hub holds updates of was created; Run's goroutine only
	checkEvery time.Duration // how often the consumer is checked for a stall or a recreated stream (tests shorten it)
	stallAfter time.Duration // how long with no message while the stream holds more is a stall (tests shorten it)

	// ingestMu is held while a message goes to the hub, so that a consumer given up on (whose Stop may take a
	// while) cannot hand it one more once the next has started. consumerNo numbers the consumers; under ingestMu.
	ingestMu   sync.Mutex
	consumerNo uint64

	boundsMu sync.Mutex // one stream info request at a time; the others take its answer
	bounds   streamBounds
}

// streamBounds is the stream's first and last sequence as last asked.
type streamBounds struct {
	first, last uint64
	at          time.Time // when they were asked for
}

// boundsFresh is how long an answer about the stream's bounds serves other resumes: a burst of resumes costs the
// JetStream API one request per period, not one each.
const boundsFresh = 250 * time.Millisecond

// SourceOption configures a Source.
type SourceOption func(*Source)

// WithContract checks stream messages against c instead of the default contract. Validate c first.
func WithContract(c Contract) SourceOption {
	return func(s *Source) { s.contract = c.withDefaults() }
}

// NewSource returns a source that reads the stream described by cfg over js: Run feeds a hub from it, and it
// serves that hub's resumes from further back than its memory (give it to the hub as HubOptions.History).
func NewSource(js jetstream.JetStream, cfg stream.Config, log *slog.Logger, opts ...SourceOption) *Source {
	s := &Source{js: js, stream: cfg, log: log, checkEvery: consumerCheck, stallAfter: consumerStall, contract: defaultContract,
		history: stream.NewHistory(js.Conn(), cfg.StreamName())}
	for _, o := range opts {
		o(s)
	}
	s.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livepush_stream_dropped_total",
		Help: "Stream messages rejected by the producer contract, delivered to nobody, by reason."}, []string{"reason"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	s.metrics = []prometheus.Collector{s.dropped,
		gauge("livepush_nats_connected", "1 while the edge's NATS connection is up.", func() float64 {
			if js.Conn().IsConnected() {
				return 1
			}
			return 0
		}),
		gauge("livepush_stream_pending", "Messages in the stream the edge has not taken yet: how far its ingest is behind.",
			func() float64 { return float64(s.pending.Load()) }),
		gauge("livepush_ingest_lag_seconds", "How long the last message the edge took had been in the stream (clocks of NATS and the edge compared).",
			func() float64 { return time.Duration(s.lagNanos.Load()).Seconds() }),
		gauge("livepush_ready", "1 while the edge follows the stream and has caught up.", func() float64 {
			if s.Ready() == nil {
				return 1
			}
			return 0
		}),
	}
	return s
}

var _ History = (*Source)(nil)

// Run ensures the stream exists and consumes it into hub until ctx ends. While NATS is unreachable it keeps trying.
func (s *Source) Run(ctx context.Context, hub *Hub) error {
	s.hub = hub
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
	// The stream is created or its configuration updated at the first start, and again only if it has gone. A
	// restart after trouble must not wait for that: an update needs JetStream's metadata leader, and on a cluster
	// that has just lost it, the request waited out its 5 s while the stream itself was answering.
	ensure := s.created.IsZero()
	if !ensure {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.info(ictx)
		cancel()
		ensure = errors.Is(err, jetstream.ErrStreamNotFound)
	}
	if ensure {
		if _, err := stream.Ensure(ctx, s.js, s.stream, s.log); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := s.info(cctx)
	if err != nil {
		return err
	}
	// Where the consumer is: past the hub's head if the last messages were refused, which are not taken (and
	// refused) again.
	head := max(s.hub.Head(), s.consumed.Load())
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
		s.consumed.Store(0)
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
	s.ingestMu.Lock()
	s.consumerNo++
	no := s.consumerNo
	s.ingestMu.Unlock()
	cc, err := cons.Consume(func(m jetstream.Msg) { s.handle(no, m) }, jetstream.PullMaxMessages(ingestBatch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recovers by itself (it recreates its server-side consumer after the last sequence it
		// delivered): these are for the operator to see.
		s.troubled.Store(true)
		if !errors.Is(err, jetstream.ErrOrderedConsumerReset) {
			s.log.Warn("stream consumer interrupted", "err", err)
		}
	}))
	if err != nil {
		return err
	}
	s.running.Store(true)
	s.troubled.Store(false)
	s.started.Add(1)
	s.lastMsg.Store(time.Now().UnixNano()) // a stall is measured from here, not from the last consumer's messages
	s.log.Info("consuming stream", "stream", name, "from", cfg.DeliverPolicy.String(), "head", s.hub.Head())
	defer func() {
		s.running.Store(false)
		s.ingestMu.Lock()
		s.consumerNo++ // what this consumer still delivers is dropped
		s.ingestMu.Unlock()
		// Not waited for: nats.go holds the consumer's lock while it retries recreating itself, and when the NATS
		// node it lived on died that kept the edge from starting the next consumer for 11 s.
		go cc.Stop()
	}()
	// A watch for two things the ordered consumer cannot see by itself: a stall (the stream holds updates past the
	// hub's head and nothing has arrived for a while; seen once when a cluster lost the node hosting the consumer),
	// and the stream deleted and created again (the consumer would wait for the new stream to pass the old head).
	// Either way, start over.
	watch := time.NewTicker(s.checkEvery)
	defer watch.Stop()
	closed := cc.Closed() // once: each call starts a goroutine that lives until the consumer stops
	// A reconnect means the connection's NATS node was lost, say. The ordered consumer then recreates itself without
	// calling the error handler and may deliver nothing for seconds: not ready until it delivers again, or until a
	// check finds nothing missing.
	reconnected := s.js.Conn().StatusChanged(nats.CONNECTED)
	defer s.js.Conn().RemoveStatusListener(reconnected)
	behind := false // the stream's last cursor was below the hub's head at the previous check
	missing := 0    // checks running that found no stream
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return errors.New("push: consumer closed")
		case <-reconnected:
			s.troubled.Store(true)
		case <-watch.C:
			// The head first: updates stored after the stream's answer may reach the hub before this line, and
			// must not make a busy stream look shorter than the hub.
			head := max(s.hub.Head(), s.consumed.Load())
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := s.info(bctx)
			cancel()
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				// Deleted: the ordered consumer would wait for it for good, and starting over creates it again. Said
				// twice running, in case a server still recovering its streams said it once.
				if missing++; missing >= 2 {
					return err
				}
				continue
			}
			missing = 0
			if err != nil {
				continue // NATS trouble: the ordered consumer rides it out, or cc closes
			}
			// Another creation time is proof; a stream shorter than the hub must be so twice running, in case an
			// answer came from a replica that lags.
			if s.recreated(info, head) && (!info.Created.Equal(s.created) || behind) {
				return errors.New("push: the stream was recreated")
			}
			behind = info.State.LastSeq < head
			silent := time.Since(time.Unix(0, s.lastMsg.Load()))
			switch {
			case info.State.LastSeq <= head:
				s.troubled.Store(false) // current: whatever the trouble was, nothing is missing
			case silent >= s.checkEvery:
				// Silent since the last check while the stream holds more: its consumer may have lived on a lost
				// node while the connection is fine, and nats.go says nothing then. Not current, so not ready,
				// until it delivers again or the stall below starts it over.
				s.troubled.Store(true)
			}
			if silent >= s.stallAfter && info.State.LastSeq > head {
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

// ingestBatch is how many messages the consumer asks for at a time. nats.go's 500 is a round trip per 250
// messages, which a busy machine cannot make 80 times a second: at 20,000 updates/s the edge fell seconds behind
// the stream with CPU to spare.
const ingestBatch = 5000

// consumerCheck and consumerStall: how often the source checks its consumer against the stream, and how long
// without a message while the stream holds more counts as a stall, for what the ordered consumer does not notice
// itself (one edge of three recovered only this way, 23 s after its node was killed, when a stall took 10 s). The
// consumer's own heartbeats stay nats.go's (5 s, two missed): shorter ones misfire on a machine starved of CPU, and
// each misfire recreates the consumer.
const (
	consumerCheck = 2 * time.Second
	consumerStall = 5 * time.Second
)

// handle turns a stream message into an update for the hub. It runs on the consumer's goroutine and must be quick.
func (s *Source) handle(consumer uint64, m jetstream.Msg) {
	s.ingestMu.Lock()
	defer s.ingestMu.Unlock()
	if consumer != s.consumerNo {
		return // from a consumer given up on: the one after it delivers this again, in order
	}
	s.lastMsg.Store(time.Now().UnixNano())
	if s.troubled.Load() {
		s.troubled.Store(false)
	}
	md, err := m.Metadata()
	if err != nil {
		s.drop("bad_metadata", m.Subject(), 0, err)
		return
	}
	s.pending.Store(md.NumPending)
	s.lagNanos.Store(int64(time.Since(md.Timestamp)))
	defer s.consumed.Store(md.Sequence.Stream) // after the hub has it, so that consumed is never ahead of the hub
	if u := s.update(m.Subject(), md.Sequence.Stream, m.Data()); u != nil {
		if err := s.hub.Publish(u); err != nil {
			s.drop(RejectTooManyTopics, u.Topic, u.Cursor, err)
		}
	}
	if md.NumPending == 0 && !s.caughtUp.Load() {
		s.caughtUpAt(md.Sequence.Stream)
	}
}

// update makes an update of a stream message, or returns nil (counted, logged) if it breaks the producer contract.
func (s *Source) update(subject string, seq uint64, data []byte) *Update {
	if err := topic.ValidateTopic(subject); err != nil {
		s.drop(RejectBadSubject, subject, seq, err)
		return nil
	}
	u, err := s.contract.Update(subject, seq, data, time.Now())
	if err != nil {
		var rejected *RejectedError
		errors.As(err, &rejected)
		s.drop(rejected.Reason, subject, seq, err)
		return nil
	}
	return u
}

// caughtUpAt marks the edge current: every update after floor now reaches the hub in order.
func (s *Source) caughtUpAt(floor uint64) {
	s.caughtUp.Store(true)
	s.hub.beginHistory(floor)
}

// Bounds returns the cursors of the oldest and newest update in the stream, as the stream stood at most
// boundsFresh ago, unless that answer's newest is below need. An answer asked for while this call waited for
// boundsMu serves it whatever its newest: cursors that look ahead (a stranger's, say) share one request.
func (s *Source) Bounds(ctx context.Context, need uint64) (first, last uint64, err error) {
	asked := time.Now()
	s.boundsMu.Lock()
	defer s.boundsMu.Unlock()
	if b := s.bounds; b.at.After(asked) || time.Since(b.at) < boundsFresh && b.last >= need {
		return b.first, b.last, nil
	}
	at := time.Now()
	info, err := s.info(ctx)
	if err != nil {
		return 0, 0, err
	}
	s.bounds = streamBounds{info.State.FirstSeq, info.State.LastSeq, at}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

func (s *Source) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	str, err := s.js.Stream(ctx, s.stream.StreamName())
	if err != nil {
		return nil, err
	}
	return str.CachedInfo(), nil
}

// Replay reads the stream after cursor after, filtered on patterns, passing each deliverable update to each,
// until it has passed until and everything matching that the stream held. It reads with direct gets: no consumer
// is created, so nothing is left on the server however the read ends.
func (s *Source) Replay(ctx context.Context, after, until uint64, patterns []string, each func(*Update) error) (uint64, error) {
	return s.history.Read(ctx, replayFilters(patterns), after, until, func(m stream.Msg) error {
		if u := s.update(m.Subject, m.Seq, m.Data); u != nil {
			return each(u)
		}
		return nil
	})
}

// drop counts a rejected stream message by reason and logs it, at most once a second per reason: a misbehaving
// producer must not flood the log.
func (s *Source) drop(reason, subject string, cursor uint64, err error) {
	s.dropped.WithLabelValues(reason).Inc()
	if suppressed, ok := s.drops.allow(reason); ok {
		s.log.Warn("stream message rejected", "reason", reason, "subject", truncate(subject, 160), "cursor", cursor,
			"err", err, "suppressed_since_last", suppressed)
	}
}

// dropLog rate-limits the log of rejected messages to one line per reason per second.
type dropLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// allow reports whether a line for reason may be logged now, and how many were suppressed since the last one.
func (d *dropLog) allow(reason string) (suppressed int, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last, d.suppressed = make(map[string]time.Time), make(map[string]int)
	}
	if now := time.Now(); now.Sub(d.last[reason]) >= time.Second {
		d.last[reason] = now
		n := d.suppressed[reason]
		d.suppressed[reason] = 0
		return n, true
	}
	d.suppressed[reason]++
	return 0, false
}

// CatchingUpTo is the cursor the edge must reach to have caught up with the stream, as the stream stood when the
// consumer started; 0 before the stream was reached.
func (s *Source) CatchingUpTo() uint64 { return s.target.Load() }

// Ready reports whether the edge can serve current data: NATS connected, the consumer running and caught up.
// The error says what is missing.
func (s *Source) Ready() error {
	if err := natsconn.Problem(s.js.Conn()); err != nil {
		return err // which server, and why: refused, unreachable, TLS
	}
	switch {
	case !s.running.Load():
		return errors.New("stream not reachable")
	case s.troubled.Load():
		// Its NATS node lost, say: the edge gets nothing until the consumer is recreated.
		return errors.New("stream consumer interrupted: recreating it")
	case !s.caughtUp.Load():
		return errors.New("catching up with the stream")
	}
	return nil
}
