#!/bin/bash
# demo.sh - try Petrel on this machine: install the dependencies, build into
# ./build, set up ./demo (configuration, self-signed certificate, tenant
# "demo" with a managed sender domain, user "demo", relay network
# 127.0.0.0/8), print how to send a test message, then run petreld in the
# foreground (Ctrl-C stops it). Re-running reuses ./demo; delete ./demo
# (or set DEMO_RESET=1) to start over. DEMO_SKIP_DEPS=1 skips the install.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
cd "$SRC"
BUILD=$SRC/build
DEMO=$SRC/demo
CONF=$DEMO/petrel.conf
CTL() { "$BUILD/petrelctl" -c "$CONF" "$@"; }

# --- dependencies
if [ -z "${DEMO_SKIP_DEPS:-}" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		bash contrib/install-deps.sh
	elif command -v sudo >/dev/null 2>&1; then
		sudo bash contrib/install-deps.sh
	else
		echo "demo.sh: not root and no sudo: skipping contrib/install-deps.sh" >&2
	fi
fi

# --- build (no sanitizers; an existing ./build is reused as configured)
if [ ! -f "$BUILD/Makefile" ]; then
	[ -x ./configure ] || ./autogen.sh
	mkdir -p "$BUILD"
	(cd "$BUILD" && "$SRC/configure" -q)
fi
make -C "$BUILD" -s -j2

# --- demo set-up (once)
[ -z "${DEMO_RESET:-}" ] || rm -rf "$DEMO"
if [ ! -f "$DEMO/setup.done" ]; then
	rm -rf "$DEMO"
	mkdir -p "$DEMO"
	chmod 755 "$DEMO"
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
		-keyout "$DEMO/key.pem" -out "$DEMO/cert.pem" -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
	chmod 600 "$DEMO/key.pem"
	cat >"$CONF" <<EOF
# Petrel demo configuration, written by contrib/demo.sh (see petrel.conf(5))
hostname = localhost
data_dir = $DEMO/data
listen_submission = 127.0.0.1:2587
listen_submissions = 127.0.0.1:2465
listen_relay = 127.0.0.1:2525
tls_cert = $DEMO/cert.pem
tls_key = $DEMO/key.pem
managed_zone = petrel.test
log_level = info
EOF
	"$BUILD/petreld" -n -c "$CONF"
	CTL tenant add demo
	domain=$(CTL domain add-managed demo |
		grep -oE '[A-Za-z0-9][A-Za-z0-9-]*\.petrel\.test' | head -1)
	if [ -z "$domain" ]; then
		echo "demo.sh: petrelctl domain add-managed printed no domain" >&2
		exit 1
	fi
	password=$(openssl rand -base64 18 | tr -d '/+=' | head -c 20)
	printf '%s\n' "$password" | CTL user add demo demo
	CTL network add demo 127.0.0.0/8
	umask 077
	printf 'domain=%s\npassword=%s\n' "$domain" "$password" >"$DEMO/credentials"
	touch "$DEMO/setup.done"
fi
domain=$(sed -n 's/^domain=//p' "$DEMO/credentials")
password=$(sed -n 's/^password=//p' "$DEMO/credentials")

cat <<EOF

Petrel demo: tenant "demo", sender domain $domain, user "demo"
(password: $password; kept in demo/credentials).

Send a test message from another terminal, either via the relay port
(127.0.0.0/8 is a registered network of tenant demo, no authentication):

  swaks --server 127.0.0.1:2525 --from demo@$domain --to someone@example.com

or via submission with STARTTLS and SMTP AUTH:

  swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user demo \\
        --auth-password '$password' --from demo@$domain --to someone@example.com

Queue and status: build/petrelctl -c demo/petrel.conf queue list
Starting petreld in the foreground (Ctrl-C stops it) ...

EOF
exec "$BUILD/petreld" -d -c "$CONF"
