package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// workerHandle is the coordinator's side of one worker.
type workerHandle struct {
	index int
	inMu  sync.Mutex // one command at a time: commands and publications come from different goroutines
	in    io.WriteCloser
	msgs  chan workerMsg // mark, final and fatal messages
	exit  chan error     // the worker ended (its process exited, or its goroutine returned)

	mu   sync.Mutex
	last *Stats // the newest figures it sent
}

// startWorkers starts the workers and hands each its share of the connections.
func startWorkers(cfg *Config, run string, stderr io.Writer) ([]*workerHandle, error) {
	n := cfg.workerCount()
	var hs []*workerHandle
	for w := range n {
		first, end := w*cfg.Conns/n, (w+1)*cfg.Conns/n
		spec := workerSpec{Index: w, First: first, Count: end - first, Rate: cfg.ConnectRate / float64(n), Run: run,
			Config: cfg}
		h, err := startWorker(spec, stderr)
		if err != nil {
			for _, h := range hs {
				h.in.Close()
			}
			return nil, fmt.Errorf("worker %d: %w", w, err)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func startWorker(spec workerSpec, stderr io.Writer) (*workerHandle, error) {
	h := &workerHandle{index: spec.Index, msgs: make(chan workerMsg, 16), exit: make(chan error, 1),
		last: newStats()}
	h.last.Conns = int64(spec.Count)
	if spec.Config.InProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		h.in = inW
		read := h.msgsDone(outR)
		go func() {
			err := runWorker(context.Background(), inR, outW)
			outW.CloseWithError(err)
			<-read // every message is in h.msgs before the end is signalled
			h.exit <- err
		}()
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(exe, "-worker")
		cmd.Stderr = stderr
		if h.in, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		read := h.msgsDone(stdout)
		go func() {
			<-read // exec wants stdout read to its end before Wait
			h.exit <- cmd.Wait()
		}()
	}
	if err := json.NewEncoder(h.in).Encode(spec); err != nil {
		return nil, err
	}
	return h, nil
}

// msgsDone reads the worker's messages until its output ends; the channel closes then.
func (h *workerHandle) msgsDone(out io.Reader) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var m workerMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				continue
			}
			if m.Stats != nil {
				h.mu.Lock()
				h.last = m.Stats
				h.mu.Unlock()
			}
			if m.Kind != "tick" {
				h.msgs <- m
			}
		}
	}()
	return done
}

func (h *workerHandle) latest() *Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *workerHandle) send(cmd string) error {
	h.inMu.Lock()
	defer h.inMu.Unlock()
	_, err := io.WriteString(h.in, cmd+"\n")
	return err
}

// await waits for the worker's answer of kind.
func (h *workerHandle) await(kind string, timeout time.Duration) (*Stats, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-h.msgs:
			if m.Kind == "fatal" {
				return nil, fmt.Errorf("worker %d: %s", h.index, m.Error)
			}
			if m.Kind == kind {
				return m.Stats, nil
			}
		case err := <-h.exit:
			h.exit <- err
			for { // what it said before it ended
				select {
				case m := <-h.msgs:
					if m.Kind == kind {
						return m.Stats, nil
					}
					continue
				default:
				}
				break
			}
			return nil, fmt.Errorf("worker %d ended: %v", h.index, err)
		case <-t.C:
			return nil, fmt.Errorf("worker %d: no %s within %v", h.index, kind, timeout)
		}
	}
}

// merged returns the sum of the workers' newest figures.
func merged(hs []*workerHandle) *Stats {
	s := newStats()
	for _, h := range hs {
		s.Add(h.latest())
	}
	return s
}

// markAll has every worker snapshot its figures now and returns their sum.
func markAll(hs []*workerHandle, name string) (*Stats, error) {
	for _, h := range hs {
		if err := h.send("mark " + name); err != nil {
			return nil, fmt.Errorf("worker %d: %w", h.index, err)
		}
	}
	s := newStats()
	var errs []error
	for _, h := range hs {
		st, err := h.await("mark", 30*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Add(st)
	}
	return s, errors.Join(errs...)
}

// stopAll tells every worker to close its connections and returns their final figures.
func stopAll(hs []*workerHandle) (*Stats, error) {
	for _, h := range hs {
		h.send("stop")
	}
	s := newStats()
	var errs []error
	for _, h := range hs {
		st, err := h.await("final", 30*time.Second)
		if err != nil {
			errs = append(errs, err)
		} else {
			s.Add(st)
		}
		h.in.Close()
	}
	for _, h := range hs {
		select {
		case <-h.exit:
		case <-time.After(15 * time.Second):
			errs = append(errs, fmt.Errorf("worker %d did not exit", h.index))
		}
	}
	return s, errors.Join(errs...)
}

// bench is one run of the coordinator.
type bench struct {
	cfg    *Config
	args   []string
	stdout io.Writer
	stderr io.Writer
	start  time.Time
	phase  string
	mu     sync.Mutex
}

func (b *bench) setPhase(p string) {
	b.mu.Lock()
	b.phase = p
	b.mu.Unlock()
}

func (b *bench) getPhase() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.phase
}

