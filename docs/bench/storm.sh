#!/bin/bash
# "A connect storm on a saturated edge" in docs/benchmarks.md: what a client connecting to an edge that is already
# past saturation waits before it is subscribed, as when the clients of an edge that died come back on the others.
# One pushbench holds 10,000 WebSocket subscribers × 10 of 500 symbols with 2,000 updates/s published (more than the
# box delivers); 35 s in, a second pushbench connects 1,000 more WebSockets at 1,000/s. Its connect time runs from
# the dial to the edge's "subscribed" answer (WebSocket) or to the stream's response headers (SSE:
# STORM_TRANSPORT=sse). RUNS runs (default 3), a fresh nats-server and edge each; extra edge flags go to the edge.
# Reports in $BENCH_DIR/storm/NAME-N.{a,b}.{out,json}; a summary line per run on stdout.
source "$(dirname "$0")/lib.sh"
mkdir -p storm
for run in $(seq "${RUNS:-3}"); do
  name=storm-$run
  start_nats
  start_edges 1 "$@"
  ./pushbench -url "$EDGE_URL" -nats "$NATS_URL" -edge-pid $EDGES -nats-pid $NATS -progress 10s \
    -report "storm/$name.a.json" -conns 10000 -transport ws -topics-per-conn 10 -symbols 500 -publish-rate 2000 \
    -publish-pattern random -connect-rate 2000 -warmup 10s -duration 50s > "storm/$name.a.out" 2> "storm/$name.a.err" &
  saturating=$!
  sleep 35
  ./pushbench -url "$EDGE_URL" -edge-pid $EDGES -progress 0 -report "storm/$name.b.json" -seed 7 -conns 1000 \
    -transport "${STORM_TRANSPORT:-ws}" -topics-per-conn 10 -symbols 500 -connect-rate 1000 -warmup 1s -duration 3s \
    -source-ips 127.0.2.1 > "storm/$name.b.out" 2> "storm/$name.b.err"
  wait $saturating
  check_alive
  echo "$(date +%T) $name storm: $(grep -E '^(connect|errors) ' "storm/$name.b.out" | tr -s ' ' | tr '\n' ' ')|" \
    "saturating run: $(grep -E '^(connect|errors|latency|deliveries) ' "storm/$name.a.out" | tr -s ' ' | tr '\n' ' ')"
  stop_all
  sleep 2
done
