#!/bin/bash
# The abuse suite of push/abuse_suite_test.go at a larger scale than CI runs it (LIVEPUSH_ABUSE_SCALE, default 10:
# 10,000 old-cursor polls and 2,000 resumes at once, 400 payloads of 900 KiB, 30,000 topics from a flooding
# producer, subscribe churn over 100,000 topics), without the race detector, repeated ROUNDS times (default 3).
# Prints each test's figures; docs/operations.md quotes them.
set -eu
cd "$(dirname "$0")/../.."
scale=${LIVEPUSH_ABUSE_SCALE:-10}
for round in $(seq "${ROUNDS:-3}"); do
  echo "== round $round, scale $scale"
  LIVEPUSH_ABUSE_SCALE=$scale go test -count=1 -timeout 30m -run 'TestAbuse' -v ./push |
    grep -E 'abuse_suite_test.go|^(--- |ok|FAIL)'
done
