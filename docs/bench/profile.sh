#!/bin/bash
# profile.sh NAME [pushbench flags…]: one pushbench run against a fresh nats-server and edge started with -pprof,
# and a CPU profile of the edge taken for PROFILE_SECONDS (default 15) starting PROFILE_AFTER seconds (default 25:
# past the ramp and the warmup of a 10,000-connection run) into it. Read it with
#   go tool pprof -top $BENCH_DIR/push $BENCH_DIR/profile/NAME.pprof
# Example, the profile quoted under "Hot spots in the edge" in docs/benchmarks.md:
#   docs/bench/profile.sh ws-300 -conns 10000 -transport ws -topics-per-conn 10 -symbols 500 -publish-rate 300 \
#     -publish-pattern random -connect-rate 2000 -warmup 10s -duration 30s
source "$(dirname "$0")/lib.sh"
name=$1; shift
dir=profile
mkdir -p "$dir"
pprof_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_nats
start_edges 1 -pprof "127.0.0.1:$pprof_port"
./pushbench -url "$EDGE_URL" -nats "$NATS_URL" -edge-pid $EDGES -nats-pid $NATS \
  -report "$dir/$name.json" "$@" > "$dir/$name.out" 2> "$dir/$name.err" & bench=$!
sleep "${PROFILE_AFTER:-25}"
check_alive
curl -sf -o "$dir/$name.pprof" "http://127.0.0.1:$pprof_port/debug/pprof/profile?seconds=${PROFILE_SECONDS:-15}" ||
  die "could not take the edge's profile"
wait $bench
echo "$(date +%T) $name exit $?: $BENCH_DIR/$dir/$name.out, $BENCH_DIR/$dir/$name.pprof"
check_alive
stop_all
