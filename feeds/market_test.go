package feeds

import (
	"errors"
	"math"
	"testing"
	"time"
)

// TestMarketDay runs a full simulated trading day and checks every quote.
// It ticks at a fifth of the default rate to stay fast under -race: each
// step is scaled to the time since the symbol's last tick, so how far prices
// wander in a day does not depend on the rate.
func TestMarketDay(t *testing.T) {
	const rate = DefaultRate / 5
	m, err := NewMarket(MarketConfig{Rate: rate, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Symbols(); len(got) != len(DefaultSymbols) || len(got) < 60 {
		t.Fatalf("Symbols() = %d symbols, want the %d defaults (at least 60)", len(got), len(DefaultSymbols))
	}
	const day = 6*time.Hour + 30*time.Minute
	var (
		elapsed time.Duration
		n       int
		volume  = map[string]int64{}
		moved   = map[string]bool{}
		state   = map[string]*symbolState{}
		lastX   = map[string]float64{} // log(price/open) after the previous tick, unrounded
		sumSq   = map[string]float64{} // squared steps of lastX, for realised volatility
	)
	for _, s := range m.syms {
		state[s.name] = s
	}
	for elapsed < day {
		wait, q := m.Next()
		if wait < 0 {
			t.Fatalf("tick %d: negative wait %v", n, wait)
		}
		elapsed += wait
		n++
		checkQuote(t, q)
		if q.Volume <= volume[q.Symbol] {
			t.Fatalf("%s: volume %d after %d, want strictly increasing", q.Symbol, q.Volume, volume[q.Symbol])
		}
		volume[q.Symbol] = q.Volume
		if q.Price < 0.5*q.Open || q.Price > 2*q.Open {
			t.Fatalf("%s: price %v left the band 0.5x..2x of open %v", q.Symbol, q.Price, q.Open)
		}
		if math.Abs(q.ChangePct) >= 0.5 {
			moved[q.Symbol] = true
		}
		x := state[q.Symbol].x
		sumSq[q.Symbol] += (x - lastX[q.Symbol]) * (x - lastX[q.Symbol])
		lastX[q.Symbol] = x
	}
	// Steps are scaled to trading years: the volatility realised over the
	// day matches each symbol's annualised volatility.
	years := day.Seconds() / (252 * 6.5 * 3600)
	meanSq := 0.0
	for name, s := range state {
		ratio := math.Sqrt(sumSq[name]/years) / s.vol
		if ratio < 0.7 || ratio > 1.3 {
			t.Errorf("%s: realised volatility %.3f, want about %.3f", name, ratio*s.vol, s.vol)
		}
		meanSq += ratio * ratio / float64(len(state))
	}
	if meanSq < 0.9 || meanSq > 1.1 {
		t.Errorf("realised/annualised variance %.3f on average, want about 1", meanSq)
	}
	if len(volume) != len(DefaultSymbols) {
		t.Errorf("%d of %d symbols ticked during the day", len(volume), len(DefaultSymbols))
	}
	// A walk that never moves would pass every check above.
	if len(moved) < len(DefaultSymbols)/2 {
		t.Errorf("only %d symbols moved 0.5%% or more from the open in a day", len(moved))
	}
	if got := float64(n) / elapsed.Seconds(); math.Abs(got-rate) > 0.1*rate {
		t.Errorf("measured rate %.2f/s, want %d/s within 10%%", got, rate)
	}
}

// checkQuote checks the invariants of one quote.
func checkQuote(t *testing.T, q Quote) {
	t.Helper()
	if q.Topic != MarketSubject(q.Symbol) || q.Kind != KindQuote {
		t.Fatalf("quote %+v: topic %q kind %q", q, q.Topic, q.Kind)
	}
	if !(q.Price > 0) || !(q.Open > 0) || !(q.Bid > 0) {
		t.Fatalf("%s: non-positive price in %+v", q.Symbol, q)
	}
	if !(q.Bid < q.Ask) || q.Bid > q.Price || q.Price > q.Ask {
		t.Fatalf("%s: want bid < ask and bid <= price <= ask, got bid %v price %v ask %v", q.Symbol, q.Bid, q.Price, q.Ask)
	}
	if spread := (q.Ask - q.Bid) / q.Price; spread > 0.005 {
		t.Fatalf("%s: spread %.4f%% of price, want a few basis points", q.Symbol, 100*spread)
	}
	for _, p := range []float64{q.Price, q.Bid, q.Ask, q.Open} {
		decimals := 2
		if p < 1 {
			decimals = 4
		}
		if roundTo(p, decimals) != p {
			t.Fatalf("%s: %v not rounded to %d decimals", q.Symbol, p, decimals)
		}
	}
	if math.Abs(q.Change-(q.Price-q.Open)) > 1e-6 {
		t.Fatalf("%s: change %v, want price-open = %v", q.Symbol, q.Change, q.Price-q.Open)
	}
	if math.Abs(q.ChangePct-100*q.Change/q.Open) > 0.005+1e-9 || roundTo(q.ChangePct, 2) != q.ChangePct {
		t.Fatalf("%s: changePct %v, want 100*change/open = %v to 2 decimals", q.Symbol, q.ChangePct, 100*q.Change/q.Open)
	}
}

func TestMarketRate(t *testing.T) {
	for _, rate := range []float64{2, DefaultRate, 1000} {
		m, err := NewMarket(MarketConfig{Symbols: []string{"AAPL", "BRK-B", "X_1"}, Rate: rate, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		var elapsed time.Duration
		const n = 20000
		for range n {
			wait, q := m.Next()
			elapsed += wait
			checkQuote(t, q)
		}
		if got := n / elapsed.Seconds(); math.Abs(got-rate) > 0.1*rate {
			t.Errorf("rate %v: measured %.3f/s", rate, got)
		}
	}
}

func TestMarketDeterministic(t *testing.T) {
	a, _ := NewMarket(MarketConfig{Seed: 42})
	b, _ := NewMarket(MarketConfig{Seed: 42})
	c, _ := NewMarket(MarketConfig{Seed: 43})
	differ := 0
	for i := range 10000 {
		wa, qa := a.Next()
		wb, qb := b.Next()
		wc, qc := c.Next()
		if wa != wb || qa != qb {
			t.Fatalf("tick %d: same seed diverged: (%v, %+v) vs (%v, %+v)", i, wa, qa, wb, qb)
		}
		if wa != wc || qa != qc {
			differ++
		}
	}
	if differ < 9000 {
		t.Errorf("different seeds: only %d of 10000 ticks differ", differ)
	}
}

// TestQuoteBelowDollar covers the sub-dollar tick, which the default band
// rarely reaches.
func TestQuoteBelowDollar(t *testing.T) {
	s := &symbolState{name: "PENNY", topic: MarketSubject("PENNY"), open: 0.5, openR: 0.5, spread: 5}
	offCent := 0
	for i := range 200 {
		s.x = -0.5 + float64(i)/200
		s.volume += 100
		q := s.quote()
		checkQuote(t, q)
		if q.Price < 1 && roundTo(q.Price, 2) != q.Price {
			offCent++
		}
	}
	if offCent == 0 {
		t.Error("no sub-dollar price used the 1/100 cent tick")
	}
}

func TestNewMarketErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  MarketConfig
		want error
	}{
		{"empty list", MarketConfig{Symbols: []string{}}, ErrNoSymbols},
		{"lower case", MarketConfig{Symbols: []string{"aapl"}}, ErrInvalidSymbol},
		{"empty symbol", MarketConfig{Symbols: []string{"AAPL", ""}}, ErrInvalidSymbol},
		{"dot", MarketConfig{Symbols: []string{"BRK.B"}}, ErrInvalidSymbol},
		{"wildcard", MarketConfig{Symbols: []string{"*"}}, ErrInvalidSymbol},
		{"duplicate", MarketConfig{Symbols: []string{"AAPL", "AAPL"}}, ErrInvalidSymbol},
		{"negative rate", MarketConfig{Rate: -1}, ErrInvalidRate},
		{"NaN rate", MarketConfig{Rate: math.NaN()}, ErrInvalidRate},
		{"infinite rate", MarketConfig{Rate: math.Inf(1)}, ErrInvalidRate},
	} {
		_, err := NewMarket(tc.cfg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	m, err := NewMarket(MarketConfig{Symbols: []string{"AAPL", "BRK-B", "X_1"}})
	if err != nil {
		t.Fatal(err)
	}
	syms := m.Symbols()
	syms[0] = "CHANGED"
	if m.Symbols()[0] != "AAPL" {
		t.Error("Symbols returned the market's own slice")
	}
}
