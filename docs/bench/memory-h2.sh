#!/bin/bash
# Edge memory per idle SSE stream over HTTP/2 next to HTTP/1.1: RSS growth of one edge holding N idle streams (10
# topics each), divided by N. Usage: memory-h2.sh h2|h2c|h1|h1-plain [N, default 15000] [streams per connection, default 1]
#   h2       HTTP/2 over TLS (-tls-cert), K streams per connection
#   h2c      HTTP/2 in clear text (-h2c), K streams per connection
#   h1       HTTP/1.1 over TLS: the hijacked stream, one connection each
#   h1-plain HTTP/1.1 in clear text: the hijacked stream, one connection each
source "$(dirname "$0")/lib.sh"
mode=$1 n=${2:-15000} per=${3:-1}
(cd "$REPO" && go build -o "$BENCH_DIR/sseholder" ./docs/bench/sseholder) || exit 1
[ -f cert.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout key.pem -out cert.pem 2> /dev/null
start_nats
case $mode in
  h2 | h1) SCHEME=https start_edges 1 -tls-cert cert.pem -tls-key key.pem ;;
  h2c) start_edges 1 -h2c ;;
  h1-plain) start_edges 1 ;;
  *) echo "mode $mode: h2, h2c, h1 or h1-plain" >&2; stop_all; exit 2 ;;
esac
curl -sk -o /dev/null "$EDGE_URL/api/snapshot?topic=market.*" # first-use costs into the baseline
sleep 1
base=$(rss_kib $EDGES)
./sseholder -url "$EDGE_URL" -proto "${mode%-plain}" -streams "$n" -per-conn "$per" -rate 3000 -hold 25s \
  > "memory-$mode.out" 2>&1 & holder=$!
for _ in $(seq 120); do grep -q '^open:' "memory-$mode.out" && break; sleep 0.5; done
cat "memory-$mode.out"
for i in 1 2 3; do
  sleep 3
  echo "sample $i: $(( ($(rss_kib $EDGES) - base) * 1024 / n )) bytes of edge RSS per $mode stream ($per per connection)"
done
echo "edge goroutines: $(curl -sk "$EDGE_URL/metrics" | awk '/^go_goroutines /{print $2}')"
wait $holder
check_alive
stop_all
