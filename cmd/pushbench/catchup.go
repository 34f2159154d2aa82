package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/livepush/livepush/subscriber"
	"github.com/livepush/livepush/subscriber/wire"
)

// catchupReport is what -catchup measures: a client that comes back N updates behind.
type catchupReport struct {
	Backlog        int     `json:"backlog"`
	Topics         int     `json:"topics"`
	Transport      string  `json:"transport"`
	PublishSeconds float64 `json:"backlog_publish_s"` // time to publish the backlog and have it acknowledged
	FromCursor     uint64  `json:"from_cursor"`
	LastBacklog    uint64  `json:"last_backlog_cursor"`
	LiveRate       float64 `json:"live_publish_rate"`
	ConnectMs      float64 `json:"connect_ms"`
	FirstMs        float64 `json:"first_update_ms"`
	BacklogMs      float64 `json:"backlog_ms"` // connect → the whole backlog received
	LiveMs         float64 `json:"live_ms"`    // connect → the first update published after the connect received
	BacklogRate    float64 `json:"backlog_rate"`
	Received       int64   `json:"received"`
	BacklogGot     int64   `json:"backlog_received"`
	Gaps           int64   `json:"gaps"`
	Missed         int64   `json:"missed"`
	Duplicates     int64   `json:"duplicates"`
	Bytes          int64   `json:"bytes_read"`
	Requests       int64   `json:"http_requests"`
	Live           bool    `json:"live"`
	WithinSecond   bool    `json:"live_within_1s"`
	Error          string  `json:"error,omitempty"`
}

func (c *catchupReport) rows(row func(k, format string, args ...any)) {
	row("catch-up", "%d updates behind on %d topics over %s, from cursor %d (backlog published in %.1fs)",
		c.Backlog, c.Topics, c.Transport, c.FromCursor, c.PublishSeconds)
	row("caught up", "first update %.0fms, whole backlog %.0fms (%s updates/s), live %.0fms after connecting",
		c.FirstMs, c.BacklogMs, thousands(c.BacklogRate), c.LiveMs)
	row("checked", "%d of %d backlog updates, %d received in all; gaps %d (missing %d), duplicates %d",
		c.BacklogGot, c.Backlog, c.Received, c.Gaps, c.Missed, c.Duplicates)
	row("wire", "%s bytes, %d HTTP requests", thousands(float64(c.Bytes)), c.Requests)
	if c.Error != "" {
		row("error", "%s", c.Error)
	}
}

