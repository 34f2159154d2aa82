package feeds

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Errors returned by NewMarket, wrapped with the offending value.
var (
	ErrNoSymbols     = errors.New("feeds: no symbols")
	ErrInvalidSymbol = errors.New("feeds: invalid symbol")
	ErrInvalidRate   = errors.New("feeds: invalid rate")
	ErrInvalidDay    = errors.New("feeds: invalid trading day")
)

// DefaultSymbols are the symbols a zero MarketConfig simulates: large US
// stocks and a few index ETFs.
var DefaultSymbols = []string{
	"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "GOOG", "META", "TSLA", "BRK-B", "AVGO",
	"JPM", "LLY", "V", "UNH", "XOM", "MA", "JNJ", "PG", "HD", "COST",
	"ABBV", "MRK", "ORCL", "CVX", "KO", "PEP", "ADBE", "CRM", "BAC", "NFLX",
	"AMD", "WMT", "TMO", "MCD", "CSCO", "ACN", "ABT", "LIN", "DIS", "WFC",
	"INTC", "DHR", "VZ", "TXN", "CMCSA", "PM", "NEE", "IBM", "QCOM", "AMGN",
	"HON", "UNP", "INTU", "CAT", "GS", "LOW", "SPGI", "BA", "AMAT", "PFE",
	"RTX", "SBUX", "GE", "DE", "PLTR", "UBER", "SHOP", "COIN", "F", "GM",
	"T", "NKE", "PYPL", "MU", "SPY", "QQQ", "IWM", "DIA",
}

// referencePrices are rough price levels of the default symbols, so a trader sees plausible quotes; the seed moves
// each open a few percent around its level. Other symbols draw a level at random.
var referencePrices = map[string]float64{
	"AAPL": 230, "MSFT": 430, "NVDA": 135, "AMZN": 200, "GOOGL": 175, "GOOG": 176, "META": 580, "TSLA": 250,
	"BRK-B": 460, "AVGO": 170, "JPM": 225, "LLY": 850, "V": 290, "UNH": 560, "XOM": 115, "MA": 500, "JNJ": 160,
	"PG": 170, "HD": 400, "COST": 900, "ABBV": 190, "MRK": 100, "ORCL": 170, "CVX": 150, "KO": 68, "PEP": 165,
	"ADBE": 500, "CRM": 290, "BAC": 42, "NFLX": 750, "AMD": 150, "WMT": 82, "TMO": 550, "MCD": 300, "CSCO": 57,
	"ACN": 360, "ABT": 115, "LIN": 460, "DIS": 95, "WFC": 70, "INTC": 23, "DHR": 240, "VZ": 42, "TXN": 200,
	"CMCSA": 40, "PM": 130, "NEE": 78, "IBM": 220, "QCOM": 165, "AMGN": 320, "HON": 220, "UNP": 240, "INTU": 640,
	"CAT": 390, "GS": 520, "LOW": 270, "SPGI": 510, "BA": 155, "AMAT": 190, "PFE": 29, "RTX": 120, "SBUX": 95,
	"GE": 180, "DE": 400, "PLTR": 40, "UBER": 75, "SHOP": 80, "COIN": 200, "F": 11, "GM": 50, "T": 22, "NKE": 80,
	"PYPL": 78, "MU": 100, "SPY": 580, "QQQ": 500, "IWM": 225, "DIA": 430,
}

// mostTraded are the symbols whose quotes come most often, as on a real tape: a board or a newcomer watching AAPL
// sees it move every second or so at the default rate. Other symbols draw a liquidity weight between 0.3 and 3.
var mostTraded = map[string]float64{
	"SPY": 4, "QQQ": 3.5, "NVDA": 3.5, "TSLA": 3, "AAPL": 3, "AMD": 2.5, "AMZN": 2.5, "MSFT": 2.5, "META": 2,
}

// DefaultRate is the total number of quotes per second when
// MarketConfig.Rate is zero.
const DefaultRate = 50

// DefaultDay is the trading day the feeds' flags default to: an hour, the
// stream's default retention, so that a chart of the stream's history shows
// one whole day.
const DefaultDay = time.Hour

// Model constants. Simulated time maps one to one onto trading time while
// the market is open.
const (
	tradingYear = 252 * 6.5 * 3600 // seconds of trading in a year
	// reversion is the pull of the log price back to the open, per year.
	// It barely shows within a day (about 18%) but bounds a long run: the
	// stationary spread is vol/sqrt(2*reversion), 8% at 80% volatility.
	reversion = 50.0
)

// MarketConfig configures NewMarket. The zero value is a valid
// configuration.
type MarketConfig struct {
	// Symbols to quote; each must match [A-Z0-9_-]+ and appear once. Nil
	// means DefaultSymbols; a non-nil empty list is ErrNoSymbols.
	Symbols []string
	// Rate is the total quote updates per second across all symbols. Zero
	// means DefaultRate; negative, NaN or infinite is ErrInvalidRate.
	Rate float64
	// Seed makes runs repeatable: the same config gives the same sequence.
	Seed int64
	// Day is the simulated time one trading day takes: pre-market, the
	// regular session, after-hours and the overnight close (Sessions). The
	// simulation starts at the open. Zero means no schedule: the market is
	// always open, and the day never ends.
	Day time.Duration
}

