package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

var errDraining = errors.New("subscriber: the long poll came back at once and empty: the edge is draining")

// runPoll long-polls one edge until a request fails. Each answer carries the edge's cursor, which the next request
// resumes from: for the client's topics nothing happened between the last update delivered and it.
func (c *Client) runPoll(ctx context.Context, base string, handle func(Update) error) ended {
	next := c.Cursor()
	since := next
	live := false
	for {
		var q []string
		sent := next
		if next > 0 {
			q = []string{"cursor", strconv.FormatUint(next, 10)}
		}
		q = append(q, "timeout", pollWait.String())
		began := time.Now()
		answer, end := c.poll(ctx, base+"/api/poll?"+c.topicQuery(q...).Encode())
		if answer == nil {
			end = c.badCursor(base, next, end)
			end.live = live
			return end
		}
		if !live {
			live = true
			c.live(base, since)
		}
		server, _ := wire.ParseCursor([]byte(answer.Cursor))
		if answer.Reset {
			c.reset(base, server, cmpOr(answer.Reason, "cursor older than the stream keeps"))
			next = 0
		}
		for _, m := range answer.Updates {
			u, err := updateOf(m)
			if err != nil {
				c.log.Warn("unreadable update: skipped", "url", base, "err", err)
				continue
			}
			if err := c.deliver(u, handle); err != nil {
				return handlerErr(err)
			}
		}
		// An edge behind the cursor sent (one that has not caught up with the stream yet) answers with its own
		// cursor: keep ours, or the next answer would repeat what was delivered.
		next = max(next, server, c.Cursor())
		if sent > 0 && len(answer.Updates) == 0 && !answer.Reset && time.Since(began) < 250*time.Millisecond {
			// A long poll answered at once with nothing: the edge is draining (it sends its clients elsewhere
			// that way) or misbehaving. Move on, without spinning.
			return ended{err: errDraining, live: true, atLeast: time.Second}
		}
	}
}

// poll makes one long-poll request. It returns the answer, or nil and how the connection ended.
func (c *Client) poll(ctx context.Context, u string) (*wire.PollAnswer, ended) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wd := newWatchdog(pollWait+c.idleTimeout, cancel)
	defer wd.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, permanent(err)
	}
	if err := c.authorize(ctx, req.Header); err != nil {
		return nil, failed(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, failed(wd.err(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.httpFailure(resp)
	}
	var answer wire.PollAnswer
	body := io.LimitReader(resp.Body, maxMessage)
	if err := json.NewDecoder(body).Decode(&answer); err != nil {
		return nil, failed(fmt.Errorf("subscriber: poll answer: %w", wd.err(err)))
	}
	return &answer, ended{}
}
