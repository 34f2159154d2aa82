#!/bin/bash
# The "Past saturation" table of docs/benchmarks.md (issue 12's targets): 10,000 WebSocket subscribers × 10 of 500
# symbols at 300, 1,000 and 2,000 updates/s published to random symbols, and 100 subscribers × all 500 symbols at
# 5,000, 10,000 and 20,000/s. A fresh nats-server and edge per run, three runs of each row; extra edge flags go to
# every edge (e.g. -write-delay 5ms). Reports in $BENCH_DIR/overload/NAME.{out,json,metrics}.
source "$(dirname "$0")/lib.sh"
EDGE_FLAGS=("$@")
one() { bench_one overload "$@"; }
for run in 1 2 3; do
  for rate in 300 1000 2000; do
    one "ws-$rate-$run" -conns 10000 -transport ws -topics-per-conn 10 -symbols 500 -publish-rate $rate \
      -publish-pattern random -connect-rate 2000 -warmup 10s -duration 30s
  done
  for rate in 5000 10000 20000; do
    one "thr-$rate-$run" -conns 100 -topic 'market.*' -symbols 500 -publish-rate $rate -warmup 10s -duration 30s
  done
done
