// Command sseholder holds many idle SSE streams open on one edge, over HTTP/2 (TLS or h2c) or HTTP/1.1, for
// docs/bench/memory-h2.sh: the edge's memory per stream is measured while they are held.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("url", "https://127.0.0.1:29443", "edge base URL (https for TLS, http for h2c or HTTP/1.1)")
	proto := flag.String("proto", "h2", "h2 (HTTP/2 over TLS), h2c (HTTP/2 in clear text) or h1 (HTTP/1.1, TLS or not)")
	streams := flag.Int("streams", 1000, "streams to open")
	perConn := flag.Int("per-conn", 1, "with h2 or h2c: streams per connection (at most the edge's 250 concurrent streams)")
	topics := flag.Int("topics", 10, "topics per stream")
	symbols := flag.Int("symbols", 500, "distinct symbols the topics are drawn from")
	rate := flag.Int("rate", 2000, "streams opened per second")
	hold := flag.Duration("hold", 30*time.Second, "how long to hold the streams once all are open")
	flag.Parse()
	if err := run(*base, *proto, *streams, *perConn, *topics, *symbols, *rate, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "sseholder:", err)
		os.Exit(1)
	}
}

func run(base, proto string, streams, perConn, topics, symbols, rate int, hold time.Duration) error {
	var protocols http.Protocols
	switch proto {
	case "h2":
		protocols.SetHTTP2(true)
	case "h2c":
		protocols.SetUnencryptedHTTP2(true)
	case "h1":
		protocols.SetHTTP1(true)
		perConn = 1
	default:
		return fmt.Errorf("-proto %q: use h2, h2c or h1", proto)
	}
	if perConn < 1 || perConn > 250 {
		return fmt.Errorf("-per-conn %d: between 1 and 250", perConn)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// One transport per connection wanted: a transport keeps one HTTP/2 connection while its streams fit in it.
	transports := make([]*http.Transport, (streams+perConn-1)/perConn)
	for i := range transports {
		transports[i] = &http.Transport{Protocols: &protocols, MaxConnsPerHost: 0,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // a test edge on loopback, self-signed
	}
	var open, failed atomic.Int64
	var ended sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	began := time.Now()
	for i := range streams {
		<-tick.C
		q := url.Values{}
		for k := range topics {
			q.Add("topic", fmt.Sprintf("market.B%04d", (i*topics+k)%symbols))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+q.Encode(), nil)
		client := &http.Client{Transport: transports[i/perConn]}
		ended.Go(func() {
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				if failed.Add(1) <= 5 {
					fmt.Fprintln(os.Stderr, "stream failed:", err, statusOf(resp))
				}
				return
			}
			if want := map[string]int{"h2": 2, "h2c": 2, "h1": 1}[proto]; resp.ProtoMajor != want {
				fmt.Fprintf(os.Stderr, "stream answered over %s, want HTTP/%d\n", resp.Proto, want)
				os.Exit(1)
			}
			open.Add(1)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	for deadline := time.Now().Add(30 * time.Second); open.Load()+failed.Load() < int64(streams); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	fmt.Printf("open: %d streams over %d connections (%s), %d failed, in %v\n", open.Load(), len(transports), proto,
		failed.Load(), time.Since(began).Round(time.Millisecond))
	select {
	case <-time.After(hold):
	case <-ctx.Done():
	}
	stop()
	ended.Wait()
	return nil
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Status
}
