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
PEER_SCRIPT=${PEER_SCRIPT:-$HERE/../../shared/bench/postfix-peer.sh}
[ -x "$PEER_SCRIPT" ] || PEER_SCRIPT=/work/shared/bench/postfix-peer.sh
PY=/usr/bin/python3

for prog in petreld petrelctl; do
	[ -x "$B/$prog" ] || { echo "inbound.sh: no $B/$prog (set PETREL_BUILD_DIR)" >&2; exit 1; }
done
command -v smtp-source >/dev/null || { echo "inbound.sh: smtp-source (postfix) not installed" >&2; exit 1; }
if ldd "$B/petreld" 2>/dev/null | grep -q 'libasan\|libubsan'; then
	echo "inbound.sh: WARNING: $B/petreld is a sanitizer build; numbers are not representative" >&2
fi

W=$(mktemp -d /tmp/petrel-bench.XXXXXX)
PID=
cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	[ -n "${PETREL_KEEP_TMP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
P_SUB=$(free_port); P_SUBS=$(free_port); P_RELAY=$(free_port); P_DNS=$(free_port)

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
	-keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1
chmod 600 "$W/key.pem"

cat > "$W/petrel.conf" <<EOF
hostname = petrel.test
data_dir = $W/data
listen_submission = 127.0.0.1:$P_SUB
listen_submissions = 127.0.0.1:$P_SUBS
listen_relay = 127.0.0.1:$P_RELAY
tls_cert = $W/cert.pem
tls_key = $W/key.pem
managed_zone = petrel.test
# nobody answers here: no DNS traffic leaves the machine
resolver = 127.0.0.1:$P_DNS
log_level = info
max_connections_per_ip = 10000
EOF

ctl() { "$B/petrelctl" -c "$W/petrel.conf" "$@"; }

"$B/petreld" -d -c "$W/petrel.conf" 2>"$W/petreld.log" &
PID=$!
UP=
for _ in $(seq 1 200); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$P_RELAY") 2>/dev/null; then UP=1; break; fi
	kill -0 "$PID" 2>/dev/null || { echo "inbound.sh: petreld died:" >&2; tail -20 "$W/petreld.log" >&2; exit 1; }
	sleep 0.05
done
[ -n "$UP" ] || { echo "inbound.sh: relay listener not accepting" >&2; tail -20 "$W/petreld.log" >&2; exit 1; }

ctl tenant add bench >/dev/null
DOMAIN=$(ctl domain add-managed bench | grep -oE '[A-Za-z0-9][A-Za-z0-9-]*\.petrel\.test' | head -1 | tr '[:upper:]' '[:lower:]')
[ -n "$DOMAIN" ] || { echo "inbound.sh: domain add-managed gave no domain" >&2; exit 1; }
ctl network add bench 127.0.0.0/8 >/dev/null

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
