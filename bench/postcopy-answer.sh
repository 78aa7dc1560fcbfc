#!/bin/bash
# Time to answer of a post-copy restore against a local lazy restore (manual
# bench, not in npm test). A program (test/fixtures/postcopy.c, in a pid
# namespace of its own so its copy can run while the source is still frozen)
# fills MIB MiB; then either
#   local: dump, then restore -d --lazy-pages from the images
#   post:  dump --lazy-pages --port PORT, then restore -d --lazy-pages --page-server
# and SIGUSR1 makes the copy read the first, middle and last page of the region.
# Prints the restore command's wall time, when the copy answered and when
# every page was in (seconds from the restore command's start), then PASS
# once the copy checked every byte.
# usage: bench/postcopy-answer.sh local|post [MIB=1024] [PORT=47377]
set -u
MODE=$1; MIB=${2:-1024}; PORT=${3:-47377}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S="node $ROOT/bin/stasis.js"
W=$(mktemp -d /tmp/stasis-postcopy-bench.XXXXXX)
gcc -O2 -I "$ROOT/test/fixtures" -o "$W/postcopy" "$ROOT/test/fixtures/postcopy.c" || exit 1
setsid "$W/postcopy" "$W" "$MIB" </dev/null >"$W/log" 2>&1 & F=$!
for _ in $(seq 1200); do grep -q INIT_READY "$W/log" && break; sleep 0.1; done
INIT=$(sed -n 's/^CHILD //p' "$W/log")
now() { date +%s.%N; }
if [ "$MODE" = local ]; then
  $S dump -t "$INIT" -D "$W/img" 2>&1 | tail -1
  for _ in $(seq 100); do grep -q CHILD_EXIT "$W/log" && break; sleep 0.1; done
  t0=$(now); OUT=$($S restore -D "$W/img" -d --lazy-pages --skip-file-check 2>&1); t1=$(now)
else
  $S dump -t "$INIT" -D "$W/img" --lazy-pages --address 127.0.0.1 --port "$PORT" --timings >"$W/dump.out" 2>&1 & D=$!
  for _ in $(seq 1200); do grep -q served "$W/dump.out" && break; sleep 0.1; done
  t0=$(now); OUT=$($S restore -D "$W/img" -d --lazy-pages --page-server --address 127.0.0.1 --port "$PORT" --skip-file-check 2>&1); t1=$(now)
fi
COPY=$(echo "$OUT" | sed -n 's/^restored pid \([0-9]*\).*/\1/p'); SRV=$(echo "$OUT" | sed -n 's/.*by pid \([0-9]*\)$/\1/p')
kill -USR1 "$COPY"; for _ in $(seq 10000); do grep -q '^ANSWER 1' "$W/log" && break; sleep 0.002; done; t2=$(now)
while kill -0 "$SRV" 2>/dev/null; do sleep 0.05; done; t3=$(now)
echo "$MODE $MIB MiB: restore command $(echo "$t1 - $t0" | bc) s, answer at $(echo "$t2 - $t0" | bc) s ($(grep '^ANSWER 1' "$W/log")), every page in at $(echo "$t3 - $t0" | bc) s; $(echo "$OUT" | head -1)"
if [ "$MODE" = post ]; then wait "$D"; echo "dump exit $?:"; grep -E 'lazy-serve|dumped pid' "$W/dump.out"; fi
kill -TERM "$COPY"; for _ in $(seq 1200); do grep -q '^PASS\|^FAIL' "$W/log" && break; sleep 0.1; done
grep '^PASS\|^FAIL' "$W/log"
kill -TERM "$F"; wait "$F"
rm -rf "$W"
