// Package feeds holds the market and sports simulators, the payload types they
// publish and the subject names they own.
//
// The simulators are pure: they do not sleep, publish or read the clock. Each
// Next call returns the next update together with the real-time delay that
// should separate it from the previous one, so a runner can pace them against
// a wall clock while tests simply sum the delays.
package feeds

import (
	"math"
	"time"
)

// Payload kinds, carried in every payload's "kind" field.
const (
	KindQuote = "quote"
	KindScore = "score"
)

// Match status values of Score.Status, in the only order a match goes through.
const (
	StatusScheduled = "scheduled"
	StatusLive      = "live"
	StatusFinal     = "final"
)

// MarketSubject returns the subject of a symbol's quotes: "market.<symbol>".
func MarketSubject(symbol string) string { return "market." + symbol }

// SportsSubject returns the subject of a match's scores:
// "sports.<league>.<match>".
func SportsSubject(league, match string) string { return "sports." + league + "." + match }

// Quote is one market tick for a symbol. Prices are rounded to the cent, or
// to 1/100 of a cent below $1; ChangePct is rounded to 2 decimals.
//
// The day begins with the pre-market: Open is the previous close until the
// regular session opens, then the opening price; Change is from Open. High
// and Low are the day's range, and Volume the shares traded, since the day
// began.
type Quote struct {
	Topic     string  `json:"topic"`
	Kind      string  `json:"kind"`
	Symbol    string  `json:"symbol"`
	Price     float64 `json:"price"`
	Bid       float64 `json:"bid"`
	Ask       float64 `json:"ask"`
	Open      float64 `json:"open"`
	Change    float64 `json:"change"`
	ChangePct float64 `json:"changePct"`
	Volume    int64   `json:"volume"`
	PrevClose float64 `json:"prevClose"` // the previous day's regular close
	High      float64 `json:"high"`
	Low       float64 `json:"low"`
	Session   string  `json:"session"` // SessionPreMarket, SessionOpen, SessionAfterHours or SessionClosed
	// TS is the publish time; the simulator leaves it zero for the runner
	// to stamp, since only the runner knows the wall clock.
	TS time.Time `json:"ts"`
}

// Team is one side of a match: its full name, and the three-letter
// abbreviation scoreboards use where space is short.
type Team struct {
	Name  string `json:"name"`
	Abbr  string `json:"abbr"`
	Score int    `json:"score"`
}

// Score is the full state of a match. Every update carries the whole state,
// so the latest one alone is enough to draw a scoreboard.
//
// Period is "" while scheduled; "1H", "HT", "2H" and finally "FT" in soccer;
// "Q1".."Q4" (with "HT" at halftime), "OT", "2OT", … and finally "F", "F/OT",
// "F/2OT", … in basketball; "P1".."P3", "OT", "SO" and finally "F", "F/OT"
// or "F/SO" in ice hockey.
//
// Clock is the game clock as "MM:SS": counting up in soccer (past "45:00" or
// "90:00" in stoppage time), counting down in basketball and hockey. A
// scheduled match shows the clock it will start from.
//
// Event is the text of the latest event of the match ("GOAL Arsenal (Saka
// 23')", "3PT Curry", "Tip-off", "Full time"); clock-only updates carry the
// previous event forward, since each update is the full state. LastScore is
// the text of the latest event that changed the score, carried forward the
// same way.
type Score struct {
	Topic     string    `json:"topic"`
	Kind      string    `json:"kind"`
	League    string    `json:"league"`
	Match     string    `json:"match"`
	Home      Team      `json:"home"`
	Away      Team      `json:"away"`
	Period    string    `json:"period"`
	Clock     string    `json:"clock"`
	Status    string    `json:"status"` // StatusScheduled, StatusLive or StatusFinal
	Event     string    `json:"event,omitempty"`
	LastScore string    `json:"lastScore,omitempty"`
	Start     time.Time `json:"start"` // wall time the match starts (goes live)
	// TS is the publish time; the simulator leaves it zero for the runner
	// to stamp.
	TS time.Time `json:"ts"`
}

// roundTo rounds x to the given number of decimals. Dividing the rounded
// integer keeps the result the nearest float to the decimal, so JSON prints
// it short ("189.12", not "189.12000000000001").
func roundTo(x float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(x*p) / p
}
