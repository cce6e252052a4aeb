#!/bin/bash
# install-deps.sh - install Petrel's build and test dependencies (Debian 12,
# as root). Idempotent. Services that the packages would start (postfix on
# port 25, unbound, opendkim) are kept from starting: the tests run their
# own instances on free ports.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: run as root (or with sudo)" >&2
	exit 1
fi

PKGS=(
	# build
	build-essential autoconf automake libtool pkg-config
	libevent-dev libssl-dev libopendkim-dev libspf2-dev liblmdb-dev
	libunbound-dev libjansson-dev libidn2-dev libopendmarc-dev check
	# test and tools
	unbound swaks openssl lmdb-utils
	python3 python3-pytest python3-aiosmtpd python3-dkim python3-dnspython python3-authres python3-prometheus-client
	opendkim opendkim-tools postfix nodejs
)
# npm: Debian's package conflicts with a nodejs that bundles its own npm
# (e.g. NodeSource's); install it only when there is no npm yet
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# keep maintainer scripts from starting daemons during the install
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	made_policy=1
fi
cleanup() { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends "${PKGS[@]}"

# no running postfix on port 25, and none at the next boot either
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now postfix >/dev/null 2>&1 || true
else
	update-rc.d postfix disable >/dev/null 2>&1 || true
fi
if postfix status >/dev/null 2>&1; then
	postfix stop >/dev/null 2>&1 || true
fi
if command -v ss >/dev/null 2>&1 && ss -ltn 'sport = :25' | grep -q LISTEN; then
	echo "install-deps.sh: warning: something still listens on port 25" >&2
fi
echo "install-deps.sh: dependencies installed"
