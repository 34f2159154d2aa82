package push

import "testing"

// New subscribers' first turns go ahead of the others, but a stream of them cannot starve the others: every
// firstsPerTurn of them, one waiting in the ready queue goes.
func TestFirstTurnsGoFirstButDoNotStarveTheOthers(t *testing.T) {
	p := newWriterPool(1, 0)
	waiting := &Subscriber{id: 1}
	p.ready.push(readyEntry{s: waiting})
	for i := range 3 * firstsPerTurn {
		p.first.push(readyEntry{s: &Subscriber{id: uint64(100 + i)}})
	}
	var order []uint64
	for {
		e, ok := p.popLocked()
		if !ok {
			break
		}
		order = append(order, e.s.id)
	}
	if len(order) != 3*firstsPerTurn+1 {
		t.Fatalf("popped %d, want %d", len(order), 3*firstsPerTurn+1)
	}
	if order[0] != 100 || order[firstsPerTurn] != waiting.id {
		t.Errorf("turns %v: want %d first turns, then the subscriber that was waiting", order, firstsPerTurn)
	}
}
