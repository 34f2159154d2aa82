package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the CPU time used so far by the processes pushbench watches, and by the whole machine.
type cpuSample struct {
	at          time.Time
	edge        float64 // seconds; valid when edgeErr is nil
	edgeErr     error
	nats        float64
	natsErr     error
	machineBusy float64 // seconds of all cores busy
	machineAll  float64 // seconds of all cores
}

// cpuProbe reads edge CPU from /proc for -edge-pid, or from each edge's Prometheus metrics.
type cpuProbe struct {
	edgePIDs []int
	natsPIDs []int
	metrics  []string
	client   *http.Client
}

func newCPUProbe(cfg *Config) *cpuProbe {
	return &cpuProbe{edgePIDs: cfg.EdgePIDs, natsPIDs: cfg.NATSPIDs, metrics: cfg.MetricsURLs,
		client: &http.Client{Timeout: 3 * time.Second, Transport: cfg.httpClient().Transport}}
}

// source says where the edge's CPU comes from.
func (p *cpuProbe) source() string {
	if len(p.edgePIDs) > 0 {
		return "proc"
	}
	if len(p.metrics) > 0 {
		return "metrics"
	}
	return "none"
}

func (p *cpuProbe) sample(ctx context.Context) cpuSample {
	s := cpuSample{at: time.Now()}
	switch {
	case len(p.edgePIDs) > 0:
		s.edge, s.edgeErr = sumPIDs(p.edgePIDs)
	case len(p.metrics) > 0:
		for _, u := range p.metrics {
			v, err := p.scrape(ctx, u)
			if err != nil {
				s.edgeErr = err
				break
			}
			s.edge += v
		}
	default:
		s.edgeErr = errors.New("no -edge-pid or -metrics-url")
	}
	if len(p.natsPIDs) > 0 {
		s.nats, s.natsErr = sumPIDs(p.natsPIDs)
	} else {
		s.natsErr = errors.New("no -nats-pid")
	}
	s.machineBusy, s.machineAll = machineCPU()
	return s
}

func sumPIDs(pids []int) (float64, error) {
	var total float64
	for _, pid := range pids {
		v, err := procCPU(pid)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on Linux's every architecture that matters here.
const clockTicks = 100

// procCPU returns the user and system CPU seconds of process pid (all its threads) from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in parentheses may hold spaces: fields count from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	if f[0] == "Z" || f[0] == "X" { // exited, not yet reaped by its parent
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return (utime + stime) / clockTicks, nil
}

// scrape reads process_cpu_seconds_total from a Prometheus text endpoint.
func (p *cpuProbe) scrape(ctx context.Context, u string) (float64, error) {
	body, err := getMetrics(ctx, p.client, u)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	sc := metricsScanner(body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.Fields(v)[0], 64)
		}
	}
	return 0, fmt.Errorf("%s has no process_cpu_seconds_total", u)
}

// getMetrics GETs a Prometheus text endpoint; the caller closes the body.
func getMetrics(ctx context.Context, client *http.Client, u string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %s", u, resp.Status)
	}
	return resp.Body, nil
}

// metricsScanner reads Prometheus text a line at a time.
func metricsScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return sc
}

// machineCPU returns the busy and total CPU seconds of all cores, from /proc/stat.
func machineCPU() (busy, all float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:min(len(f), 9)] { // guest time is counted in user time already
		n, _ := strconv.ParseFloat(v, 64)
		all += n
		if i != 3 && i != 4 { // idle and iowait
			busy += n
		}
	}
	return busy / clockTicks, all / clockTicks
}
