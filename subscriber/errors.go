package subscriber

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors returned by New for options it cannot work with.
var (
	ErrNoURL            = errors.New("subscriber: no edge URL")
	ErrBadURL           = errors.New("subscriber: bad edge URL")
	ErrNoTopic          = errors.New("subscriber: no topic")
	ErrUnknownTransport = errors.New("subscriber: unknown transport (use sse, ws or poll)")
)

var (
	// ErrNotWebSocket is returned by Subscribe and Unsubscribe on a client whose transport is not "ws": SSE and long
	// polling take their topics once, in New.
	ErrNotWebSocket = errors.New("subscriber: Subscribe and Unsubscribe need the ws transport")
	// ErrRunning is returned by Run while another Run of the same client is still going.
	ErrRunning = errors.New("subscriber: Run is already running")
	// ErrClosedByEdge is wrapped by the error of a Reconnecting event when the edge ended the connection on purpose
	// (an SSE close event, a WebSocket close frame): the edge restarting, the client too slow.
	ErrClosedByEdge = errors.New("subscriber: the edge closed the connection")
)

// Error is a refusal from the edge: an HTTP error answer ({"error":"…","code":"…"}), an error reply to a WebSocket
// subscribe, or a WebSocket close for policy. Run returns it when retrying cannot help (an invalid topic, a request
// the edge does not serve); Subscribe returns it when the edge refuses the topics.
type Error struct {
	Code      string // machine-readable: invalid_topic, too_many_topics, bad_request, not_found, …
	Message   string // the edge's words
	Status    int    // the HTTP status of a refused request; 0 otherwise
	CloseCode int    // the WebSocket close code of a connection closed for policy; 0 otherwise
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "refused"
	}
	switch {
	case e.Code != "":
		return "subscriber: " + msg + " (" + e.Code + ")"
	case e.Status != 0:
		return "subscriber: " + msg + " (HTTP " + strconv.Itoa(e.Status) + ")"
	case e.CloseCode != 0:
		return fmt.Sprintf("subscriber: %s (WebSocket close %d)", msg, e.CloseCode)
	}
	return "subscriber: " + msg
}

// permanentCode reports whether an in-band error code means the request itself is wrong, so that asking again, here
// or at another edge, would get the same answer.
func permanentCode(code string) bool {
	switch code {
	case "invalid_topic", "too_many_topics", "bad_request":
		return true
	}
	return false
}
