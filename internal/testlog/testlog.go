// Package testlog gives tests their logs: a logger that is silent unless asked, and a buffer that collects what
// several goroutines log, for tests that read a process's log.
package testlog

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
)

// Logger returns the logger tests give what they start: silent unless LIVEPUSH_TEST_LOG is set, then everything
// on stderr.
func Logger() *slog.Logger {
	if os.Getenv("LIVEPUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Buffer collects what is written to it from any number of goroutines. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
