package push

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// writerPool writes to the connections of one shard's subscribers. A subscriber with something to write waits in
// the ready queue; a writer takes it, makes one write, and puts it back at the end if more has been queued since. Ten
// thousand busy connections so take turns on a few goroutines instead of being ten thousand runnable goroutines that
// starve ingest and fan-out of CPU, and what a subscriber receives while it waits for its turn leaves in one write.
//
// A write that blocks (a client that stopped reading, a full socket) must not hold the others back: a writer that
// has been in one write for longer than handoffAfter is replaced by a new writer, and leaves the pool when its write
// ends. Writers exist only while there is work: one that finds the ready queue empty exits, so an idle edge runs
// none.
type writerPool struct {
	size  int           // writers that take work at once, stuck ones aside
	delay time.Duration // how long a subscriber waits after it becomes ready, so that what follows joins its write

	mu      sync.Mutex
	first   readyQueue    // subscribers whose first write turn it is (a new connection's: its subscribe's answer and snapshot)
	ready   readyQueue    // the others
	firsts  int           // turns taken from first in a row while others waited in ready
	running int           // writers taking work, not counting the ones replaced while stuck
	writers []*writer     // every writer alive, for the watch
	unwatch chan struct{} // closed to end the watch when the last writer leaves; nil when no watch runs
}

// writer is one goroutine of a pool.
type writer struct {
	since    time.Time // when its write in progress began; zero between writes. Guarded by the pool's mu.
	replaced bool      // it was found stuck and another took its place. Guarded by the pool's mu.
}

// handoffAfter is how long one write may take before its writer is replaced. A busy machine can keep a runnable
// writer waiting for a few milliseconds; a client that is not reading keeps it for up to the write timeout.
const handoffAfter = 20 * time.Millisecond

func newWriterPool(size int, delay time.Duration) *writerPool {
	return &writerPool{size: max(1, size), delay: delay}
}

// schedule queues s for a write turn, starting a writer if fewer than the pool's size are taking work. The caller
// guarantees s is not in the queue already (the subscriber's writing flag). A subscriber's first turn goes ahead of
// the others: on a saturated edge a round of the queue can take a second, and a client that has just connected
// (say, to an edge taking over from one that died) has nothing yet, while the others have their last values and
// are conflated meanwhile. So that a stream of new connections (a storm, or long polls, each a new subscriber)
// cannot starve the others, every firstsPerTurn first turns in a row let one of the others go.
func (p *writerPool) schedule(s *Subscriber, first bool) {
	e := readyEntry{s, time.Now()}
	p.mu.Lock()
	if first {
		p.first.push(e)
	} else {
		p.ready.push(e)
	}
	p.startLocked()
	p.mu.Unlock()
}

// firstsPerTurn is how many first turns in a row may go ahead of a subscriber waiting in the ready queue.
const firstsPerTurn = 8

// popLocked takes the next subscriber to write to.
func (p *writerPool) popLocked() (readyEntry, bool) {
	if p.firsts < firstsPerTurn || p.ready.len() == 0 {
		if e, ok := p.first.pop(); ok {
			p.firsts++
			return e, true
		}
	}
	p.firsts = 0
	return p.ready.pop()
}

// waitingLocked is how many subscribers wait for a write turn.
func (p *writerPool) waitingLocked() int { return p.first.len() + p.ready.len() }

// startLocked starts a writer if there is work for it and room in the pool.
func (p *writerPool) startLocked() {
	if p.running >= p.size || p.waitingLocked() == 0 {
		return
	}
	p.running++
	w := &writer{}
	p.writers = append(p.writers, w)
	go p.work(w)
	if p.unwatch == nil {
		p.unwatch = make(chan struct{})
		go p.watch(p.unwatch)
	}
}

// work takes subscribers from the ready queue, one write turn each, until the queue is empty.
func (p *writerPool) work(w *writer) {
	var (
		e    readyEntry
		more bool
	)
	for {
		p.mu.Lock()
		w.since = time.Time{}
		if more {
			p.ready.push(readyEntry{e.s, time.Now()}) // behind those that waited meanwhile
		}
		if w.replaced {
			if p.running >= p.size { // its replacement is taking work: the pool is full without it
				p.removeLocked(w)
				p.mu.Unlock()
				return
			}
			w.replaced = false
			p.running++
		}
		var ok bool
		if e, ok = p.popLocked(); !ok {
			p.running--
			p.removeLocked(w)
			p.mu.Unlock()
			return
		}
		if wait := p.delay - time.Since(e.at); wait > 0 {
			p.mu.Unlock()
			time.Sleep(wait) // only with a write delay configured: what arrives meanwhile joins this write
			p.mu.Lock()
		}
		w.since = time.Now()
		p.mu.Unlock()
		more = e.s.writeTurn()
		// Writers wake each other through the pool's lock and so keep running while there is work; without a
		// yield, the goroutines of new connections waited for the runtime's 10ms preemption, one at a time, and a
		// saturated edge admitted a few hundred clients a second.
		runtime.Gosched()
	}
}

func (p *writerPool) removeLocked(w *writer) {
	for i, x := range p.writers {
		if x == w {
			p.writers[i] = p.writers[len(p.writers)-1]
			p.writers[len(p.writers)-1] = nil
			p.writers = p.writers[:len(p.writers)-1]
			break
		}
	}
	if len(p.writers) == 0 && p.unwatch != nil {
		close(p.unwatch)
		p.unwatch = nil
	}
}

// watch replaces writers stuck in one write, until done is closed.
func (p *writerPool) watch(done <-chan struct{}) {
	tick := time.NewTicker(handoffAfter / 2)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		now := time.Now()
		for _, w := range p.writers {
			if !w.replaced && !w.since.IsZero() && now.Sub(w.since) > handoffAfter {
				w.replaced = true
				p.running--
			}
		}
		for p.running < p.size && p.waitingLocked() > 0 {
			p.startLocked()
		}
		p.mu.Unlock()
	}
}

// readyEntry is a subscriber waiting for a write turn, and since when.
type readyEntry struct {
	s  *Subscriber
	at time.Time
}

// readyQueue is a FIFO of subscribers waiting for a write turn, reusing its array.
type readyQueue struct {
	items []readyEntry
	head  int
}

func (q *readyQueue) len() int { return len(q.items) - q.head }

func (q *readyQueue) push(e readyEntry) {
	if q.head > 0 && len(q.items) == cap(q.items) && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, e)
}

func (q *readyQueue) pop() (readyEntry, bool) {
	if q.head == len(q.items) {
		if q.head > 0 {
			q.items, q.head = q.items[:0], 0
		}
		return readyEntry{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = readyEntry{}
	q.head++
	return e, true
}

// writeDeadline keeps a connection's write deadline about a write timeout ahead of each write. Setting a deadline
// updates a runtime timer: setting it before every write and clearing it after cost 8% of an edge busy with small
// writes. Instead the deadline is moved only once a tenth of the timeout has passed since it was last set, so a
// write that blocks is cut after 0.9 to 1 times the timeout, and one that follows a pause gets a fresh deadline.
type writeDeadline struct {
	timeout time.Duration // zero: leave the connection's deadline alone
	renewAt time.Time
}

// extend moves conn's write deadline if it is due, before a write. The connection's writes must be serialized.
func (d *writeDeadline) extend(conn net.Conn) {
	if d.timeout <= 0 {
		return
	}
	if now := time.Now(); !now.Before(d.renewAt) {
		conn.SetWriteDeadline(now.Add(d.timeout))
		d.renewAt = now.Add(d.timeout / 10)
	}
}
