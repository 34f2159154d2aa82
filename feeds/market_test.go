package feeds

import (
	"errors"
	"math"
	"slices"
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
	if !(q.PrevClose > 0) || q.Low > q.Price || q.Price > q.High || roundPrice(q.PrevClose) != q.PrevClose {
		t.Fatalf("%s: want a previous close and low <= price <= high, got %+v", q.Symbol, q)
	}
	switch q.Session {
	case SessionPreMarket, SessionOpen, SessionAfterHours, SessionClosed:
	default:
		t.Fatalf("%s: session %q", q.Symbol, q.Session)
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

// TestMostTradedTickOften: whatever the seed, AAPL (the README's example, which waits for five of its quotes) and
// SPY quote about once a second or more at the default rate, as the busiest names on a real tape do.
func TestMostTradedTickOften(t *testing.T) {
	for seed := range int64(30) {
		m, err := NewMarket(MarketConfig{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var elapsed time.Duration
		ticks := map[string]int{}
		for elapsed < 10*time.Minute {
			wait, q := m.Next()
			elapsed += wait
			ticks[q.Symbol]++
		}
		for _, symbol := range []string{"AAPL", "SPY"} {
			if perSecond := float64(ticks[symbol]) / elapsed.Seconds(); perSecond < 1 {
				t.Errorf("seed %d: %s quotes %.2f times a second, want at least once", seed, symbol, perSecond)
			}
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
	s := &symbolState{name: "PENNY", topic: MarketSubject("PENNY"), open: 0.5, openR: 0.5, spread: 5,
		prevClose: 0.5, high: 0.5, low: 0.5}
	offCent := 0
	for i := range 200 {
		s.x = -0.5 + float64(i)/200
		s.volume += 100
		q := s.quote(SessionOpen)
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
		{"negative day", MarketConfig{Day: -time.Hour}, ErrInvalidDay},
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

// TestMarketSessions runs three compressed trading days: the sessions come in
// order, each change told by a quote of every symbol at once; out of hours
// quotes come less often, while closed prices stand still; the day's open is
// the price the pre-market left, the next day's previous close is the price
// the open session left, and volume and the day's range start over each day.
func TestMarketSessions(t *testing.T) {
	const day = 10 * time.Minute
	symbols := []string{"AAPL", "MSFT", "NVDA", "X_1"}
	m, err := NewMarket(MarketConfig{Symbols: symbols, Rate: 20, Seed: 3, Day: day})
	if err != nil {
		t.Fatal(err)
	}
	if m.Session() != SessionOpen {
		t.Fatalf("the simulation starts in %q, want the open", m.Session())
	}
	order := []string{SessionOpen, SessionAfterHours, SessionClosed, SessionPreMarket}
	var (
		elapsed  time.Duration
		session  = SessionOpen
		changes  int
		spent    = map[string]time.Duration{} // simulated time per session
		ticks    = map[string]int{}           // quotes per session, the quotes telling a change left out
		last     = map[string]Quote{}         // each symbol's latest quote
		lastOpen = map[string]float64{}       // each symbol's price when the open session ended
	)
	for elapsed < 3*day {
		wait, q := m.Next()
		elapsed += wait
		spent[session] += wait
		checkQuote(t, q)
		prev, seen := last[q.Symbol]
		if q.Session != session {
			// A change: every symbol's quote comes now, with no time between them.
			want := order[(slices.Index(order, session)+1)%len(order)]
			if q.Session != want {
				t.Fatalf("after %q came %q, want %q", session, q.Session, want)
			}
			if session == SessionOpen {
				for _, s := range symbols {
					lastOpen[s] = last[s].Price
				}
			}
			session = q.Session
			changes++
			for i, s := range symbols {
				if i > 0 {
					var w time.Duration
					if w, q = m.Next(); w != 0 || q.Symbol != s || q.Session != session {
						t.Fatalf("after a change to %s: quote %d is %s in %s after %v, want %s at once", session, i, q.Symbol,
							q.Session, w, s)
					}
					checkQuote(t, q)
					prev, seen = last[q.Symbol]
				}
				if seen && q.Price != prev.Price {
					t.Errorf("%s: a session change moved the price from %v to %v", s, prev.Price, q.Price)
				}
				switch session {
				case SessionOpen:
					if q.Open != prev.Price {
						t.Errorf("%s opens at %v, want the price the pre-market left, %v", s, q.Open, prev.Price)
					}
				case SessionPreMarket:
					if q.PrevClose != lastOpen[s] || q.Open != q.PrevClose || q.Volume != 0 || q.High != q.Price || q.Low != q.Price {
						t.Errorf("%s starts a day with %+v, want the previous close %v (the open's last price) as open, no volume, and a range of one price",
							s, q, lastOpen[s])
					}
				}
				last[q.Symbol] = q
			}
			continue
		}
		ticks[session]++
		if seen {
			if session == SessionClosed && (q.Price != prev.Price || q.Volume != prev.Volume) {
				t.Errorf("%s moved while closed: %v to %v, volume %d to %d", q.Symbol, prev.Price, q.Price, prev.Volume, q.Volume)
			}
			if session != SessionClosed && q.Volume <= prev.Volume {
				t.Errorf("%s: volume %d after %d in %s", q.Symbol, q.Volume, prev.Volume, session)
			}
			if q.High < prev.High || q.Low > prev.Low {
				t.Errorf("%s: the day's range shrank from %v-%v to %v-%v", q.Symbol, prev.Low, prev.High, q.Low, q.High)
			}
		}
		last[q.Symbol] = q
	}
	if changes < 11 {
		t.Errorf("%d session changes in three days, want 12 (4 a day)", changes)
	}
	// The open takes most of the day; quotes come at the configured rate while open, a quarter of it out of hours.
	if share := spent[SessionOpen].Seconds() / elapsed.Seconds(); share < 0.65 || share > 0.75 {
		t.Errorf("the open took %.0f%% of the days, want 70%%", 100*share)
	}
	rate := func(s string) float64 { return float64(ticks[s]) / spent[s].Seconds() }
	if r := rate(SessionOpen); math.Abs(r-20) > 2 {
		t.Errorf("%.1f quotes/s while open, want 20", r)
	}
	if r := rate(SessionPreMarket) / rate(SessionOpen); r < 0.15 || r > 0.35 {
		t.Errorf("pre-market quotes at %.2f of the open's rate, want a quarter", r)
	}
	if r := rate(SessionClosed) / rate(SessionOpen); r > 0.1 {
		t.Errorf("closed quotes at %.2f of the open's rate, want a few", r)
	}
}