// Trading sessions, carried in Quote.Session.
const (
	SessionPreMarket  = "pre-market"
	SessionOpen       = "open"
	SessionAfterHours = "after-hours"
	SessionClosed     = "closed"
)

// session is one part of a trading day.
type session struct {
	name  string
	share float64 // of MarketConfig.Day
	rate  float64 // quotes, as a share of the open's
	vol   float64 // volatility, as a share of the open's
	lots  int     // most lots of 100 shares a quote trades
}

// Sessions is the trading day, compressed: a day of a few minutes or an
// hour shows each session, mostly the open. Out of hours quotes come less
// often and move less; while closed, prices stand still and only a few
// quotes repeat them, so a board can tell the market is closed.
var Sessions = []session{
	{SessionPreMarket, 0.10, 0.25, 0.5, 10},
	{SessionOpen, 0.70, 1, 1, 50},
	{SessionAfterHours, 0.10, 0.25, 0.5, 10},
	{SessionClosed, 0.10, 0.05, 0, 0},
}

// openSession is the index of the regular session in Sessions.
const openSession = 1

// Market simulates quotes for a set of symbols. Next is not safe for
// concurrent use; Symbols is.
type Market struct {
	rng   *rand.Rand
	rate  float64
	names []string
	syms  []*symbolState
	cumW  []float64 // cumulative liquidity weights, for picking a symbol
	now   time.Duration

	day     time.Duration // zero: always open
	session int           // index in Sessions
	ends    time.Duration // simulated time the session ends; with a schedule only
	pending []int         // symbols whose quote tells a session change, in order
}

// symbolState is one symbol's model parameters and running state.
type symbolState struct {
	name   string
	topic  string
	open   float64       // the level prices revert to, unrounded
	vol    float64       // annualised volatility
	drift  float64       // annualised drift, near zero
	spread float64       // full bid/ask spread in basis points
	x      float64       // log(price/open)
	last   time.Duration // simulated time of the previous tick

	// The day, as published.
	openR     float64 // the day's open; before the open, the previous close
	prevClose float64
	close     float64 // the regular session's close, once it closed
	high, low float64
	volume    int64 // shares traded since the day began
}

// NewMarket returns a market simulator for cfg. It returns ErrNoSymbols,
// ErrInvalidSymbol, ErrInvalidRate or ErrInvalidDay, wrapped with the
// offending value.
func NewMarket(cfg MarketConfig) (*Market, error) {
	symbols := cfg.Symbols
	if symbols == nil {
		symbols = DefaultSymbols
	}
	if len(symbols) == 0 {
		return nil, ErrNoSymbols
	}
	rate := cfg.Rate
	switch {
	case rate == 0:
		rate = DefaultRate
	case rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0):
		return nil, fmt.Errorf("%w %v: want a positive number of quotes per second", ErrInvalidRate, cfg.Rate)
	}
	if cfg.Day < 0 {
		return nil, fmt.Errorf("%w %v: want a positive duration, or zero for no schedule", ErrInvalidDay, cfg.Day)
	}
	m := &Market{
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6d61726b6574)), // "market"
		rate:    rate,
		names:   make([]string, 0, len(symbols)),
		day:     cfg.Day,
		session: openSession,
	}
	if m.day > 0 {
		m.ends = m.sessionLength(openSession)
	}
	seen := make(map[string]bool, len(symbols))
	total := 0.0
	for _, name := range symbols {
		if !validSymbol(name) {
			return nil, fmt.Errorf("%w %q: want [A-Z0-9_-]+", ErrInvalidSymbol, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w %q: listed twice", ErrInvalidSymbol, name)
		}
		seen[name] = true
		s, weight := newSymbol(name, cfg.Seed)
		m.names = append(m.names, name)
		m.syms = append(m.syms, s)
		total += weight
		m.cumW = append(m.cumW, total)
	}
	return m, nil
}

// newSymbol draws a symbol's parameters from its own generator, keyed by
// the seed and the name, so a symbol behaves the same whatever list it is
// in. It also returns the symbol's liquidity weight.
func newSymbol(name string, seed int64) (*symbolState, float64) {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
	logUniform := func(lo, hi float64) float64 {
		return lo * math.Exp(r.Float64()*math.Log(hi/lo))
	}
	open := logUniform(8, 900)
	if ref, ok := referencePrices[name]; ok {
		open = ref * (0.95 + 0.1*r.Float64())
	}
	s := &symbolState{
		name:   name,
		topic:  MarketSubject(name),
		open:   open,
		openR:  roundPrice(open),
		vol:    0.15 + 0.65*r.Float64(),
		drift:  0.04 * (r.Float64() - 0.5),
		spread: 1 + 7*r.Float64(),
	}
	// Yesterday closed within a couple of percent of today's open.
	s.prevClose = roundPrice(open * math.Exp(0.01*r.NormFloat64()))
	s.high, s.low = s.openR, s.openR
	weight := logUniform(0.3, 3) // drawn for every symbol, so the seed's other draws do not depend on the list
	if w, ok := mostTraded[name]; ok {
		weight = w
	}
	return s, weight
}