// run is the whole load test: publisher, workers, ramp, warm-up, measure, report.
func (b *bench) run(ctx context.Context) error {
	cfg := b.cfg
	if _, ok := b.stderr.(*os.File); !ok {
		// Workers' stderr is copied into it by another goroutine: take turns.
		b.stderr = &lockedWriter{w: b.stderr}
	}
	b.start = time.Now()
	rep := newReport(cfg, b.args, b.start)
	run := newRunID()
	rep.Run = run

	var pub *publisher
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	if cfg.PublishRate > 0 {
		var err error
		if pub, err = dialPublisher(ctx, cfg, run); err != nil {
			return err
		}
		defer pub.close()
		go pub.run(pubCtx, cfg.PublishRate, pub.all())
	}

	b.setPhase("connect")
	hs, err := startWorkers(cfg, run, b.stderr)
	if err != nil {
		return err
	}
	progressDone := make(chan struct{})
	progressCtx, stopProgress := context.WithCancel(context.Background())
	go func() {
		defer close(progressDone)
		b.progress(progressCtx, hs, pub)
	}()
	defer func() {
		stopProgress()
		<-progressDone
	}()
	// The workers learn what was published, to sample staleness, until they are told to stop.
	stopFeed := func() {}
	if pub != nil {
		done, fed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(fed)
			feedStaleness(done, pub, hs)
		}()
		stopFeed = sync.OnceFunc(func() {
			close(done)
			<-fed
		})
		defer stopFeed()
	}

	// Connect: until every connection is up, or the ramp timeout.
	probe := newCPUProbe(cfg)
	rampStart := time.Now()
	rampDeadline := rampStart.Add(cfg.RampTimeout)
	for ctx.Err() == nil && time.Now().Before(rampDeadline) {
		if merged(hs).ConnsUp >= int64(cfg.Conns) {
			break
		}
		sleep(ctx, 100*time.Millisecond)
	}
	rampStats, _ := markAll(hs, "ramp")
	rep.ramp(rampStats, time.Since(rampStart))

	b.setPhase("warmup")
	sleep(ctx, cfg.Warmup)

	b.setPhase("measure")
	startStats, err := markAll(hs, "start")
	if err != nil {
		fmt.Fprintf(b.stderr, "pushbench: %v\n", err)
	}
	cpu0 := probe.sample(ctx)
	self0 := selfCPU()
	var pub0 int64
	if pub != nil {
		pub0 = pub.sent.Load()
	}
	measureStart := time.Now()
	// After measureStart: a busy edge may be slow to answer, and the measured time, as the workers' window, counts it.
	lat0 := scrapeEdgeHists(ctx, probe.client, cfg)
	completed := sleep(ctx, cfg.Duration)
	endStats, err := markAll(hs, "end")
	if err != nil {
		fmt.Fprintf(b.stderr, "pushbench: %v\n", err)
	}
	measured := time.Since(measureStart)
	cpu1 := probe.sample(context.Background())
	lat1 := scrapeEdgeHists(context.Background(), probe.client, cfg)
	if !cfg.InProcess {
		rep.CPU.CoordinatorCores = (selfCPU() - self0) / measured.Seconds()
	}
	if pub != nil {
		rep.publisher(pub, pub0, measured)
		rep.edgeLag(ctx, cfg.httpClient(), pub, cfg.URLs)
	}

	b.setPhase("stop")
	stopPub()
	stopFeed() // a worker told to stop reads no more
	final, err := stopAll(hs)
	if err != nil {
		fmt.Fprintf(b.stderr, "pushbench: %v\n", err)
	}
	stopProgress()
	<-progressDone

	rep.Interrupted = !completed
	rep.measure(startStats, endStats, final, measured, cfg.Warmup)
	rep.cpu(cpu0, cpu1, probe.source())
	rep.edgeLatency(lat0, lat1)
	rep.check(cfg)
	if err := rep.write(cfg, b.stdout); err != nil {
		return err
	}
	if !rep.Pass {
		return errFailedChecks
	}
	return nil
}

var errFailedChecks = errors.New("checks failed")

// lockedWriter lets several goroutines write one writer. It is not an io.ReaderFrom, so exec's copy of a worker's
// stderr goes through Write too.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// progress prints a line per interval: connections, errors, deliveries per second, latency of the last interval,
// gaps and duplicates.
func (b *bench) progress(ctx context.Context, hs []*workerHandle, pub *publisher) {
	if b.cfg.Progress <= 0 {
		return
	}
	t := time.NewTicker(b.cfg.Progress)
	defer t.Stop()
	prev := newStats()
	prevAt := time.Now()
	var prevPub int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := merged(hs)
			d := cur.Since(prev)
			secs := now.Sub(prevAt).Seconds()
			line := fmt.Sprintf("%6.1fs %-7s conns %d/%d  conn-err %d  drops %d | %s upd/s  p50 %s  p99 %s | gaps %d  dups %d",
				now.Sub(b.start).Seconds(), b.getPhase(), cur.ConnsUp, b.cfg.Conns, sum(cur.ConnectErrors),
				sum(cur.Disconnects), thousands(float64(d.Deliveries)/secs), fmtDur(d.Latency.Quantile(0.5)),
				fmtDur(d.Latency.Quantile(0.99)), cur.Gaps, cur.Duplicates+cur.OutOfOrder)
			if d.Staleness.Count() > 0 {
				line += " | stale p99 " + fmtStale(d.Staleness.Quantile(0.99))
			}
			if pub != nil {
				sent := pub.sent.Load()
				line += fmt.Sprintf(" | pub %s/s", thousands(float64(sent-prevPub)/secs))
				prevPub = sent
			}
			fmt.Fprintln(b.stderr, line)
			prev, prevAt = cur, now
		}
	}
}

// fmtStale is fmtDur, but zero is a value: fresh.
func fmtStale(ns uint64) string {
	if ns == 0 {
		return "0"
	}
	return fmtDur(ns)
}

func fmtDur(ns uint64) string {
	d := time.Duration(ns)
	switch {
	case ns == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Second).String()
}

// thousands formats a count with thousands separators: 1,234,567.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}
