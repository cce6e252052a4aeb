#!/bin/bash
# bench/inbound.sh - inbound accept rate of petreld's relay listener, then
# the same load against Postfix (/work/shared/bench/postfix-peer.sh), so
# both figures appear side by side.
#
# usage: PETREL_BUILD_DIR=/path/to/build bench/inbound.sh [N] [SIZE] [CONC]
#   N     messages (default 20000)
#   SIZE  message size in bytes (default 4096)
#   CONC  concurrent SMTP sessions (default 20)
# Builds nothing: PETREL_BUILD_DIR must hold petreld and petrelctl, built
# without sanitizers for meaningful numbers. Everything runs on 127.0.0.1;
# a temporary config and data directory are removed at the end
# (PETREL_KEEP_TMP=1 keeps them). PEER=0 skips the Postfix run.
set -eu

N=${1:-20000}
SIZE=${2:-4096}
CONC=${3:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
B=${PETREL_BUILD_DIR:-$HERE/../build}

. "$HERE/lib.sh"
bench_init inbound.sh smtp-source
bench_conf </dev/null

bench_start "$P_RELAY"

bench_tenant

# smtp-source writes "From: <sender>": MAIL FROM and header From are both
# in the tenant's verified managed domain
T0=$(date +%s.%N)
smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f "sender@$DOMAIN" -t rcpt@dest.test \
	"127.0.0.1:$P_RELAY"
T1=$(date +%s.%N)

STORED=$(ctl queue list --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=

$PY -c "n=$N; a=$T1-$T0; print(f'petrel accept {n/a:.0f} msg/s (N={n} size=$SIZE conc=$CONC; {a:.2f} s; stored and pending={$STORED})')"
if [ "$STORED" -lt "$N" ]; then
	echo "inbound.sh: WARNING: only $STORED of $N messages pending in the queue (rejected, or already delivered/bounced)" >&2
	grep -m5 'level=warn\|level=error' "$W/petreld.log" >&2 || true
fi

if [ "${PEER:-1}" != 0 ]; then
	"$PEER_SCRIPT" "$N" "$SIZE" "$CONC"
fi
