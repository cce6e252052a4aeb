#!/bin/bash
# bench/http.sh - sends/s through the HTTP API (POST /emails:send over
# HTTPS, keep-alive, Bearer auth) next to the SMTP accept rate of the same
# petreld (smtp-source on the relay listener, as bench/inbound.sh does).
#
# usage: PETREL_BUILD_DIR=/path/to/build bench/http.sh [N] [SIZE] [CONC]
#   N     messages per run (default 5000)
#   SIZE  plainText body bytes of each message (default 4096)
#   CONC  concurrent clients (default 20), each one keep-alive connection
# Durability is on (petreld's default: every 202 and 250 follows a synced
# group commit). Build without sanitizers for meaningful numbers. All on
# 127.0.0.1; nobody answers the resolver address, so nothing leaves the
# machine (the messages stay deferred in the queue). PETREL_KEEP_TMP=1
# keeps the work directory; SMTP=0 skips the SMTP run.
set -eu

N=${1:-5000}
SIZE=${2:-4096}
CONC=${3:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
B=${PETREL_BUILD_DIR:-$HERE/../build}

. "$HERE/lib.sh"
bench_init http.sh smtp-source
P_HTTPS=$(free_port)
bench_conf <<EOF
listen_https = 127.0.0.1:$P_HTTPS
EOF

bench_start "$P_HTTPS"

bench_tenant
KEY=$(ctl apikey add bench bench | sed -n 's/^endpoint=.*;accesskey=//p')
[ -n "$KEY" ] || { echo "http.sh: apikey add printed no key" >&2; exit 1; }

# the load generator: CONC processes, one keep-alive HTTPS connection each
cat > "$W/load.py" <<'EOF'
import http.client, json, multiprocessing as mp, ssl, sys, time
port, key, sender, n, size, conc = (int(sys.argv[1]), sys.argv[2],
    sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
text = ("x" * 75 + "\n") * (size // 76) + "x" * (size % 76)
body = json.dumps({"senderAddress": sender,
                   "content": {"subject": "bench", "plainText": text},
                   "recipients": {"to": [{"address": "rcpt@dest.test"}]}}).encode()
hdrs = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}

def worker(count, q):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    ok = bad = 0
    for _ in range(count):
        c.request("POST", "/emails:send?api-version=2023-03-31", body, hdrs)
        r = c.getresponse()
        r.read()
        if r.status == 202: ok += 1
        else: bad += 1
    c.close()
    q.put((ok, bad))

if __name__ == "__main__":
    q = mp.Queue()
    per = [n // conc + (1 if i < n % conc else 0) for i in range(conc)]
    ps = [mp.Process(target=worker, args=(k, q)) for k in per]
    t0 = time.monotonic()
    for p in ps: p.start()
    res = [q.get() for _ in ps]
    for p in ps: p.join()
    t1 = time.monotonic()
    ok = sum(r[0] for r in res); bad = sum(r[1] for r in res)
    print("%d %d %.3f %d" % (ok, bad, t1 - t0, len(body)))
EOF

read -r OK BAD SECS BODY < <($PY "$W/load.py" "$P_HTTPS" "$KEY" "app@$DOMAIN" "$N" "$SIZE" "$CONC")
$PY -c "print(f'petrel http  {$OK/$SECS:.0f} sends/s (N=$N ok=$OK failed=$BAD body={$BODY} bytes conc=$CONC; {$SECS:.2f} s)')"

if [ "${SMTP:-1}" != 0 ] && command -v smtp-source >/dev/null; then
	T0=$(date +%s.%N)
	smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f "sender@$DOMAIN" -t rcpt@dest.test \
		"127.0.0.1:$P_RELAY"
	T1=$(date +%s.%N)
	$PY -c "n=$N; a=$T1-$T0; print(f'petrel smtp  {n/a:.0f} msg/s (N={n} size=$SIZE conc=$CONC; {a:.2f} s; same petreld)')"
fi
STORED=$(ctl queue list --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "queued and pending: $STORED"
[ "$BAD" = 0 ] || { echo "http.sh: $BAD requests failed" >&2; grep -m5 'level=warn\|level=error' "$W/petreld.log" >&2 || true; exit 1; }
