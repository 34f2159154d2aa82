package push

import "sort"

// ring is the hub's recent history: the last updates, oldest first, at most len(buf) of them and at most maxBytes
// of memory. Once on, it holds every update after floor, so a resume from a cursor at or after floor is served from
// memory.
type ring struct {
	buf      []*Update
	start    int // index of the oldest
	n        int
	bytes    int // memory held by the n updates
	maxBytes int
	on       bool   // history is contiguous: the source follows the stream live
	floor    uint64 // every update after this cursor is in buf
}

func newRing(count, maxBytes int) ring {
	return ring{buf: make([]*Update, count), maxBytes: maxBytes}
}

// begin starts contiguous history after cursor floor, forgetting what came before.
func (r *ring) begin(floor uint64) {
	clear(r.buf)
	r.start, r.n, r.bytes, r.on, r.floor = 0, 0, 0, true, floor
}

// stop forgets every update and keeps none until the next begin.
func (r *ring) stop() {
	clear(r.buf)
	r.start, r.n, r.bytes, r.on, r.floor = 0, 0, 0, false, 0
}

func (r *ring) push(u *Update) {
	if !r.on {
		return
	}
	size := u.memSize()
	for r.n > 0 && (r.n == len(r.buf) || r.bytes+size > r.maxBytes) {
		r.dropOldest()
	}
	r.buf[(r.start+r.n)%len(r.buf)] = u
	r.n++
	r.bytes += size
}

func (r *ring) dropOldest() {
	old := r.buf[r.start]
	r.floor, r.bytes = old.Cursor, r.bytes-old.memSize()
	r.buf[r.start] = nil
	r.start = (r.start + 1) % len(r.buf)
	r.n--
}

func (r *ring) at(i int) *Update { return r.buf[(r.start+i)%len(r.buf)] }

// covers reports whether every update after cursor is in the ring.
func (r *ring) covers(cursor uint64) bool { return r.on && cursor >= r.floor }

// after appends to dst the updates after cursor for which keep is true, in order.
func (r *ring) after(dst []*Update, cursor uint64, keep func(*Update) bool) []*Update {
	i := sort.Search(r.n, func(i int) bool { return r.at(i).Cursor > cursor })
	for ; i < r.n; i++ {
		if u := r.at(i); keep(u) {
			dst = append(dst, u)
		}
	}
	return dst
}

// find returns the update with cursor, or nil if the ring does not hold it.
func (r *ring) find(cursor uint64) *Update {
	i := sort.Search(r.n, func(i int) bool { return r.at(i).Cursor >= cursor })
	if i < r.n && r.at(i).Cursor == cursor {
		return r.at(i)
	}
	return nil
}
