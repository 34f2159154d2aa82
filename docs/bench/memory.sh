#!/bin/bash
# Edge memory per idle connection: RSS growth of one edge holding N idle connections (10 topics each) of one
# transport, divided by N. Usage: memory.sh ws|sse [N, default 15000]
source "$(dirname "$0")/lib.sh"
tr=$1 n=${2:-15000}
start_nats
start_edges 1
curl -s -o /dev/null "$EDGE_URL/api/snapshot?topic=market.*" # first-use costs into the baseline
sleep 1
base=$(rss_kib $EDGES)
./pushbench -url "$EDGE_URL" -conns "$n" -transport "$tr" -topics-per-conn 10 -symbols 500 \
  -connect-rate 3000 -warmup 5s -duration 10s -progress 0 -report "memory-$tr.json" > "memory-$tr.out" 2>&1 & pb=$!
sleep 12 # connected by now; sample while they are held
for i in 1 2 3; do
  sleep 3
  echo "sample $i: $(( ($(rss_kib $EDGES) - base) * 1024 / n )) bytes of edge RSS per $tr connection"
done
wait $pb
check_alive
stop_all
