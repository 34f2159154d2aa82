package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publisher writes quote-like payloads into the stream through NATS, as the feeds do, with what pushbench checks on
// the receiving side: "run" (this run), "n" (1, 2, 3… per topic) and "ts" (stamped when the payload is made, just
// before it is sent). Publishes are asynchronous, with at most -publish-window awaiting their acknowledgement, so a
// single publisher reaches tens of thousands per second.
type publisher struct {
	cfg      *Config
	runID    string
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects []string
	n        []uint64 // per subject: the last number published

	logMu sync.Mutex
	log   published // what was published since the workers were last told (staleness)

	sent, acked, failed atomic.Int64
	lastSeq             atomic.Uint64 // stream sequence of the newest acknowledged publish
}

func newRunID() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// dialPublisher connects to NATS and checks that the stream exists.
func dialPublisher(ctx context.Context, cfg *Config, run string) (*publisher, error) {
	if err := cfg.natsConn.Check(); err != nil {
		return nil, err
	}
	auth, err := cfg.natsConn.AuthOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(cfg.natsConn.URL, append(auth, nats.Name("pushbench"), nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", cfg.NATS, err)
	}
	p := &publisher{cfg: cfg, runID: run, nc: nc}
	p.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { p.failed.Add(1) }),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, _ *nats.Msg, ack *jetstream.PubAck) {
			p.acked.Add(1)
			for last := p.lastSeq.Load(); ack.Sequence > last; last = p.lastSeq.Load() {
				if p.lastSeq.CompareAndSwap(last, ack.Sequence) {
					break
				}
			}
		}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.js.Stream(sctx, cfg.Stream); err != nil {
		nc.Close()
		return nil, fmt.Errorf("stream %s on %s: %w (start the edge first: it creates the stream)", cfg.Stream, cfg.NATS, err)
	}
	for i := range cfg.Symbols {
		p.subjects = append(p.subjects, "market."+symbolName(i, cfg.Symbols))
	}
	p.n = make([]uint64, len(p.subjects))
	return p, nil
}

// streamLast returns the stream's last sequence: the cursor of the newest update.
func (p *publisher) streamLast(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// payload makes the next update of subject i; ts is its "ts", in Unix ns.
func (p *publisher) payload(i int) (data []byte, ts int64) {
	p.n[i]++
	n := p.n[i]
	sym := p.subjects[i][len("market."):]
	price := 100 + float64(n%10000)/100
	b := make([]byte, 0, max(256, p.cfg.PayloadBytes+16))
	b = append(b, `{"topic":"`...)
	b = append(b, p.subjects[i]...)
	b = append(b, `","kind":"quote","symbol":"`...)
	b = append(b, sym...)
	b = append(b, `","price":`...)
	b = strconv.AppendFloat(b, price, 'f', 2, 64)
	b = append(b, `,"bid":`...)
	b = strconv.AppendFloat(b, price-0.01, 'f', 2, 64)
	b = append(b, `,"ask":`...)
	b = strconv.AppendFloat(b, price+0.01, 'f', 2, 64)
	b = append(b, `,"run":"`...)
	b = append(b, p.runID...)
	b = append(b, `","n":`...)
	b = strconv.AppendUint(b, n, 10)
	b = append(b, `,"ts":"`...)
	now := time.Now().UTC()
	b = now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if pad := p.cfg.PayloadBytes - len(b) - len(`,"pad":""}`); pad > 0 {
		b = append(b, `,"pad":"`...)
		for range pad {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return append(b, '}'), now.UnixNano()
}

// publish sends the next update of subject i.
func (p *publisher) publish(i int) {
	data, ts := p.payload(i)
	p.logMu.Lock()
	p.log.add(i, p.n[i], ts) // a failed publish too: its n will never arrive, and whoever waits for it is late
	p.logMu.Unlock()
	if _, err := p.js.PublishAsync(p.subjects[i], data, jetstream.WithStallWait(10*time.Second)); err != nil {
		p.failed.Add(1)
		return
	}
	p.sent.Add(1)
}

// published returns what was published since it was last called.
func (p *publisher) published() published {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	batch := p.log
	p.log = published{}
	return batch
}

// run publishes at rate until ctx ends: round robin over the subjects in order (each gets rate/len per second,
// evenly spaced), or with -publish-pattern random to a subject drawn at random each time. Behind schedule (a busy
// machine), it publishes as fast as it can: the report shows the rate reached.
func (p *publisher) run(ctx context.Context, rate float64, subjects []int) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	r := rand.New(rand.NewPCG(uint64(p.cfg.Seed), 0x9e3779b9))
	random := p.cfg.PublishPattern == "random"
	start := time.Now()
	var done int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			due := int64(rate * now.Sub(start).Seconds())
			for ; done < due && ctx.Err() == nil; done++ {
				i := int(done % int64(len(subjects)))
				if random {
					i = r.IntN(len(subjects))
				}
				p.publish(subjects[i])
			}
		}
	}
}

// all returns the numbers of every subject.
func (p *publisher) all() []int {
	s := make([]int, len(p.subjects))
	for i := range s {
		s[i] = i
	}
	return s
}

// wait waits until every publish is acknowledged or failed, at most timeout.
func (p *publisher) wait(timeout time.Duration) bool {
	select {
	case <-p.js.PublishAsyncComplete():
		return true
	case <-time.After(timeout):
		return false
	}
}

func (p *publisher) close() {
	p.wait(5 * time.Second)
	p.nc.Close()
}
