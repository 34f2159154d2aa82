#!/bin/bash
# 200,000 subscribers, half SSE and half WebSocket, on one port served by 14 edge processes (SO_REUSEPORT), held
# for 60 s with live updates. Prints pushbench's summary and the edges' RSS growth while the connections are held.
# Takes ~8 minutes; needs ~5 GB of memory.
# CONNS, EDGE_PROCS, CONNECT_RATE and DURATION override the defaults for a smaller trial.
source "$(dirname "$0")/lib.sh"
conns=${CONNS:-200000}
start_nats
start_edges "${EDGE_PROCS:-14}" -heartbeat 30s
sleep 2
base=$(rss_kib $EDGES)
./pushbench -url "$EDGE_URL" -nats "$NATS_URL" -conns "$conns" -transport mix \
  -topics-per-conn 1 -symbols 100 -publish-rate 5 -connect-rate "${CONNECT_RATE:-700}" -ramp-timeout 8m -warmup 20s \
  -duration "${DURATION:-60s}" \
  -edge-pid "$(echo $EDGES | tr ' ' ,)" -nats-pid $NATS -progress 10s -strict -report 200k.json > 200k.out &
pb=$!
# Sample during the measured minute: pushbench prints "measure" progress lines on stderr then.
while kill -0 $pb 2> /dev/null; do
  sleep 10
  g=$(( $(rss_kib $EDGES) - base ))
  echo "$(date +%T) edges' RSS growth $g KiB, $(( g * 1024 / conns )) bytes per connection once all are up"
done > 200k-rss.log
cat 200k.out
check_alive
tail -4 200k-rss.log | head -3
stop_all
