package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/livepush/livepush/subscriber"
)

// printer writes updates, one line each: readable columns, or JSON with -json. Columns widen to the widest value
// seen so far, so a stream of lines stays aligned.
type printer struct {
	w           io.Writer
	json        bool
	cursorWidth int
	topicWidth  int
}

// jsonLine is the -json form of an update. The payload goes out as the edge sent it.
type jsonLine struct {
	Topic  string          `json:"topic"`
	Cursor string          `json:"cursor"`
	Kind   string          `json:"kind"`
	Data   json.RawMessage `json:"data"`
}

func (p *printer) print(u subscriber.Update) error {
	if p.json {
		b, err := json.Marshal(jsonLine{Topic: u.Topic, Cursor: strconv.FormatUint(u.Cursor, 10), Kind: u.Kind, Data: u.Data})
		if err != nil {
			return fmt.Errorf("update %d: %w", u.Cursor, err)
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	}
	_, err := io.WriteString(p.w, p.line(u))
	return err
}

// line formats one update for a person:
//
//	19:30:49.545  #1234  market.AAPL        AAPL     189.12  +1.72 (+0.92%)  bid 189.11  ask 189.13  vol 1,234,567
//	19:30:52.405  #1240  sports.nba.g-0142  NBA  Lakers 88 – 85 Celtics  Q3 07:42  live  3PT Curry
//
// The time is the payload's ts in local time; a kind it does not know shows as compact JSON.
func (p *printer) line(u subscriber.Update) string {
	var head struct {
		TS time.Time `json:"ts"`
	}
	json.Unmarshal(u.Data, &head)
	ts := head.TS
	if ts.IsZero() {
		ts = time.Now()
	}
	cursor := "#" + strconv.FormatUint(u.Cursor, 10)
	p.cursorWidth = max(p.cursorWidth, len(cursor))
	p.topicWidth = max(p.topicWidth, len(u.Topic), 17)
	prefix := fmt.Sprintf("%s  %-*s  %-*s  ", ts.Local().Format("15:04:05.000"), p.cursorWidth, cursor,
		p.topicWidth, u.Topic)

	var body string
	switch u.Kind {
	case "quote":
		body = quoteText(u.Data)
	case "score":
		body = scoreText(u.Data)
	}
	if body == "" {
		var b bytes.Buffer
		if json.Compact(&b, u.Data) == nil {
			body = b.String()
		} else {
			body = string(u.Data)
		}
	}
	return prefix + body + "\n"
}

func quoteText(data []byte) string {
	var q struct {
		Symbol    string   `json:"symbol"`
		Price     *float64 `json:"price"`
		Bid       *float64 `json:"bid"`
		Ask       *float64 `json:"ask"`
		Change    float64  `json:"change"`
		ChangePct float64  `json:"changePct"`
		Volume    *int64   `json:"volume"`
	}
	if json.Unmarshal(data, &q) != nil || q.Price == nil {
		return ""
	}
	s := fmt.Sprintf("%-6s %8s  %-16s", q.Symbol, price(*q.Price),
		fmt.Sprintf("%+.2f (%+.2f%%)", q.Change, q.ChangePct))
	if q.Bid != nil && q.Ask != nil {
		s += fmt.Sprintf("  bid %s  ask %s", price(*q.Bid), price(*q.Ask))
	}
	if q.Volume != nil {
		s += "  vol " + thousands(*q.Volume)
	}
	return strings.TrimRight(s, " ")
}

// price shows cents, and hundredths of a cent below $1, as the feeds round them.
func price(v float64) string {
	if v < 1 && v > -1 {
		return strconv.FormatFloat(v, 'f', 4, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func scoreText(data []byte) string {
	type team struct {
		Name  string `json:"name"`
		Score int    `json:"score"`
	}
	var s struct {
		League string `json:"league"`
		Home   *team  `json:"home"`
		Away   *team  `json:"away"`
		Period string `json:"period"`
		Clock  string `json:"clock"`
		Status string `json:"status"`
		Event  string `json:"event"`
	}
	if json.Unmarshal(data, &s) != nil || s.Home == nil || s.Away == nil {
		return ""
	}
	parts := []string{
		strings.ToUpper(s.League),
		fmt.Sprintf("%s %d – %d %s", s.Home.Name, s.Home.Score, s.Away.Score, s.Away.Name),
	}
	if clock := strings.TrimSpace(s.Period + " " + s.Clock); clock != "" {
		parts = append(parts, clock)
	}
	for _, p := range []string{s.Status, s.Event} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "  ")
}
