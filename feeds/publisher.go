package feeds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// ErrPublishFailed is returned by Publish when an update could not be stored before its retry budget ran out.
var ErrPublishFailed = errors.New("feeds: publish failed")

// Publisher stores updates in the stream and waits for each acknowledgement, one at a time, so updates of a topic
// are stored in the order they were made. A failed attempt (NATS away, JetStream electing a leader) is retried
// with the same message id, so JetStream keeps one copy even when an earlier attempt did land.
type Publisher struct {
	js       jetstream.JetStream
	log      *slog.Logger
	retryFor time.Duration
	idPrefix string
	next     atomic.Uint64

	published atomic.Uint64
	retried   atomic.Uint64
	failed    atomic.Uint64
}

// NewPublisher returns a publisher that retries each update for up to retryFor (zero: 30s) before giving up on it.
func NewPublisher(js jetstream.JetStream, retryFor time.Duration, log *slog.Logger) *Publisher {
	if retryFor <= 0 {
		retryFor = 30 * time.Second
	}
	return &Publisher{js: js, log: log, retryFor: retryFor, idPrefix: nuid.Next() + "-"}
}

// Publish stores data under subject and returns its stream sequence. It blocks while NATS is unreachable, retrying,
// which pauses the simulator that called it: the feed rides through an outage and carries on when NATS returns.
// After retryFor without success it logs the loss, counts it and returns an error wrapping ErrPublishFailed.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte) (uint64, error) {
	id := p.idPrefix + strconv.FormatUint(p.next.Add(1), 10)
	deadline := time.Now().Add(p.retryFor)
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		// An attempt under way finishes even when ctx ends, so an update stored at shutdown is counted as such.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		ack, err := p.js.Publish(actx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			p.published.Add(1)
			if attempt > 1 {
				p.log.Info("publish succeeded after retrying", "subject", subject, "attempts", attempt)
			}
			return ack.Sequence, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if time.Now().Add(backoff).After(deadline) {
			p.failed.Add(1)
			p.log.Error("update lost: publish failed", "subject", subject, "attempts", attempt, "err", err,
				"failed_total", p.failed.Load())
			return 0, fmt.Errorf("%w: %s after %d attempts: %w", ErrPublishFailed, subject, attempt, err)
		}
		p.retried.Add(1)
		if attempt == 1 {
			p.log.Warn("publish failed, retrying", "subject", subject, "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// PublisherStats counts what a publisher has done since it started.
type PublisherStats struct {
	Published uint64 `json:"published"` // acknowledged by JetStream
	Retried   uint64 `json:"retried"`   // attempts that failed and were tried again
	Failed    uint64 `json:"failed"`    // updates given up on, each one logged
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{Published: p.published.Load(), Retried: p.retried.Load(), Failed: p.failed.Load()}
}
