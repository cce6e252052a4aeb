# bench/lib.sh - set-up shared by the bench scripts (sourced, not run).
# The script sets HERE and B, then calls bench_init NAME [COMMAND ...]:
# it checks the binaries and the commands the bench needs, warns about a
# sanitizer build, makes the work directory W and the EXIT trap that stops
# petreld (PID) and a sink (SINK) and removes W (PETREL_KEEP_TMP=1 keeps it).
# Then: free_port [HOST], bench_cert, bench_conf (petreld's config, with
# the relay listener on P_RELAY), ctl ..., bench_start PORT (starts
# petreld and waits until PORT accepts), bench_tenant (tenant "bench", a
# managed domain in DOMAIN, relay network 127.0.0.0/8).

PY=/usr/bin/python3
# the peer script beside the checkout (as CI lays out shared/), else here
PEER_SCRIPT=${PEER_SCRIPT:-$HERE/../../shared/bench/postfix-peer.sh}
[ -x "$PEER_SCRIPT" ] || PEER_SCRIPT=/work/shared/bench/postfix-peer.sh
PID=
SINK=

bench_cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	if [ -n "$SINK" ]; then
		kill "$SINK" 2>/dev/null || true
		wait "$SINK" 2>/dev/null || true
	fi
	[ -n "${PETREL_KEEP_TMP:-}" ] || rm -rf "$W"
}

bench_init() {
	NAME=$1
	shift
	for prog in petreld petrelctl; do
		[ -x "$B/$prog" ] || { echo "$NAME: no $B/$prog (set PETREL_BUILD_DIR)" >&2; exit 1; }
	done
	for prog in "$@"; do
		command -v "$prog" >/dev/null || { echo "$NAME: $prog not installed" >&2; exit 1; }
	done
	if ldd "$B/petreld" 2>/dev/null | grep -q 'libasan\|libubsan'; then
		echo "$NAME: WARNING: $B/petreld is a sanitizer build; numbers are not representative" >&2
	fi
	W=$(mktemp -d "/tmp/petrel-${NAME%.sh}.XXXXXX")
	trap bench_cleanup EXIT
}

free_port() {
	$PY -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

# bench_cert - a self-signed certificate for localhost in W
bench_cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
		-keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1
	chmod 600 "$W/key.pem"
}

# bench_conf - W/petrel.conf for a bench: the relay listener on a free
# port (P_RELAY), submission listeners off, a test certificate, a resolver
# address nobody answers (P_DNS: no DNS traffic leaves the machine), info
# logging, no per-client connection cap; lines on stdin are appended
bench_conf() {
	P_RELAY=$(free_port); P_DNS=$(free_port)
	bench_cert
	cat > "$W/petrel.conf" <<EOF
hostname = petrel.test
data_dir = $W/data
listen_submission =
listen_submissions =
listen_relay = 127.0.0.1:$P_RELAY
tls_cert = $W/cert.pem
tls_key = $W/key.pem
managed_zone = petrel.test
resolver = 127.0.0.1:$P_DNS
log_level = info
max_connections_per_ip = 10000
EOF
	cat >> "$W/petrel.conf"
}

ctl() { "$B/petrelctl" -c "$W/petrel.conf" "$@"; }

# bench_start PORT - petreld on W/petrel.conf, up once PORT accepts
bench_start() {
	local up=
	"$B/petreld" -d -c "$W/petrel.conf" 2>"$W/petreld.log" &
	PID=$!
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then up=1; break; fi
		kill -0 "$PID" 2>/dev/null || { echo "$NAME: petreld died:" >&2; tail -20 "$W/petreld.log" >&2; exit 1; }
		sleep 0.05
	done
	[ -n "$up" ] || { echo "$NAME: port $1 not accepting" >&2; tail -20 "$W/petreld.log" >&2; exit 1; }
}

# sink_count - messages smtp-sink (started with -c, output in W/sink.out)
# has counted so far. Only the end of the file is read: the whole of it
# grows by ~30 bytes a message, and reading it 20 times a second took
# 1-2% of the CPU the measured run needs.
sink_count() {
	tail -c 256 "$W/sink.out" | tr '\r' '\n' | grep -oE 'mesg=[0-9]+' |
	    tail -1 | cut -d= -f2
}

# bench_tenant - tenant "bench" with a managed domain (DOMAIN) and the
# relay network 127.0.0.0/8
bench_tenant() {
	ctl tenant add bench >/dev/null
	DOMAIN=$(ctl domain add-managed bench | grep -oE '[A-Za-z0-9][A-Za-z0-9-]*\.petrel\.test' | head -1 | tr '[:upper:]' '[:lower:]')
	[ -n "$DOMAIN" ] || { echo "$NAME: domain add-managed gave no domain" >&2; exit 1; }
	ctl network add bench 127.0.0.0/8 >/dev/null
}
