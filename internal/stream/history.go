package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// History reads the stream's past with batched direct gets ($JS.API.DIRECT.GET): a read creates no consumer and
// leaves nothing on the server when it ends, however it ends. A consumer per read would cost a JetStream API call
// to create it and linger for its inactivity threshold after a client gave up; enough anonymous resumes then
// exhaust the server's consumer limit, and every edge's own consumer with it.
//
// Direct gets may be answered by any replica of the stream, or a mirror, which can lag behind the leader. A replica
// only ever lacks the newest messages, never one in the middle, so a read that runs out early asks the leader once
// whether it really holds nothing more up to the sequence the caller needs.
type History struct {
	nc     *nats.Conn
	stream string

	// Batch is the most messages one request returns. Zero: 256.
	Batch int
	// MaxBytes bounds what one read holds in memory at a time, across its filters. Zero: 1 MiB.
	MaxBytes int
	// RequestTimeout bounds one request's answer. Zero: 5s.
	RequestTimeout time.Duration
}

// NewHistory returns a reader of the stream named name over nc.
func NewHistory(nc *nats.Conn, name string) *History {
	return &History{nc: nc, stream: name}
}

// Msg is one stored message.
type Msg struct {
	Subject string
	Seq     uint64
	Data    []byte
}

// ErrNoDirectGet is returned when nobody answers direct gets: the stream does not allow them (allow_direct).
var ErrNoDirectGet = errors.New("stream: direct get not answered (is allow_direct set on the stream?)")

// Read calls each, in sequence order and once per message, for every message after sequence after whose subject
// matches one of filters (NATS subject filters, which may overlap), until it has passed every such message up to
// sequence until, or the stream has no more. It returns the sequence up to which it has passed every matching
// message: at least until, unless each or the read failed. An error from each stops the read and is returned.
func (h *History) Read(ctx context.Context, filters []string, after, until uint64, each func(Msg) error) (uint64, error) {
	if len(filters) == 0 {
		return max(after, until), nil
	}
	budget := h.maxBytes() / (2 * len(filters)) // two batches per filter: one delivered, one on its way
	its := make([]*filterReader, len(filters))
	for i, f := range filters {
		its[i] = &filterReader{h: h, filter: f, next: after + 1, maxBytes: max(budget, 16<<10)}
		defer its[i].close()
	}
	reached := after
	for {
		// The reader whose next message comes first; fetch for those that have none buffered.
		var first *filterReader
		for _, it := range its {
			if err := it.fill(ctx, until); err != nil {
				return reached, err
			}
			if len(it.buf) > 0 && (first == nil || it.buf[0].Seq < first.buf[0].Seq) {
				first = it
			}
		}
		if first == nil {
			return max(reached, until), nil // every filter has run out
		}
		m := first.buf[0]
		first.buf[0] = Msg{} // let its bytes go once delivered
		first.buf = first.buf[1:]
		if m.Seq <= reached {
			continue // overlapping filters: delivered already
		}
		if m.Seq > until {
			// Everything matching up to until has been passed; stop rather than read on into what the caller
			// has from elsewhere.
			return max(reached, until), nil
		}
		if err := each(m); err != nil {
			return reached, err
		}
		reached = m.Seq
	}
}

func (h *History) maxBytes() int {
	if h.MaxBytes > 0 {
		return h.MaxBytes
	}
	return 1 << 20
}

func (h *History) batch() int {
	if h.Batch > 0 {
		return h.Batch
	}
	return 256
}

func (h *History) timeout() time.Duration {
	if h.RequestTimeout > 0 {
		return h.RequestTimeout
	}
	return 5 * time.Second
}

// filterReader reads the messages of one filter, a batch at a time. It keeps the next batch's request in flight
// while the caller works through the current one, so reading and delivering overlap.
type filterReader struct {
	h        *History
	filter   string
	next     uint64 // the first sequence not asked for yet
	maxBytes int
	buf      []Msg
	ahead    *nats.Subscription // the answer to a request for the batch from next, if one is in flight
	drained  bool               // the replica that answered last has nothing after next
	done     bool               // nothing matches from next on up to the sequence the read needs, as the leader sees it
}

