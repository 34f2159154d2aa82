// Package browsertest starts headless Chromium for the tests that check what a browser does: the ticker page, the
// browser client, HTTP/2 and proxies. A test that needs the browser fails when it is missing, with how to install
// it: a browser test that skips proves nothing.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Wait bounds starting the browser and each step a test waits for: generous, for a loaded 2-core machine under
// -race.
const Wait = 20 * time.Second

// Path finds Chromium, or fails the test saying how to install it.
func Path(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("Chromium not found (looked for /usr/bin/chromium, chromium, chromium-browser, google-chrome): " +
		"browser tests need a real browser, install it (Debian: apt-get install chromium; .ci/run does)")
	return ""
}

// Start starts headless Chromium with the flags these machines need, plus opts, and returns the context of its
// first tab. The browser ends with the test.
func Start(t testing.TB, opts ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	ctx, stop, err := launch(Path(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return ctx
}

// launch starts Chromium at path and returns its first tab and how to stop it (which waits for it to exit).
func launch(path string, opts []chromedp.ExecAllocatorOption) (context.Context, func(), error) {
	// Chromium leaves its singleton-lock directory in TMPDIR when it is stopped: give it one of its own, short
	// because the lock is a unix socket whose path must fit in 108 bytes (t.TempDir's can be longer).
	tmp, err := os.MkdirTemp("", "chromium")
	if err != nil {
		return nil, nil, err
	}
	all := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these, Chromium's calls home are refused by this machine's closed network, many at a time.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Env("TMPDIR="+tmp),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(all, opts...)...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	stop := func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		os.RemoveAll(tmp)
	}
	// The first action starts the browser, bound to ctx: it gets no timeout of its own, so watch it from here.
	if err := within(ctx, "starting Chromium"); err != nil {
		stop()
		return nil, nil, err
	}
	return ctx, stop, nil
}

// within runs ctx's first action (starting a browser or a tab) and waits for it at most Wait.
func within(ctx context.Context, what string) error {
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("browsertest: %s: %w", what, err)
		}
		return nil
	case <-time.After(Wait):
		return fmt.Errorf("browsertest: %s took longer than %v", what, Wait)
	}
}

// The browser Tab opens tabs in: one per test process, started by the first test that needs it.
var shared struct {
	once sync.Once
	ctx  context.Context
	err  error
	stop func()
}

// Tab opens a tab in a browser shared by the tests of the process, starting Chromium with opts on first use (later
// callers' opts are ignored: give the same ones everywhere); the tab closes when the test ends. Starting Chromium
// once rather than per test saves seconds a test on a loaded machine. A package that calls Tab calls StopShared in
// its TestMain, after m.Run.
func Tab(t testing.TB, opts ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := Path(t)
	shared.once.Do(func() { shared.ctx, shared.stop, shared.err = launch(path, opts) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	ctx, cancel := chromedp.NewContext(shared.ctx)
	t.Cleanup(cancel)
	if err := within(ctx, "opening a tab"); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// StopShared stops the browser Tab started, if it did.
func StopShared() {
	if shared.stop != nil {
		shared.stop()
	}
}
