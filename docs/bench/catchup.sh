#!/bin/bash
# Catch-up: one client 100,000 updates behind (10 topics) resumes; three runs per transport, each on a fresh stream.
source "$(dirname "$0")/lib.sh"
for tr in ws sse longpoll; do
  for run in 1 2 3; do
    start_nats
    start_edges 1
    ./pushbench -url "$EDGE_URL" -nats "$NATS_URL" -catchup 100000 -topics-per-conn 10 \
      -transport $tr -edge-pid $EDGES -report "catchup-$tr-$run.json" | grep -E 'caught up|wire|result'
    check_alive
    stop_all
  done
done
