package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// A worker holds a share of the connections, in its own process (so each process stays under the socket limit)
// or, with -in-process, in the coordinator's. It speaks JSON lines: the coordinator writes the spec, then commands
// ("mark NAME", "pubs {…}": what was published, for staleness, "stop"); the worker answers with its cumulative Stats
// on every tick, on each mark, and at the end.

// workerSpec is the first line a worker reads.
type workerSpec struct {
	Index  int     `json:"index"`
	First  int     `json:"first"` // number of its first connection in the whole run
	Count  int     `json:"count"`
	Rate   float64 `json:"rate"` // its share of the connect rate
	Run    string  `json:"run"`
	Config *Config `json:"config"`
}

// workerMsg is a line a worker writes.
type workerMsg struct {
	Kind  string `json:"kind"` // tick, mark, final, fatal
	Mark  string `json:"mark,omitempty"`
	Stats *Stats `json:"stats,omitempty"`
	Error string `json:"error,omitempty"`
}

// runWorker is a worker's whole life: read the spec, open the connections at the rate, report, and close them all
// when told to stop or when in ends.
func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m workerMsg) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(m)
	}
	if !sc.Scan() {
		return errors.New("worker: no spec on standard input")
	}
	var spec workerSpec
	if err := json.Unmarshal(sc.Bytes(), &spec); err != nil || spec.Config == nil {
		send(workerMsg{Kind: "fatal", Error: fmt.Sprintf("bad spec: %v", err)})
		return fmt.Errorf("worker: bad spec: %v", err)
	}
	cfg := spec.Config
	if err := errors.Join(cfg.loadCA(), cfg.resolveSources()); err != nil {
		send(workerMsg{Kind: "fatal", Error: err.Error()})
		return err
	}
	cs := &conns{cfg: cfg, run: spec.Run, st: newLiveStats(spec.Count), pace: newPacer(spec.Rate)}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := spec.First; i < spec.First+spec.Count; i++ {
			if cs.pace.wait(ctx) != nil {
				return
			}
			tr := cfg.transportFor(i)
			wg.Go(func() {
				switch tr {
				case trLongPoll:
					cs.runPoll(ctx, i, true)
				case trPoll:
					cs.runPoll(ctx, i, false)
				default:
					cs.runStream(ctx, i, tr)
				}
			})
		}
	})
	wg.Go(func() {
		// The coordinator follows the connect phase and the progress line by these ticks.
		every := cfg.Progress
		if every <= 0 || every > time.Second {
			every = time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				send(workerMsg{Kind: "tick", Stats: cs.st.snapshotStats()})
			}
		}
	})
	if cfg.CPUProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s.w%d", cfg.CPUProfile, spec.Index))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}

	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if cmd == "stop" {
			break
		}
		switch cmd {
		case "mark":
			send(workerMsg{Kind: "mark", Mark: arg, Stats: cs.st.snapshotStats()})
		case "pubs":
			if err := cs.stale.sample(cfg, []byte(arg), time.Now(), cs.st); err != nil {
				send(workerMsg{Kind: "fatal", Error: "publications: " + err.Error()})
				return err
			}
		}
	}
	// Stop: the last figures are taken before the connections close, so closing does not count as errors; memory
	// after a collection, without the garbage of the handshakes.
	debug.FreeOSMemory()
	final := cs.st.snapshotStats()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	final.HeapInuse, final.StackInuse = int64(m.HeapInuse), int64(m.StackInuse)
	if cfg.MemProfile != "" {
		if f, err := os.Create(fmt.Sprintf("%s.w%d", cfg.MemProfile, spec.Index)); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	send(workerMsg{Kind: "final", Stats: final})
	return nil
}
