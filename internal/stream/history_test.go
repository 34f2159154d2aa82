package stream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

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