// validSymbol reports whether s matches [A-Z0-9_-]+.
func validSymbol(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Symbols returns a copy of the simulated symbols in configuration order.
func (m *Market) Symbols() []string {
	return append([]string(nil), m.names...)
}

// Next advances the simulation by one tick. wait is the simulated delay
// since the previous tick (exponentially distributed, so ticks form a
// Poisson process at the configured rate, less out of hours); q is the tick
// with TS left zero. When a session begins, every symbol's quote comes at
// once, in configuration order, each with the new session.
func (m *Market) Next() (wait time.Duration, q Quote) {
	if len(m.pending) > 0 {
		s := m.syms[m.pending[0]]
		m.pending = m.pending[1:]
		return 0, s.quote(m.Session())
	}
	sess := Sessions[m.session]
	wait = time.Duration(m.rng.ExpFloat64() / (m.rate * sess.rate) * float64(time.Second))
	if m.day > 0 && m.now+wait >= m.ends {
		wait = m.ends - m.now
		m.now = m.ends
		m.nextSession()
		_, q = m.Next() // the first of the quotes telling the change, at the change
		return wait, q
	}
	m.now += wait

	i := sort.SearchFloat64s(m.cumW, m.rng.Float64()*m.cumW[len(m.cumW)-1])
	if i == len(m.syms) { // only if Float64 returned exactly the total
		i--
	}
	s := m.syms[i]

	if sess.vol > 0 {
		// Exact Ornstein-Uhlenbeck step of the log price towards the open: a
		// geometric random walk for short steps, stable for any step length.
		dt := (m.now - s.last).Seconds() / tradingYear
		decay := math.Exp(-reversion * dt)
		mean := (s.drift - s.vol*s.vol/2) / reversion
		sd := sess.vol * s.vol * math.Sqrt(-math.Expm1(-2*reversion*dt)/(2*reversion))
		s.x = mean + (s.x-mean)*decay + sd*m.rng.NormFloat64()
	}
	s.last = m.now
	if sess.lots > 0 {
		s.volume += 100 * int64(1+m.rng.IntN(sess.lots))
	}
	return wait, s.quote(sess.name)
}

// Session returns the trading session the simulation is in: always
// SessionOpen without a schedule.
func (m *Market) Session() string { return Sessions[m.session].name }

func (m *Market) sessionLength(i int) time.Duration {
	return time.Duration(Sessions[i].share * float64(m.day))
}

// nextSession moves to the next session of the day, or of the next day, and
// queues every symbol's quote to tell it.
func (m *Market) nextSession() {
	m.session = (m.session + 1) % len(Sessions)
	m.ends += m.sessionLength(m.session)
	for i, s := range m.syms {
		s.begin(Sessions[m.session].name)
		m.pending = append(m.pending, i)
	}
}

// begin changes the symbol's day for a session that begins: a new day at
// the pre-market, the open's price at the open, the close after it.
func (s *symbolState) begin(session string) {
	p := s.quote(session).Price
	switch session {
	case SessionPreMarket:
		if s.close > 0 {
			s.prevClose = s.close
		}
		s.openR, s.high, s.low, s.volume, s.close = s.prevClose, p, p, 0, 0
	case SessionOpen:
		s.openR = p
	case SessionAfterHours:
		s.close = p
	}
}

// quote renders the symbol's state in session, rounding in whole ticks so
// that bid < ask and bid <= price <= ask hold exactly after rounding, and
// widens the day's range to the price.
func (s *symbolState) quote(session string) Quote {
	p := s.open * math.Exp(s.x)
	decimals := 2
	if p < 1 {
		decimals = 4
	}
	scale := math.Pow10(decimals)
	ticks := max(int64(math.Round(p*scale)), 2)
	half := max(int64(math.Round(p*s.spread/2e4*scale)), 1)
	price := float64(ticks) / scale
	change := roundTo(price-s.openR, 4)
	if decimals == 2 && s.openR >= 1 {
		change = roundTo(change, 2)
	}
	s.high, s.low = max(s.high, price), min(s.low, price)
	return Quote{
		Topic:     s.topic,
		Kind:      KindQuote,
		Symbol:    s.name,
		Price:     price,
		Bid:       float64(max(ticks-half, 1)) / scale,
		Ask:       float64(ticks+half) / scale,
		Open:      s.openR,
		Change:    change,
		ChangePct: roundTo(100*change/s.openR, 2),
		Volume:    s.volume,
		PrevClose: s.prevClose,
		High:      s.high,
		Low:       s.low,
		Session:   session,
	}
}

// roundPrice rounds a price to the cent, or to 1/100 of a cent below $1.
func roundPrice(p float64) float64 {
	if p < 1 {
		return roundTo(p, 4)
	}
	return roundTo(p, 2)
}
