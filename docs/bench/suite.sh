#!/bin/bash
# The fan-out, throughput and transport-comparison tables of docs/benchmarks.md: a fresh nats-server and edge for
# every run, three runs (two for throughput) of each row; reports in $BENCH_DIR/suite/NAME.{out,json,metrics}.
source "$(dirname "$0")/lib.sh"
one() { bench_one suite "$@"; }
for run in 1 2 3; do
  for rate in 200 250 300; do
    one "fan-ws-$rate-$run" -conns 10000 -transport ws -topics-per-conn 10 -symbols 500 -publish-rate $rate \
      -publish-pattern random -connect-rate 2000 -warmup 10s -duration 30s
  done
  one "fan-sse-200-$run" -conns 10000 -transport sse -topics-per-conn 10 -symbols 500 -publish-rate 200 \
    -publish-pattern random -connect-rate 2000 -warmup 10s -duration 30s
  for tr in poll longpoll sse ws; do
    one "cmp-$tr-$run" -conns 1000 -transport $tr -topics-per-conn 10 -symbols 500 -publish-rate 500 \
      -publish-pattern random -poll-interval 1s -warmup 10s -duration 30s
  done
done
for run in 1 2; do
  for rate in 5000 10000 20000; do
    one "thr-$rate-$run" -conns 100 -topic 'market.*' -symbols 500 -publish-rate $rate -warmup 10s -duration 30s
  done
done
