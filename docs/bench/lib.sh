# Sourced by the benchmark scripts here: builds the edge and pushbench from this checkout and starts a standalone
# nats-server and edges on loopback. Everything lands in $BENCH_DIR (default /tmp/livepush-bench).
set -u
BENCH_DIR=${BENCH_DIR:-/tmp/livepush-bench}
mkdir -p "$BENCH_DIR"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
(cd "$REPO" && go build -o "$BENCH_DIR/push" ./cmd/push && go build -o "$BENCH_DIR/pushbench" ./cmd/pushbench) || exit 1
NATS_SERVER=$(command -v nats-server || echo "$(go env GOPATH)/bin/nats-server")
[ -x "$NATS_SERVER" ] || { echo "nats-server not found: go install github.com/nats-io/nats-server/v2@v2.15.2" >&2; exit 1; }
cd "$BENCH_DIR"

# start_nats PORT: a standalone nats-server with JetStream on fresh storage; sets NATS (its pid).
start_nats() {
  rm -rf "nats-$1"
  "$NATS_SERVER" -js -sd "nats-$1" -a 127.0.0.1 -p "$1" > "nats-$1.log" 2>&1 & NATS=$!
  sleep 1
}

# start_edges N ADDR NATS_PORT [push flags…]: N edges on ADDR (with -reuseport when N > 1); sets EDGES (pids,
# space-separated) and waits until they answer /readyz.
start_edges() {
  local n=$1 addr=$2 port=$3; shift 3
  local extra=()
  [ "$n" -gt 1 ] && extra=(-reuseport)
  EDGES=""
  for i in $(seq "$n"); do
    NATS_URL=nats://127.0.0.1:$port ./push -addr "$addr" "${extra[@]}" -log-level warn "$@" > "edge-$i.log" 2>&1 &
    EDGES="$EDGES $!"
  done
  for _ in $(seq 100); do curl -sf "http://$addr/readyz" > /dev/null && break; sleep 0.2; done
}

# rss_kib PIDS…: their resident sets added up, in KiB.
rss_kib() {
  local t=0
  for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done
  echo "$t"
}

stop_all() {
  kill $EDGES $NATS 2> /dev/null
  wait 2> /dev/null
}
