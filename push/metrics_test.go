package push

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape returns the edge's metrics as name{labels} → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func TestMetricsTellWhatHappens(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	w := dialWS(t, e.url, "?topic=market.*", nil)
	w.expect(t, "subscribed")
	openSSE(t, e.url, map[string][]string{"topic": {"market.*"}}, nil)
	e.waitSubscribers(t, 2)
	for range 10 {
		n.publish(t, "market.AAPL", quote("AAPL"))
	}
	for range 10 {
		w.expect(t, "update")
	}
	get(t.Context(), e.url+"/api/snapshot?topic=market.AAPL")
	get(t.Context(), e.url+"/api/snapshot?topic=$SYS.>")

	m := scrape(t, e.url)
	want := map[string]func(float64) bool{
		`livepush_connections{transport="ws"}`:                           func(v float64) bool { return v == 1 },
		`livepush_connections{transport="sse"}`:                          func(v float64) bool { return v == 1 },
		`livepush_deliveries_total{transport="ws"}`:                      func(v float64) bool { return v >= 10 },
		`livepush_writes_total{transport="ws"}`:                          func(v float64) bool { return v >= 1 && v <= 10 },
		`livepush_delivery_latency_seconds_count`:                        func(v float64) bool { return v >= 1 },
		`livepush_nats_connected`:                                        func(v float64) bool { return v == 1 },
		`livepush_ready`:                                                 func(v float64) bool { return v == 1 },
		`livepush_stream_cursor`:                                         func(v float64) bool { return v >= 10 },
		`livepush_subscriptions`:                                         func(v float64) bool { return v == 2 },
		`livepush_http_requests_total{code="200",route="/api/snapshot"}`: func(v float64) bool { return v == 1 },
		`livepush_http_requests_total{code="400",route="/api/snapshot"}`: func(v float64) bool { return v == 1 },
		`process_cpu_seconds_total`:                                      func(v float64) bool { return v > 0 },
	}
	for name, ok := range want {
		if v, found := m[name]; !found || !ok(v) {
			t.Errorf("%s = %v (present: %v)", name, v, found)
		}
	}

	w.conn.CloseNow()
	deadline := time.Now().Add(5 * time.Second)
	for scrape(t, e.url)[`livepush_disconnects_total{reason="client_gone"}`] != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a client leaving is not counted")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
