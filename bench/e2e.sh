#!/bin/bash
# bench/e2e.sh - end-to-end rate: smtp-source -> petreld (relay listener)
# -> queue (LMDB, group commit) -> prepare stage (DKIM RSA-2048 + Ed25519
# signatures on the worker threads, as for every message) -> delivery ->
# smtp-sink (Postfix's) on 127.0.0.2, then the same load through Postfix
# (/work/shared/bench/postfix-peer.sh), so both figures appear side by side.
# Run as bench/e2e-dkim.sh (or with BENCH_DKIM=1), the peer is Postfix with
# the OpenDKIM milter, and Petrel's line also gives the number of DKIM
# signing runs its /metrics counted (one per message).
#
# usage: PETREL_BUILD_DIR=/path/to/build bench/e2e.sh [N] [SIZE] [CONC]
#   N     messages (default 20000)
#   SIZE  message size in bytes (default 4096)
#   CONC  concurrent SMTP sessions in, and outbound connections per
#         destination out (default 20)
# Petrel's figure is N divided by the time from the first submission until
# the sink has accepted the N-th message. Petrel reaches the sink through
# its relayhost setting ([127.0.0.2], port from smtp_remote_port), so no
# DNS is involved (as in the Postfix peer, which uses relayhost too). The
# sender domain is a managed domain (verified at once, with its RSA-2048
# and Ed25519 keys).
# Builds nothing: PETREL_BUILD_DIR must hold petreld and petrelctl, built
# without sanitizers for meaningful numbers. Everything runs on 127.0.0.0/8;
# the temporary directory is removed at the end (PETREL_KEEP_TMP=1 keeps
# it). PEER=0 skips the Postfix run.
set -eu

N=${1:-20000}
SIZE=${2:-4096}
CONC=${3:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
B=${PETREL_BUILD_DIR:-$HERE/../build}
TIMEOUT=${TIMEOUT:-300}
if [ -n "${BENCH_DKIM:-}" ]; then
	ME=e2e-dkim.sh; LABEL=petrel+dkim; PEER_DKIM=dkim
else
	ME=e2e.sh; LABEL=petrel; PEER_DKIM=
fi

. "$HERE/lib.sh"
bench_init "$ME" smtp-source smtp-sink
P_SINK=$(free_port 127.0.0.2); P_METRICS=$(free_port 127.0.0.1)
bench_conf <<EOF
relayhost = [127.0.0.2]
smtp_remote_port = $P_SINK
smtp_destination_concurrency = $CONC
listen_metrics = 127.0.0.1:$P_METRICS
EOF

# the sink: counts accepted messages ("mesg=N") on stdout
smtp-sink -u root -c "127.0.0.2:$P_SINK" 1000 >"$W/sink.out" 2>&1 &
SINK=$!

bench_start "$P_RELAY"

bench_tenant

T0=$(date +%s.%N)
smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f "sender@$DOMAIN" -t rcpt@dest.test \
	"127.0.0.1:$P_RELAY"
T1=$(date +%s.%N)
DEADLINE=$(( $(date +%s) + TIMEOUT ))
while :; do
	GOT=$(sink_count); GOT=${GOT:-0}
	[ "$GOT" -ge "$N" ] && break
	if [ "$(date +%s)" -ge "$DEADLINE" ]; then
		echo "$ME: WARNING: only $GOT of $N messages reached the sink after ${TIMEOUT}s" >&2
		break
	fi
	kill -0 "$PID" 2>/dev/null || { echo "$ME: petreld died:" >&2; tail -20 "$W/petreld.log" >&2; exit 1; }
	sleep 0.05
done
T2=$(date +%s.%N)
PENDING=$(ctl queue list --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')
SIGNED=
if [ -n "$PEER_DKIM" ]; then
	SIGNED=" dkim_signed=$($PY -c 'import sys, urllib.request
t = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
print(next((l.split()[1] for l in t.splitlines() if l.startswith("petrel_dkim_sign_seconds_count")), "?"))' "$P_METRICS" 2>/dev/null || echo "?")"
fi
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=

$PY -c "n=$N; a=$T1-$T0; b=$T2-$T0; print(f'$LABEL accept {n/a:.0f} msg/s, end-to-end {$GOT/b:.0f} msg/s (N={n} size=$SIZE conc=$CONC; {b:.2f} s; delivered={$GOT} pending={$PENDING}$SIGNED)')"
grep -m5 'level=warn\|level=error' "$W/petreld.log" >&2 || true

if [ "${PEER:-1}" != 0 ]; then
	"$PEER_SCRIPT" "$N" "$SIZE" "$CONC" $PEER_DKIM
fi
