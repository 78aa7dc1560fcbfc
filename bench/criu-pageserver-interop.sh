#!/bin/sh
# Manual check (not in npm test: needs CRIU 4.2 built at $CRIU, default
# /work/criu/criu/criu, and Debian's crit): stasis's page server protocol
# against a real criu, both directions that run here, each with a program
# that checks 16 MiB of its own memory (PASS) after the restore.
#   1. criu dump --page-server  -> stasis page-server; criu restore of the combined dir
#   2. stasis dump --page-server -> criu page-server;  stasis restore of the combined
#      dir: the sender's pagemap copy with criu's pages file verifies against the
#      digest; criu's own pagemap (count in field 5) restores with --no-verify
# The targets run as root, like criu (it cannot dump other uids here).
# Prints one line per check, "ok ..." or "FAIL ..."; exits 1 if any failed.
set -u
CRIU=${CRIU:-/work/criu/criu/criu}
STASIS=${STASIS:-"node $(cd "$(dirname "$0")/.." && pwd)/bin/stasis.js"}
PORT=${PORT:-47391}
W=$(mktemp -d /tmp/stasis-criu-interop.XXXXXX)
fails=0
ok() { echo "ok $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
cat > "$W/prog.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
static volatile sig_atomic_t stop;
static void on(int s) { (void)s; stop = 1; }
#define PAT(i) ((unsigned char)((i) * 7 + (i) / 4096) | 1)
int main(int argc, char **argv) {
	size_t len = (size_t)atoi(argv[1]) << 20, i;
	unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	signal(SIGTERM, on);
	for (i = 0; i < len; i++) p[i] = PAT(i);
	printf("READY\n"); fflush(stdout);
	while (!stop) usleep(10000);
	for (i = 0; i < len; i++) if (p[i] != PAT(i)) { printf("FAIL at %zu\n", i); return 1; }
	printf("PASS\n"); return 0;
}
C
gcc -O2 -o "$W/prog" "$W/prog.c" || exit 1
finish() { # name pid: SIGTERM the restored program, wait for its verdict in its log
	kill -TERM "$2" 2>/dev/null
	for _ in $(seq 100); do grep -q '^PASS\|^FAIL' "$W/$1.log" && break; sleep 0.1; done
	grep -q '^PASS' "$W/$1.log"
}

# 1. criu dump -> stasis page-server -> criu restore
# Our own children (reaped once dumped: a zombie would keep the pid a restore needs).
setsid "$W/prog" 16 </dev/null >"$W/one.log" 2>&1 & P=$!; sleep 1
mkdir -p "$W/one-local"
$STASIS page-server -D "$W/one-recv" --address 127.0.0.1 --port $PORT >"$W/one-ps.out" 2>&1 & PS=$!
sleep 1
if "$CRIU" dump -t "$P" -D "$W/one-local" --shell-job --page-server --address 127.0.0.1 --port $PORT -o dump.log -v4; then ok "criu dump --page-server -> stasis page-server"; else bad "criu dump --page-server -> stasis page-server (see $W/one-local/dump.log)"; fi
wait $P 2>/dev/null
wait $PS && ok "stasis page-server exited 0: $(tail -1 "$W/one-ps.out")" || bad "stasis page-server: $(cat "$W/one-ps.out")"
crit decode -i "$W/one-recv/pagemap-$P.img" >/dev/null && ok "crit decodes the pagemap stasis received" || bad "crit decode of stasis's pagemap"
mkdir "$W/one-all"; cp -a "$W/one-local/." "$W/one-recv/." "$W/one-all/"
if "$CRIU" restore -D "$W/one-all" --shell-job -d -o restore.log -v4 && finish one "$P"; then ok "criu restore of the combined dir: PASS"; else bad "criu restore of the combined dir (see $W/one-all/restore.log, $W/one.log)"; fi

# 2. stasis dump -> criu page-server -> stasis restore
PORT=$((PORT + 1))
setsid "$W/prog" 16 </dev/null >"$W/two.log" 2>&1 & P=$!; sleep 1
mkdir -p "$W/two-recv"
"$CRIU" page-server -D "$W/two-recv" --address 127.0.0.1 --port $PORT -o ps.log -v4 & PS=$!
sleep 1
if $STASIS dump -t "$P" -D "$W/two-local" --page-server --address 127.0.0.1 --port $PORT; then ok "stasis dump --page-server -> criu page-server"; else bad "stasis dump --page-server -> criu page-server"; fi
wait $P 2>/dev/null
wait $PS && ok "criu page-server exited 0" || bad "criu page-server (see $W/two-recv/ps.log)"
mkdir "$W/two-all" "$W/two-criu"
cp -a "$W/two-local/." "$W/two-all/"; cp -a "$W/two-recv/"pages-*.img "$W/two-all/"
cp -a "$W/two-local/." "$W/two-criu/"; cp -a "$W/two-recv/"pages-*.img "$W/two-recv/"pagemap-*.img "$W/two-criu/"
cmp -s "$W/two-all/pagemap-$P.img" "$W/two-criu/pagemap-$P.img" && bad "criu's pagemap is byte-identical to stasis's (expected field 5)" || ok "criu's pagemap differs from stasis's copy (criu 4.2 writes the count in field 5)"
if $STASIS restore -D "$W/two-criu" -d --no-verify --skip-file-check && finish two "$P"; then ok "stasis restore --no-verify with criu's pagemap (field 5): PASS"; else bad "stasis restore with criu's pagemap"; fi
# The same images again, now with the sender's pagemap copy: verified against the digest.
sleep 1; printf 'READY\n' >"$W/two.log" # as at the dump (the first restore's PASS gone)
if $STASIS restore -D "$W/two-all" -d && finish two "$P"; then ok "stasis restore (verified) with the sender's pagemap and criu's pages file: PASS"; else bad "stasis restore (verified) of the sender's pagemap + criu's pages file"; fi

echo "work dir: $W"
[ $fails -eq 0 ]
