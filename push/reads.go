package push

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBusy is returned when a resume or a long poll needs to read the stream and this edge already runs as many such
// reads as it allows, in all or for the client's address, for longer than a client should wait: come back later.
var ErrBusy = errors.New("push: too many stream reads in progress")

// readGate bounds the reads of the stream's history that clients make this edge run at once, in all and per client
// address. A crowd resuming from old cursors (every client of a lost edge, or one stranger with a script) then
// queues here instead of piling requests on NATS, and one address cannot take every slot.
type readGate struct {
	max, perIP int
	wait       time.Duration

	mu    sync.Mutex
	total int
	byIP  map[string]int
	freed chan struct{} // closed, and replaced, whenever a slot is released
}

func newReadGate(max, perIP int, wait time.Duration) *readGate {
	return &readGate{max: max, perIP: perIP, wait: wait, byIP: make(map[string]int), freed: make(chan struct{})}
}

// acquire takes a slot for a read on behalf of ip, waiting up to the gate's wait for one to free. It returns the
// release func, ErrBusy, or ctx's error.
func (g *readGate) acquire(ctx context.Context, ip string) (release func(), err error) {
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	for {
		g.mu.Lock()
		if g.total < g.max && g.byIP[ip] < g.perIP {
			g.total++
			g.byIP[ip]++
			g.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { g.release(ip) }) }, nil
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-timer.C:
			return nil, ErrBusy
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (g *readGate) release(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.byIP[ip]--; g.byIP[ip] <= 0 {
		delete(g.byIP, ip)
	}
	close(g.freed)
	g.freed = make(chan struct{})
}

// inUse returns the reads in progress.
func (g *readGate) inUse() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// replay reads the stream's history for a client at address remote, within the edge's bounds on concurrent reads;
// the read itself, once its turn has come, is bounded by timeout if that is not zero. Errors: ErrBusy, and those of
// History.Replay.
func (h *Hub) replay(ctx context.Context, remote string, timeout time.Duration, after, until uint64, patterns []string, each func(*Update) error) (uint64, error) {
	release, err := h.reads.acquire(ctx, remote)
	if errors.Is(err, context.DeadlineExceeded) {
		err = ErrBusy // the caller's own bound passed while it waited for its turn
	}
	if err != nil {
		if errors.Is(err, ErrBusy) {
			h.metrics.refused.WithLabelValues("stream_reads_busy").Inc()
		}
		return after, err
	}
	defer release()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// A topic the cache would refuse (past its limits) is not served live either: a replay skips it too.
	return h.history.Replay(ctx, after, until, patterns, func(u *Update) error {
		if !h.cachesTopic(u) {
			return nil
		}
		return each(u)
	})
}
