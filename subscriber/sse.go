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

	sse "github.com/tmaxmax/go-sse"
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

	body := &retryReader{r: kickReader{r: resp.Body, w: wd}}
	end := ended{live: true}
read:
	for ev, err := range sse.Read(body, &sse.ReadConfig{MaxEventSize: maxMessage}) {
		if err != nil {
			end.err = wd.err(err)
			break
		}
		switch ev.Type {
		case "close":
			var msg struct{ Reason, Message string }
			json.Unmarshal([]byte(ev.Data), &msg)
			c.emit(Event{Kind: Closed, URL: base, Reason: msg.Reason, Message: msg.Message})
			end.err = closeError(msg.Reason, msg.Message)
			end.soon = msg.Reason == "server_restart" || msg.Reason == "stream_recreated" ||
				msg.Reason == "token_expired" && c.token != nil
			if msg.Reason == "slow_consumer" {
				end.atLeast = tryLaterWait
			}
			break read // the edge ends the stream after it
		case "reset":
			var msg struct {
				Cursor json.Number
				Reason string
			}
			json.Unmarshal([]byte(ev.Data), &msg)
			cursor, _ := strconv.ParseUint(msg.Cursor.String(), 10, 64)
			c.reset(base, cursor, msg.Reason)
		case "error":
			var msg struct{ Error, Code, Message string }
			json.Unmarshal([]byte(ev.Data), &msg)
			e := &Error{Code: msg.Code, Message: cmpOr(msg.Message, msg.Error)}
			if permanentCode(msg.Code) {
				return permanent(e)
			}
			c.log.Warn("the edge reported an error", "url", base, "err", e)
		default:
			if ev.Data == "" {
				continue
			}
			cursor, err := strconv.ParseUint(ev.LastEventID, 10, 64)
			if err != nil {
				c.log.Warn("SSE event without a cursor: skipped", "url", base, "id", ev.LastEventID, "event", ev.Type)
				continue
			}
			data := []byte(ev.Data)
			topic, kind := peek(data)
			if ev.Type != "" && ev.Type != "message" {
				kind = ev.Type
			}
			if err := c.deliver(Update{Topic: topic, Cursor: cursor, Kind: kindOr(kind), Data: data}, handle); err != nil {
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
	end.atLeast = max(end.atLeast, body.retry)
	return end
}

// retryReader notes the stream's retry: fields, which sse.Read parses but does not pass on. It looks at each byte
// once, keeping nothing of a line that does not start like "retry:".
type retryReader struct {
	r     io.Reader
	line  [16]byte // the start of the current line
	n     int      // bytes of it kept; -1 once it cannot be a retry field
	retry time.Duration
}

func (r *retryReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	for _, b := range p[:n] {
		switch {
		case b == '\n' || b == '\r':
			if r.n > 0 {
				r.field(r.line[:r.n])
			}
			r.n = 0
		case r.n < 0:
		case r.n == len(r.line):
			r.n = -1
		default:
			r.line[r.n] = b
			r.n++
			if r.n <= len("retry:") && b != "retry:"[r.n-1] {
				r.n = -1
			}
		}
	}
	return n, err
}

func (r *retryReader) field(line []byte) {
	if len(line) <= len("retry:") {
		return
	}
	v := line[len("retry:"):]
	if v[0] == ' ' {
		v = v[1:]
	}
	if ms, err := strconv.ParseUint(string(v), 10, 32); err == nil {
		r.retry = time.Duration(ms) * time.Millisecond
	}
}
