package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Opcode is a WebSocket frame's opcode (RFC 6455, 5.2).
type Opcode byte

// The opcodes of RFC 6455.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control frame's: close, ping or pong.
func (op Opcode) IsControl() bool { return op >= OpClose }

// FrameHeader is the header of a WebSocket frame.
type FrameHeader struct {
	Fin    bool   // the last frame of its message
	Op     Opcode // the frame's opcode
	Length uint64 // the payload's length
	Masked bool   // the payload is masked with Key: every frame a client sends is, none a server sends
	Key    [4]byte
}

// MaxFrameHeader is the longest a frame header can be: 2 bytes, 8 of length, 4 of mask key.
const MaxFrameHeader = 14

// MaxControlPayload is the largest payload of a control frame.
const MaxControlPayload = 125

// ErrFrame is wrapped by the errors of ParseFrameHeader: bytes that cannot start a frame of this protocol.
var ErrFrame = errors.New("wire: bad WebSocket frame")

// AppendFrameHeader appends h as the header of a frame.
func AppendFrameHeader(b []byte, h FrameHeader) []byte {
	first := byte(h.Op) & 0x0f
	if h.Fin {
		first |= 0x80
	}
	var mask byte
	if h.Masked {
		mask = 0x80
	}
	switch n := h.Length; {
	case n <= 125:
		b = append(b, first, mask|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, first, mask|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, first, mask|127), n)
	}
	if h.Masked {
		b = append(b, h.Key[:]...)
	}
	return b
}

// AppendTextFrame appends payload as one final, unmasked text frame: a server's frame of one message.
func AppendTextFrame(b, payload []byte) []byte {
	b = AppendFrameHeader(b, FrameHeader{Fin: true, Op: OpText, Length: uint64(len(payload))})
	return append(b, payload...)
}

// ParseFrameHeader reads the header of the frame that b starts with. It returns the header and its length, or n = 0
// if b does not hold the whole header yet. It refuses (ErrFrame) reserved bits (no extension is ever negotiated),
// unknown opcodes, a control frame that is fragmented or longer than 125 bytes, and a length over 2^63.
func ParseFrameHeader(b []byte) (h FrameHeader, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin, h.Op, h.Masked = b[0]&0x80 != 0, Opcode(b[0]&0x0f), b[1]&0x80 != 0
	if b[0]&0x70 != 0 {
		return h, 0, fmt.Errorf("%w: reserved bits set", ErrFrame)
	}
	if h.Op > OpBinary && h.Op < OpClose || h.Op > OpPong {
		return h, 0, fmt.Errorf("%w: opcode %d", ErrFrame, h.Op)
	}
	h.Length, n = uint64(b[1]&0x7f), 2
	switch h.Length {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Length, n = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		h.Length, n = binary.BigEndian.Uint64(b[2:]), 10
		if h.Length>>63 != 0 {
			return h, 0, fmt.Errorf("%w: length over 2^63", ErrFrame)
		}
	}
	if h.Op.IsControl() && (h.Length > MaxControlPayload || !h.Fin) {
		return h, 0, fmt.Errorf("%w: control frame of %d bytes, fin %v", ErrFrame, h.Length, h.Fin)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Key[:], b[n:])
		n += 4
	}
	return h, n, nil
}

// Mask masks (or unmasks) p in place with key, p starting at offset pos of the payload.
func Mask(key [4]byte, pos int, p []byte) {
	for i := range p {
		p[i] ^= key[(pos+i)&3]
	}
}

// WebSocket close codes the edge sends (RFC 6455, 7.4.1; 4000-4999 are the application's).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseNoStatus        = 1005 // never sent: a close frame without a code reads as this
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008 // too many control messages
	CloseMessageTooBig   = 1009 // a control message over the edge's limit
	CloseMandatoryExt    = 1010
	CloseInternalError   = 1011 // a write to the client failed
	CloseServiceRestart  = 1012 // the edge is restarting, or the stream was recreated: come back at once
	CloseTryAgainLater   = 1013 // too slow, or the stream is unreachable: come back after a while
	CloseTokenExpired    = 4001 // the connection's token expired: come back with a fresh one
)

var closeNames = map[int]string{
	CloseNormal:          "normal_closure",
	CloseGoingAway:       "going_away",
	CloseInternalError:   "internal_error",
	CloseServiceRestart:  "server_restart",
	CloseTryAgainLater:   "try_again_later",
	ClosePolicyViolation: "policy_violation",
	CloseMessageTooBig:   "message_too_big",
	CloseTokenExpired:    "token_expired",
}

// CloseName names a close code in words, as clients report it: server_restart, try_again_later, …, or close_<code>.
func CloseName(code int) string {
	if name, ok := closeNames[code]; ok {
		return name
	}
	return "close_" + strconv.Itoa(code)
}

// ParseClose reads a close frame's payload: the code (CloseNoStatus if it has none) and the reason.
func ParseClose(payload []byte) (code int, reason string) {
	if len(payload) < 2 {
		return CloseNoStatus, ""
	}
	return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
}
