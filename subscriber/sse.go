package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

// runSSE follows one SSE stream until it ends.
func (c *Client) runSSE(ctx context.Context, base string, handle func(Update) error) ended {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	since := c.Cursor()
	var q []string
	if since > 0 {
		q = []string{"lastEventId", strconv.FormatUint(since, 10)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+c.topicQuery(q...).Encode(), nil)
	if err != nil {
		return permanent(err)
	}
	if err := c.authorize(ctx, req.Header); err != nil {
		return failed(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if since > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(since, 10))
	}
	wd := newWatchdog(c.idleTimeout, cancel)
	defer wd.stop()
	resp, err := c.http.Do(req)
	if err != nil {
		return failed(wd.err(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.badCursor(base, since, c.httpFailure(resp))
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "text/event-stream" {
		return failed(errors.New("subscriber: " + base + "/sse answered " + strconv.Quote(ct) + ", not an event stream"))
	}
	c.live(base, since)

	events := wire.NewEventReader(kickReader{r: resp.Body, w: wd}, maxMessage)
	end := ended{live: true}
	var retry time.Duration // the stream's last retry: field
read:
	for {
		ev, err := events.Next()
		if err != nil {
			end.err = wd.err(err)
			break
		}
		if ev.Retry > 0 {
			retry = ev.Retry
		}
		if len(ev.Data) == 0 {
			continue // a hello, a heartbeat: nothing to deliver
		}
		switch string(ev.Type) {
		case wire.EventClose:
			var msg wire.Close
			json.Unmarshal(ev.Data, &msg)
			c.emit(Event{Kind: Closed, URL: base, Reason: msg.Reason, Message: msg.Message})
			end.err = closeError(msg.Reason, msg.Message)
			end.soon = msg.Reason == "server_restart" || msg.Reason == "stream_recreated" ||
				msg.Reason == "token_expired" && c.token != nil
			if msg.Reason == "slow_consumer" {
				end.atLeast = tryLaterWait
			}
			break read // the edge ends the stream after it
		case wire.EventReset:
			var msg wire.Message
			json.Unmarshal(ev.Data, &msg)
			cursor, _ := wire.ParseCursor([]byte(msg.Cursor))
			c.reset(base, cursor, msg.Reason)
		case wire.EventConflated:
			var msg wire.Message
			json.Unmarshal(ev.Data, &msg)
			c.conflated(base, msg.Skipped)
		case wire.EventError:
			var msg wire.ErrorBody
			json.Unmarshal(ev.Data, &msg)
			e := &Error{Code: msg.Code, Message: msg.Error}
			if permanentCode(msg.Code) {
				return permanent(e)
			}
			c.log.Warn("the edge reported an error", "url", base, "err", e)
		default:
			cursor, ok := wire.ParseCursor(ev.ID)
			if !ok {
				c.log.Warn("SSE event without a cursor: skipped", "url", base, "id", string(ev.ID), "event", string(ev.Type))
				continue
			}
			// The event reader reuses its buffer: the handler may keep Data.
			data := []byte(string(ev.Data))
			topic, kind := peek(data)
			if len(ev.Type) > 0 && string(ev.Type) != "message" {
				kind = ev.Type
			}
			if err := c.deliver(Update{Topic: string(topic), Cursor: cursor, Kind: string(kind), Data: data}, handle); err != nil {
				return handlerErr(err)
			}
		}
	}
	if end.err == nil {
		end.err = io.ErrUnexpectedEOF
		if ctx.Err() != nil {
			end.err = wd.err(ctx.Err())
		}
	}
	// Like EventSource, wait at least what the stream's last retry: field asked for.
	end.atLeast = max(end.atLeast, retry)
	return end
}
