package feeds

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/livepush/livepush/internal/cli"
)

// Config chooses what the simulators produce. The zero value runs both with their defaults.
type Config struct {
	Market MarketConfig
	Sports SportsConfig
	// NoMarket and NoSports turn a simulator off.
	NoMarket, NoSports bool
}

// RegisterFlags defines the simulator flags (shared by cmd/feeds and cmd/push) on f, writing into c.
func (c *Config) RegisterFlags(f *cli.Flags) func() {
	symbols := f.List("symbols", "FEEDS_SYMBOLS", "comma-separated ticker `symbols` to simulate (default: 78 large US stocks and ETFs)")
	rate := f.Float64("rate", "FEEDS_RATE", DefaultRate, "market quote updates per second, across all symbols")
	day := f.Duration("market-day", "FEEDS_MARKET_DAY", DefaultDay, "real time one simulated trading day takes (pre-market, open, after-hours, closed), starting at the open; 0: always open")
	seed := f.Int64("seed", "FEEDS_SEED", 0, "random seed: the same seed gives the same sequence of updates (0: a new one each run)")
	matches := f.Int("matches", "FEEDS_MATCHES", 4, "concurrent matches per league")
	speed := f.Float64("sports-speed", "FEEDS_SPORTS_SPEED", 30, "simulated game seconds per real second")
	noMarket := f.Bool("no-market", "FEEDS_NO_MARKET", false, "do not run the market simulator")
	noSports := f.Bool("no-sports", "FEEDS_NO_SPORTS", false, "do not run the sports simulator")
	// The returned func copies the parsed values into c; call it after Parse.
	return func() {
		s := *seed
		if s == 0 {
			s = time.Now().UnixNano()
		}
		c.Market = MarketConfig{Symbols: *symbols, Rate: *rate, Seed: s, Day: *day}
		c.Sports = SportsConfig{MatchesPerLeague: *matches, Speed: *speed, Seed: s + 1, Start: time.Now()}
		c.NoMarket, c.NoSports = *noMarket, *noSports
	}
}

// Publish is where simulated updates go: a Publisher in production.
type Publish func(ctx context.Context, subject string, data []byte) (uint64, error)

// Run drives the simulators in real time and publishes every update until ctx ends. Each simulator paces itself
// by its own clock; if publishing stalls (NATS away) the simulator waits and carries on from where it was, without
// a burst to catch up.
func Run(ctx context.Context, cfg Config, publish Publish, log *slog.Logger) error {
	var market *Market
	var sports *Sports
	var err error
	if !cfg.NoMarket {
		if market, err = NewMarket(cfg.Market); err != nil {
			return err
		}
	}
	if !cfg.NoSports {
		if sports, err = NewSports(cfg.Sports); err != nil {
			return err
		}
	}
	log.Info("feeds running", "rate", cfg.Market.Rate,
		"market", market != nil, "sports", sports != nil)

	var wg sync.WaitGroup
	if market != nil {
		wg.Go(func() {
			pace(ctx, func() (time.Duration, func(time.Time) (string, any)) {
				wait, q := market.Next()
				return wait, func(now time.Time) (string, any) { q.TS = now; return q.Topic, q }
			}, publish)
		})
	}
	if sports != nil {
		wg.Go(func() {
			pace(ctx, func() (time.Duration, func(time.Time) (string, any)) {
				wait, sc := sports.Next()
				return wait, func(now time.Time) (string, any) { sc.TS = now; return sc.Topic, sc }
			}, publish)
		})
	}
	wg.Wait()
	return nil
}

// pace publishes the events of next at the times their waits say, stamping each with the time it leaves.
func pace(ctx context.Context, next func() (time.Duration, func(time.Time) (string, any)), publish Publish) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	due := time.Now()
	for {
		wait, stamp := next()
		due = due.Add(wait)
		if late := time.Since(due); late > time.Second {
			due = time.Now() // we were paused: carry on from now rather than burst
		}
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		subject, payload := stamp(time.Now().UTC())
		data, err := json.Marshal(payload)
		if err != nil {
			panic(err) // our own payload types always marshal
		}
		// A failure is logged and counted by the publisher; the simulation goes on.
		publish(ctx, subject, data)
		if ctx.Err() != nil {
			return
		}
	}
}
