# Sourced by the benchmark scripts here: builds the edge and pushbench from this checkout and starts a standalone
# nats-server and edges on loopback, each on a free port it reports itself (so a run cannot measure some other
# process on a fixed port), and stops the run if one of them dies. Everything lands in $BENCH_DIR (default
# /tmp/livepush-bench).
set -u
BENCH_DIR=${BENCH_DIR:-/tmp/livepush-bench}
mkdir -p "$BENCH_DIR"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
(cd "$REPO" && go build -o "$BENCH_DIR/push" ./cmd/push && go build -o "$BENCH_DIR/pushbench" ./cmd/pushbench) || exit 1
NATS_SERVER=$(command -v nats-server || echo "$(go env GOPATH)/bin/nats-server")
[ -x "$NATS_SERVER" ] || { echo "nats-server not found: go install github.com/nats-io/nats-server/v2@v2.15.2" >&2; exit 1; }
cd "$BENCH_DIR"

die() { echo "$*" >&2; stop_all; exit 1; }

# start_nats: a standalone nats-server with JetStream on fresh storage and a free port; sets NATS (its pid) and
# NATS_URL.
start_nats() {
  local dir f=""
  dir=$(mktemp -d "$BENCH_DIR/nats.XXXX")
  "$NATS_SERVER" -js -sd "$dir" -a 127.0.0.1 -p -1 --ports_file_dir "$dir" > "$dir/log" 2>&1 & NATS=$!
  for _ in $(seq 100); do
    f=$(ls "$dir"/*.ports 2> /dev/null) && break
    kill -0 "$NATS" 2> /dev/null || die "nats-server exited: $(tail -3 "$dir/log")"
    sleep 0.1
  done
  NATS_URL=$(sed -n 's/.*"nats":\["\([^"]*\)".*/\1/p' "$f")
  [ -n "$NATS_URL" ] || die "nats-server did not say where it listens"
}

# start_edges N [push flags…]: N edges on one free port (sharing it with -reuseport when N > 1) against NATS_URL;
# sets EDGES (pids, space-separated) and EDGE_URL, and waits until they answer /readyz. With SCHEME=https (edges
# given -tls-cert), EDGE_URL is https.
start_edges() {
  local n=$1; shift
  local extra=() addr=127.0.0.1:0
  [ "$n" -gt 1 ] && extra=(-reuseport)
  EDGES=""
  for i in $(seq "$n"); do
    rm -f "edge-$i.ready"
    NATS_URL=$NATS_URL ./push -addr "$addr" "${extra[@]}" -ready-file "edge-$i.ready" -log-level warn "$@" \
      > "edge-$i.log" 2>&1 &
    EDGES="$EDGES $!"
    for _ in $(seq 100); do
      [ -s "edge-$i.ready" ] && break
      kill -0 $! 2> /dev/null || die "edge $i exited: $(tail -3 "edge-$i.log")"
      sleep 0.1
    done
    addr=$(sed -n 's/^addr=//p' "edge-$i.ready") # the others share the first one's port
  done
  EDGE_URL=${SCHEME:-http}://$addr
  for _ in $(seq 100); do curl -skf "$EDGE_URL/readyz" > /dev/null && break; sleep 0.2; done
}

# check_alive: fails the run if an edge or the nats-server it started has died meanwhile.
check_alive() {
  for p in $EDGES $NATS; do kill -0 "$p" 2> /dev/null || die "process $p died during the run"; done
}

# rss_kib PIDS…: their resident sets added up, in KiB.
rss_kib() {
  local t=0
  for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done
  echo "$t"
}

# bench_one DIR NAME pushbench-flags…: a fresh nats-server and edge (given EDGE_FLAGS, an array, if set), one
# pushbench run against them reported in DIR/NAME.{out,err,json}, the edge's lag and conflation metrics at the end
# in DIR/NAME.metrics; fails the run if the edge or nats-server died.
bench_one() {
  local dir=$1 name=$2; shift 2
  mkdir -p "$dir"
  start_nats
  start_edges 1 ${EDGE_FLAGS[@]+"${EDGE_FLAGS[@]}"}
  ./pushbench -url "$EDGE_URL" -nats "$NATS_URL" -edge-pid $EDGES -nats-pid $NATS \
    -progress 10s -report "$dir/$name.json" "$@" > "$dir/$name.out" 2> "$dir/$name.err"
  echo "$(date +%T) $name exit $?"
  curl -s "$EDGE_URL/metrics" | grep -E '^livepush_(ingest_lag|fanout_lag|stream_pending|fanout_conflated|conflated|disconnects)' \
    > "$dir/$name.metrics"
  check_alive
  stop_all
  sleep 2
}

stop_all() {
  kill ${EDGES:-} ${NATS:-} 2> /dev/null
  wait 2> /dev/null
}