// fill fetches more if nothing is buffered and more may match up to until.
func (r *filterReader) fill(ctx context.Context, until uint64) error {
	if len(r.buf) > 0 || r.done {
		return nil
	}
	if !r.drained {
		more, err := r.fetch(ctx)
		if err != nil {
			return err
		}
		r.drained = !more
		if more && r.next <= until {
			if err := r.request(); err != nil { // the next batch, while this one is delivered
				return err
			}
		}
		if len(r.buf) > 0 {
			return nil
		}
	}
	if r.next > until {
		r.done = true
		return nil
	}
	// The replica that answered has nothing more up to until. If it lags, the leader does: ask it.
	m, ok, err := r.h.leaderNext(ctx, r.filter, r.next)
	if err != nil {
		return err
	}
	r.done = !ok || m.Seq > until
	if ok {
		r.buf = append(r.buf, m) // one past until stops Read
		r.next, r.drained = m.Seq+1, false
	}
	return nil
}

// request asks for the batch from r.next; fetch collects the answer.
func (r *filterReader) request() error {
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{r.next, r.filter, r.h.batch(), r.maxBytes})
	inbox := r.h.nc.NewRespInbox()
	sub, err := r.h.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	if err := r.h.nc.PublishRequest("$JS.API.DIRECT.GET."+r.h.stream, inbox, req); err != nil {
		sub.Unsubscribe()
		return err
	}
	r.ahead = sub
	return nil
}

// close drops a request in flight.
func (r *filterReader) close() {
	if r.ahead != nil {
		r.ahead.Unsubscribe()
		r.ahead = nil
	}
}

// fetch collects one batch from r.next, asking for it first unless a request is in flight. It reports whether the
// server said more messages match after it.
func (r *filterReader) fetch(ctx context.Context) (more bool, err error) {
	if r.ahead == nil {
		if err := r.request(); err != nil {
			return false, err
		}
	}
	sub := r.ahead
	defer r.close()
	ctx, cancel := context.WithTimeout(ctx, r.h.timeout())
	defer cancel()
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, fmt.Errorf("stream: direct get from %d on %s: %w", r.next, r.filter, err)
		}
		// A stored message comes with its producer's headers, and the server appends its own after them: the
		// server's are the last of each name. A producer's Status, Nats-Sequence or Nats-Subject, even a status in
		// its header line, must not pass for the server's. Only a stored message carries Nats-Stream.
		if serverHeader(msg.Header, "Nats-Stream") != "" {
			seq, err := strconv.ParseUint(serverHeader(msg.Header, "Nats-Sequence"), 10, 64)
			if err != nil {
				return false, fmt.Errorf("stream: direct get: bad Nats-Sequence %q", serverHeader(msg.Header, "Nats-Sequence"))
			}
			r.buf = append(r.buf, Msg{Subject: serverHeader(msg.Header, "Nats-Subject"), Seq: seq, Data: msg.Data})
			r.next = seq + 1
			continue
		}
		switch status := msg.Header.Get("Status"); status {
		case "204": // end of batch
			return msg.Header.Get("Nats-Num-Pending") != "0", nil
		case "404": // nothing from r.next on
			return false, nil
		case "503":
			return false, ErrNoDirectGet
		default:
			return false, fmt.Errorf("stream: direct get: %s %s", status, msg.Header.Get("Description"))
		}
	}
}

// serverHeader is the last value of header key: the one the server appended, where a producer set it too.
func serverHeader(h nats.Header, key string) string {
	v := h.Values(key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// leaderNext asks the stream's leader for the first message at or after seq matching filter.
func (h *History) leaderNext(ctx context.Context, filter string, seq uint64) (Msg, bool, error) {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, filter})
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	resp, err := h.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+h.stream, req)
	if err != nil {
		return Msg{}, false, fmt.Errorf("stream: get from %d on %s: %w", seq, filter, err)
	}
	var body struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &body); err != nil {
		return Msg{}, false, fmt.Errorf("stream: get: %w", err)
	}
	switch {
	case body.Error != nil && body.Error.Code == 404:
		return Msg{}, false, nil
	case body.Error != nil:
		return Msg{}, false, fmt.Errorf("stream: get: %s (%d)", body.Error.Description, body.Error.ErrCode)
	case body.Message == nil:
		return Msg{}, false, errors.New("stream: get: empty answer")
	}
	return Msg{Subject: body.Message.Subject, Seq: body.Message.Seq, Data: body.Message.Data}, true, nil
}
