package stream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natstest"
	"github.com/livepush/livepush/internal/stream"
)

func startStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	n := natstest.Start(t, stream.Config{})
	return n.NC, n.JS
}

// Reading merges the filters' messages in sequence order, once each even where filters overlap, across batch
// boundaries and byte limits, and stops once past until.
func TestHistoryReadsInOrderOncePerMessage(t *testing.T) {
	nc, js := startStream(t)
	subjects := []string{"market.A", "market.B", "sports.nba.g1", "market.C"}
	var seqs = map[string][]uint64{}
	for i := range 200 {
		subj := subjects[i%len(subjects)]
		ack, err := js.Publish(t.Context(), subj, fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		seqs[subj] = append(seqs[subj], ack.Sequence)
	}
	want := func(after, until uint64, subjs ...string) []uint64 {
		var w []uint64
		for _, s := range subjs {
			for _, q := range seqs[s] {
				if q > after && q <= until {
					w = append(w, q)
				}
			}
		}
		slices.Sort(w)
		return w
	}
	for _, tc := range []struct {
		name         string
		filters      []string
		after, until uint64
		batch, bytes int
		subjects     []string
	}{
		{"one literal", []string{"market.A"}, 0, 200, 0, 0, []string{"market.A"}},
		{"two literals, small batches", []string{"market.A", "sports.nba.g1"}, 10, 200, 3, 0, []string{"market.A", "sports.nba.g1"}},
		{"overlapping filters", []string{"market.*", "market.B", "market.>"}, 0, 200, 7, 0, []string{"market.A", "market.B", "market.C"}},
		{"tiny byte budget", []string{"market.*", "sports.>"}, 50, 200, 0, 1, subjects},
		{"until in the middle", []string{"market.*"}, 0, 100, 16, 0, []string{"market.A", "market.B", "market.C"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := stream.NewHistory(nc, "LIVEPUSH")
			h.Batch, h.MaxBytes = tc.batch, tc.bytes
			var got []uint64
			reached, err := h.Read(t.Context(), tc.filters, tc.after, tc.until, func(m stream.Msg) error {
				got = append(got, m.Seq)
				if !slices.Contains(tc.subjects, m.Subject) || string(m.Data) == "" {
					t.Errorf("message %d on %s: %q", m.Seq, m.Subject, m.Data)
				}
				return nil
			})
			if err != nil || reached < tc.until {
				t.Fatalf("Read: reached %d, %v", reached, err)
			}
			if w := want(tc.after, tc.until, tc.subjects...); !slices.Equal(got, w) {
				t.Errorf("got %v\nwant %v", got, w)
			}
		})
	}
}

// A read leaves nothing on the server: no consumer, whether it ends by itself, by an error of the caller, or
// half-way through a batch.
func TestHistoryLeavesNoConsumer(t *testing.T) {
	nc, js := startStream(t)
	for i := range 50 {
		js.Publish(t.Context(), "market.A", fmt.Appendf(nil, `{"n":%d}`, i))
	}
	h := stream.NewHistory(nc, "LIVEPUSH")
	h.Batch = 8
	subsBefore := nc.NumSubscriptions() // the connection's own response inbox, which publishing opened
	stop := errors.New("enough")
	n := 0
	_, err := h.Read(t.Context(), []string{"market.A"}, 0, 50, func(stream.Msg) error {
		if n++; n == 11 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 11 {
		t.Fatalf("Read stopped after %d with %v", n, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Read(ctx, []string{"market.A"}, 0, 50, func(stream.Msg) error { return nil }); err == nil {
		t.Error("Read with a cancelled context succeeded")
	}
	str, _ := js.Stream(t.Context(), "LIVEPUSH")
	if c := str.CachedInfo().State.Consumers; c != 0 {
		t.Errorf("the stream has %d consumers after reads, want 0", c)
	}
	if subs := nc.NumSubscriptions(); subs != subsBefore {
		t.Errorf("the connection holds %d subscriptions after reads, %d before", subs, subsBefore)
	}
}

// A filter nothing matches, or a start past the end, is an empty read, not an error.
func TestHistoryEmpty(t *testing.T) {
	nc, js := startStream(t)
	ack, _ := js.Publish(t.Context(), "market.A", []byte(`{}`))
	h := stream.NewHistory(nc, "LIVEPUSH")
	for _, tc := range []struct {
		filter string
		after  uint64
	}{{"market.ZZZ", 0}, {"market.A", ack.Sequence}} {
		reached, err := h.Read(t.Context(), []string{tc.filter}, tc.after, ack.Sequence, func(m stream.Msg) error {
			t.Errorf("got %d on %s", m.Seq, m.Subject)
			return nil
		})
		if err != nil || reached != ack.Sequence {
			t.Errorf("%s after %d: reached %d, %v", tc.filter, tc.after, reached, err)
		}
	}
}

// A producer's headers travel with its message, and a direct get answers with them ahead of the server's own. A
// producer naming its headers Status, Nats-Sequence or Nats-Subject, even putting a status in its header line,
// must not change what a read returns: each message once, under its own subject and sequence, and the read ends.
func TestHistoryIgnoresProducersHeaders(t *testing.T) {
	n := natstest.Start(t, stream.Config{})
	pub := func(subject string, h nats.Header) uint64 {
		t.Helper()
		ack, err := n.JS.PublishMsg(t.Context(), &nats.Msg{Subject: subject, Header: h, Data: []byte(`{"p":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	type msg struct {
		subject string
		seq     uint64
	}
	var want []msg
	add := func(subject string, seq uint64) { want = append(want, msg{subject, seq}) }
	add("market.A", pub("market.A", nil))
	add("market.B", pub("market.B", nats.Header{"Nats-Sequence": {"999999"}, "Nats-Subject": {"market.A"}}))
	third := pub("market.A", nats.Header{"Status": {"503"}, "Nats-Num-Pending": {"0"}})
	add("market.A", third)
	// A header line with a status, as a raw client can send it.
	raw, err := net.Dial("tcp", strings.TrimPrefix(n.URL, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hdr := "NATS/1.0 503 Forged\r\nNats-Sequence: 1\r\n\r\n"
	payload := `{"p":2}`
	fmt.Fprintf(raw, "CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB market.C %d %d\r\n%s%s\r\n",
		len(hdr), len(hdr)+len(payload), hdr, payload)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		str, err := n.JS.Stream(t.Context(), "LIVEPUSH")
		if err != nil {
			t.Fatal(err)
		}
		if str.CachedInfo().State.LastSeq == third+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the raw client's message was not stored")
		}
	}
	add("market.C", third+1)
	add("market.A", pub("market.A", nats.Header{"Nats-Sequence": {"1"}}))
	last := third + 2
	h := stream.NewHistory(n.NC, "LIVEPUSH")
	h.Batch = 2
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []msg
	reached, err := h.Read(ctx, []string{"market.>"}, 0, last, func(m stream.Msg) error {
		got = append(got, msg{m.Subject, m.Seq})
		return nil
	})
	if err != nil || reached < last {
		t.Fatalf("Read: reached %d of %d, %v", reached, last, err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}