// runCatchup publishes -catchup updates with nobody subscribed, then resumes one client from the cursor before
// them while updates keep coming, and measures how long until it has the backlog and is live.
func runCatchup(ctx context.Context, cfg *Config, args []string, stdout, stderrW io.Writer) error {
	start := time.Now()
	rep := newReport(cfg, args, start)
	rep.Run = newRunID()
	pub, err := dialPublisher(ctx, cfg, rep.Run)
	if err != nil {
		return err
	}
	defer pub.close()
	k := min(cfg.TopicsPerConn, cfg.Symbols)
	idx := make([]int, k)
	topics := make([]string, k)
	for i := range k {
		idx[i], topics[i] = i, pub.subjects[i]
	}
	if len(cfg.Patterns) > 0 {
		topics = cfg.Patterns
	}
	cu := &catchupReport{Backlog: cfg.Catchup, Topics: k, Transport: cfg.Transport}
	rep.Catchup = cu
	rep.Connections.Target, rep.Connections.Workers = 1, 0

	if cu.FromCursor, err = pub.streamLast(ctx); err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	if cu.FromCursor == 0 {
		// An empty stream: cursor 0 would mean "no resume, the snapshot". Publish one update to resume after.
		pub.publish(idx[0])
		if !pub.wait(30*time.Second) || pub.lastSeq.Load() == 0 {
			return errors.New("the first publish was not acknowledged")
		}
		cu.FromCursor = pub.lastSeq.Load()
	}
	fmt.Fprintf(stderrW, "publishing %d updates over %d topics after cursor %d…\n", cfg.Catchup, k, cu.FromCursor)
	for j := range cfg.Catchup {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pub.publish(idx[j%k])
	}
	if !pub.wait(2 * time.Minute) {
		return errors.New("the backlog was not acknowledged within 2 minutes")
	}
	if f := pub.failed.Load(); f > 0 {
		return fmt.Errorf("%d of the backlog's publishes failed", f)
	}
	cu.LastBacklog = pub.lastSeq.Load()
	cu.PublishSeconds = time.Since(start).Seconds()
	// The client is behind, not the edge: wait until the edge has the whole backlog. (An edge that receives a burst
	// while a client resumes conflates that client past its queue limit: a different test.)
	if err := waitEdgeHead(ctx, cfg.httpClient(), cfg.URLs[0], cu.LastBacklog, time.Minute); err != nil {
		return err
	}

	// Updates keep coming while the client catches up: it is live once it has one published after it connected.
	cu.LiveRate = cfg.PublishRate
	if cu.LiveRate == 0 {
		cu.LiveRate = 100
	}
	liveCtx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	go pub.run(liveCtx, cu.LiveRate, idx)

	cs := &conns{cfg: cfg, run: rep.Run, st: newLiveStats(1), pace: newPacer(cfg.ConnectRate)}
	limit := max(cfg.Duration, 30*time.Second)
	fmt.Fprintf(stderrW, "resuming one %s client from cursor %d (backlog up to %d)…\n", cfg.Transport,
		cu.FromCursor, cu.LastBacklog)
	c := &catchup{cs: cs, rep: cu, topics: topics, began: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if cfg.Transport == trLongPoll {
		err = c.longPoll(cctx)
	} else {
		err = c.stream(cctx)
	}
	stopLive()
	switch {
	case err != nil && !errors.Is(err, errCaughtUp):
		cu.Error = err.Error()
	case !cu.Live:
		cu.Error = fmt.Sprintf("not live within %v", limit)
	}
	st := cs.st.snapshotStats()
	cu.Bytes, cu.Requests = st.BytesRead, st.Requests
	if cu.BacklogMs > 0 {
		cu.BacklogRate = float64(cu.BacklogGot) / (cu.BacklogMs / 1e3)
	}
	cu.WithinSecond = cu.Live && cu.LiveMs <= 1000
	rep.Phases.MeasureSeconds = time.Since(c.began).Seconds()
	if cu.Error != "" || cu.BacklogGot < int64(cu.Backlog) {
		rep.Failed = append(rep.Failed, fmt.Sprintf("received %d of %d backlog updates: %s", cu.BacklogGot,
			cu.Backlog, cu.Error))
	}
	if cfg.Strict && cu.Gaps+cu.Duplicates > 0 {
		rep.Failed = append(rep.Failed, fmt.Sprintf("%d gaps, %d duplicates", cu.Gaps, cu.Duplicates))
	}
	rep.Pass = len(rep.Failed) == 0
	if err := rep.write(cfg, stdout); err != nil {
		return err
	}
	if !rep.Pass {
		return errFailedChecks
	}
	return nil
}

var errCaughtUp = errors.New("caught up")

// waitEdgeHead waits until the edge at base reports (in /readyz) a cursor of at least seq.
func waitEdgeHead(ctx context.Context, client *http.Client, base string, seq uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		head, err := edgeHead(ctx, client, base)
		if err == nil && head >= seq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the edge at %s is at cursor %d (%v), not yet %d, after %v", base, head, err, seq, timeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// edgeHead returns the cursor of the newest update an edge has received, from its /readyz.
func edgeHead(ctx context.Context, client *http.Client, base string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var ready struct{ Cursor string }
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil {
		return 0, fmt.Errorf("%s/readyz: %w", base, err)
	}
	return strconv.ParseUint(ready.Cursor, 10, 64)
}

// catchup is the one client of -catchup.
type catchup struct {
	cs     *conns
	rep    *catchupReport
	topics []string
	tr     tracker
	began  time.Time
}

// observe counts one update and returns errCaughtUp once the client has the backlog and is live.
func (c *catchup) observe(topic []byte, cursor uint64, data []byte) error {
	now := time.Now()
	r := c.rep
	r.Received++
	if r.Received == 1 {
		r.FirstMs = msSince(c.began, now)
	}
	f := parsePayload(data)
	if string(f.run) != c.cs.run {
		return nil
	}
	switch v, missed := c.tr.observe(&c.cs.in, topic, cursor, f.n, f.hasN); v {
	case gap:
		r.Gaps++
		r.Missed += int64(missed)
	case same, older, repeat:
		r.Duplicates++
		return nil
	}
	if cursor <= r.LastBacklog {
		if r.BacklogGot++; r.BacklogGot == int64(r.Backlog) {
			r.BacklogMs = msSince(c.began, now)
		}
	} else if !r.Live && f.ts >= c.began.UnixNano() {
		r.Live = true
		r.LiveMs = msSince(c.began, now)
	}
	if r.Live && r.BacklogGot >= int64(r.Backlog) {
		return errCaughtUp
	}
	return nil
}

func msSince(t0, t time.Time) float64 { return float64(t.Sub(t0)) / float64(time.Millisecond) }

func (c *catchup) stream(ctx context.Context) error {
	s, err := subscriber.DialStream(ctx, subscriber.StreamOptions{URL: c.cs.cfg.URLs[0], Transport: c.cs.cfg.Transport,
		Topics: c.topics, Cursor: c.rep.FromCursor, Dial: c.cs.dial(0), TLSConfig: c.cs.cfg.tls, BufferSize: c.cs.cfg.ReadBuffer})
	c.cs.st.requests.Add(1)
	if err != nil {
		return err
	}
	c.rep.ConnectMs = msSince(c.began, time.Now())
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		m, err := s.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if m.Reset {
			return errors.New("the edge answered with a reset: the cursor is older than the stream keeps")
		}
		if err := c.observe(m.Topic, m.Cursor, m.Data); err != nil {
			return err
		}
	}
}

func (c *catchup) longPoll(ctx context.Context) error {
	client := c.cs.httpClient(0)
	base := c.cs.cfg.URLs[0] + "/api/poll?" + url.Values{"topic": c.topics}.Encode() + "&limit=10000&timeout=" +
		c.cs.cfg.LongPollTimeout.String()
	cursor := c.rep.FromCursor
	for {
		a, err := c.cs.get(ctx, client, base+"&cursor="+strconv.FormatUint(cursor, 10), time.Minute)
		if err != nil {
			return err
		}
		if c.rep.ConnectMs == 0 {
			c.rep.ConnectMs = msSince(c.began, time.Now())
		}
		if a.Reset {
			return errors.New("the edge answered with a reset: the cursor is older than the stream keeps")
		}
		for _, m := range a.Updates {
			u, _ := wire.ParseCursor([]byte(m.Cursor))
			if err := c.observe([]byte(m.Topic), u, m.Data); err != nil {
				return err
			}
		}
		if n, ok := wire.ParseCursor([]byte(a.Cursor)); ok && n > cursor {
			cursor = n
		}
	}
}
