package push

import (
	"sync"
	"time"
)

// fanOutLog holds the updates published, in cursor order, between the ingest that appends them and the shards that
// fan them out, each at its own position: a ring, so that ingest never waits for fan-out. A shard that falls a whole
// ring behind finds its position overwritten and catches up from the cache instead (it conflates).
type fanOutLog struct {
	mu      sync.Mutex
	buf     []*Update // a power of two long
	written uint64    // updates appended so far; the next one goes to buf[written&mask]
	floor   uint64    // positions before it are gone (the stream was recreated)
	done    uint64    // positions before it every reader has passed, and are cleared: the log pins nothing they hold
}

func newFanOutLog(size int) *fanOutLog {
	n := 1
	for n < size {
		n <<= 1
	}
	return &fanOutLog{buf: make([]*Update, n)}
}

// append adds u at the end. The hub calls it holding its cache lock, so that the log's end and the cache's head
// are read together.
func (l *fanOutLog) append(u *Update) {
	l.mu.Lock()
	l.buf[l.written&uint64(len(l.buf)-1)] = u
	l.written++
	l.mu.Unlock()
}

// end returns the position after the last update appended.
func (l *fanOutLog) end() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}

// read copies into dst the updates from position pos on, as many as fit, and returns how many. lost is true when
// pos has been overwritten: the reader is a whole ring behind.
func (l *fanOutLog) read(pos uint64, dst []*Update) (n int, lost bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pos < l.floor || l.written-pos > uint64(len(l.buf)) {
		return 0, true
	}
	mask := uint64(len(l.buf) - 1)
	for ; n < len(dst) && pos < l.written; n, pos = n+1, pos+1 {
		dst[n] = l.buf[pos&mask]
	}
	return n, false
}

// release clears the entries before pos, which every reader has passed, so that the log keeps no update alive
// longer than the slowest fan-out needs it.
func (l *fanOutLog) release(pos uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mask := uint64(len(l.buf) - 1)
	for l.done = max(l.done, l.written-min(l.written, uint64(len(l.buf)))); l.done < pos; l.done++ {
		l.buf[l.done&mask] = nil
	}
}

// oldest returns the position of the oldest update the log still holds.
func (l *fanOutLog) oldest() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.floor, l.written-min(l.written, uint64(len(l.buf))))
}

// clear forgets every update (the stream was recreated): positions go on from where they are, and a reader behind
// them finds its position lost.
func (l *fanOutLog) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buf)
	l.floor = l.written
}

// age returns how long ago the update at position pos was received, or zero if there is none there (yet or
// anymore).
func (l *fanOutLog) age(pos uint64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pos >= l.written || pos < l.floor || l.written-pos > uint64(len(l.buf)) {
		return 0
	}
	return time.Since(l.buf[pos&uint64(len(l.buf)-1)].Recv)
}
