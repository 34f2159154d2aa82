#!/usr/bin/env python3
"""Medians of the pushbench reports suite.sh writes: one line per row (NAME-RUN.json grouped by NAME)."""
import collections, glob, json, os, statistics, sys

rows = collections.defaultdict(list)
for path in sorted(glob.glob(os.path.join(sys.argv[1] if len(sys.argv) > 1 else "suite", "*.json"))):
    name = os.path.basename(path)[:-5].rsplit("-", 1)[0]
    rows[name].append(json.load(open(path)))

def med(reports, *keys):
    vals = []
    for r in reports:
        v = r
        for k in keys:
            v = (v or {}).get(k)
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else float("nan")

print(f"{'row':18} {'runs':>4} {'deliv/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'gaps':>6} "
      f"{'upd/read':>8} {'B/upd':>6} {'req/upd':>7} {'edge':>5} {'ms/1k':>6} {'nats':>5} {'gen':>5} {'behind':>7} "
      f"{'stale50':>7} {'stale99':>7} {'fresh%':>6}")
for name, rs in rows.items():
    behind = statistics.median([sum(l["behind"] for l in r.get("edge_lag") or []) for r in rs])
    print(f"{name:18} {len(rs):>4} {med(rs,'deliveries','per_s'):>10,.0f} {med(rs,'latency','p50_ms'):>8.1f} "
          f"{med(rs,'latency','p90_ms'):>8.1f} {med(rs,'latency','p99_ms'):>8.1f} {med(rs,'latency','max_ms'):>8.0f} "
          f"{med(rs,'integrity','gaps'):>6.0f} {med(rs,'wire','updates_per_read'):>8.1f} "
          f"{med(rs,'wire','bytes_per_update'):>6.0f} {med(rs,'wire','requests_per_update'):>7.3f} "
          f"{med(rs,'cpu','edge_cores'):>5.2f} {med(rs,'cpu','edge_ms_per_1000_deliveries'):>6.1f} "
          f"{med(rs,'cpu','nats_cores'):>5.2f} {med(rs,'cpu','generator_cores'):>5.2f} {behind:>7.0f} "
          f"{med(rs,'staleness','p50_ms'):>7.1f} {med(rs,'staleness','p99_ms'):>7.1f} "
          f"{100 * med(rs,'staleness','fresh_share'):>6.1f}")
