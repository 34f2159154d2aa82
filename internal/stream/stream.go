// Package stream owns the one JetStream stream that carries every Livepush topic. Feeds and edges both call Ensure
// at start, so whichever process comes first creates the stream and the others converge on the same config.
//
// One stream for all topics gives one global sequence: a single number is then a resume cursor for any set of
// topics, on any edge.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
)

// Subjects are the NATS subjects stored in the stream: exactly the public topic roots.
var Subjects = []string{"market.>", "sports.>"}

// Config is the stream's retention. The zero value is usable: every zero field takes the default it documents.
type Config struct {
	// Name of the stream. Zero: "LIVEPUSH".
	Name string
	// MaxAge drops updates older than this. Zero: 1h.
	MaxAge time.Duration
	// MaxMsgsPerSubject keeps at most this many updates per topic. Zero: 100,000.
	MaxMsgsPerSubject int64
	// Replicas is the number of copies JetStream keeps (1, 3 or 5). Zero: 1.
	Replicas int
	// Memory keeps the stream in memory instead of on disk.
	Memory bool
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "LIVEPUSH"
	}
	if c.MaxAge == 0 {
		c.MaxAge = time.Hour
	}
	if c.MaxMsgsPerSubject == 0 {
		c.MaxMsgsPerSubject = 100_000
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// StreamName returns the stream's name after defaults.
func (c Config) StreamName() string { return c.withDefaults().Name }

func (c Config) jetstream() jetstream.StreamConfig {
	c = c.withDefaults()
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:              c.Name,
		Description:       "Livepush updates: market quotes and sports scores",
		Subjects:          Subjects,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.MaxAge,
		MaxMsgsPerSubject: c.MaxMsgsPerSubject,
		Storage:           storage,
		Replicas:          c.Replicas,
		Duplicates:        2 * time.Minute,
		AllowDirect:       true, // snapshot and replay reads served by any replica
	}
}

// Ensure creates the stream or updates it to cfg, and returns it. Two processes racing to create it both succeed.
// It retries until ctx ends while JetStream is unavailable (a cluster still electing a leader, a server restarting),
// because a process that starts before NATS is ready should wait, not die.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (jetstream.Stream, error) {
	want := cfg.jetstream()
	backoff := 100 * time.Millisecond
	said := ""
	for {
		s, err := createOrUpdate(ctx, js, want)
		if err == nil {
			return s, nil
		}
		if !retryable(err) {
			return nil, fmt.Errorf("stream: ensure %s: %w", want.Name, err)
		}
		if p := natsconn.Problem(js.Conn()); p != nil {
			err = p // a timeout would say nothing: say which server cannot be reached, and why
		}
		// Said once per cause: every retry would flood the log while NATS is away.
		level := slog.LevelDebug
		if err.Error() != said {
			level, said = slog.LevelWarn, err.Error()
		}
		log.Log(ctx, level, "stream not ready, retrying", "stream", want.Name, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream: ensure %s: %w (last error: %v)", want.Name, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func createOrUpdate(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another process created it between our update and create: update again.
		return js.UpdateStream(ctx, cfg)
	}
	return s, err
}

// retryable tells a JetStream that is not (yet) answering from a config it refuses.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: no leader yet or JetStream temporarily unavailable; 500s are transient too. "No suitable peers for
		// placement" (10005) is a cluster whose nodes have not all joined yet: a replicated stream fits once they have (and on a
		// cluster too small for -stream-replicas, the retries' warnings say why).
		return apiErr.Code >= 500 || apiErr.ErrorCode == 10005
	}
	return true // timeouts, no responders, connection trouble
}

// RegisterFlags defines the stream's flags on f, shared by every command that may create the stream, so that all of
// them converge on one config. The returned func copies the parsed values into c; call it after Parse.
func (c *Config) RegisterFlags(f *cli.Flags) func() {
	name := f.String("stream", "LIVEPUSH_STREAM", "LIVEPUSH", "JetStream stream holding every topic")
	maxAge := f.Duration("stream-max-age", "LIVEPUSH_STREAM_MAX_AGE", time.Hour, "keep updates this long: the window in which clients can resume")
	perTopic := f.Int64("stream-max-per-topic", "LIVEPUSH_STREAM_MAX_PER_TOPIC", 100_000, "keep at most this many updates per topic")
	replicas := f.Int("stream-replicas", "LIVEPUSH_STREAM_REPLICAS", 1, "copies JetStream keeps of the stream (1, 3 or 5; 3 on a cluster)")
	memory := f.Bool("stream-memory", "LIVEPUSH_STREAM_MEMORY", false, "keep the stream in memory instead of on disk")
	return func() {
		*c = Config{Name: *name, MaxAge: *maxAge, MaxMsgsPerSubject: *perTopic, Replicas: *replicas, Memory: *memory}
	}
}
