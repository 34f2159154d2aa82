package subscriber

import "time"

// EventKind names a step in the life of a client's connection.
type EventKind int

const (
	// Connecting: an attempt to connect to URL begins. Attempt counts the failures since the client was last live.
	Connecting EventKind = iota + 1
	// Live: the connection to URL is established and subscribed; updates flow. Cursor is where it resumed (0: from
	// the snapshot).
	Live
	// Reconnecting: the connection to URL failed or ended with Err; the next attempt (number Attempt) starts after
	// Delay, at the next URL when there are several.
	Reconnecting
	// Reset: the edge could not resume from the client's cursor (older than the stream keeps, or ahead of a stream
	// that was recreated). The client forgets what it delivered and starts over from the fresh snapshot that
	// follows. Cursor is the one the edge sent with the reset (0 if none), Reason its explanation.
	Reset
	// Closed: the edge ended the connection on purpose, with Reason (server_restart, slow_consumer, …, or the
	// WebSocket close code in words) and Message. A Reconnecting event follows.
	Closed
	// Conflated: the edge skipped Skipped updates, each superseded by a newer one on the same topic, because this
	// client (or the edge itself) could not keep up. What follows is the newest value of each topic; the cursor
	// still says where the client is.
	Conflated
)

var kindNames = [...]string{Connecting: "connecting", Live: "live", Reconnecting: "reconnecting", Reset: "reset",
	Closed: "closed", Conflated: "conflated"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Event tells Options.OnEvent about the connection. Fields that do not apply to the Kind are zero.
type Event struct {
	Kind    EventKind
	URL     string // the edge's base URL
	Attempt int
	Delay   time.Duration
	Err     error
	Cursor  uint64
	Reason  string
	Message string
	Skipped uint64 // Conflated: how many updates were skipped since the previous Conflated event
}
