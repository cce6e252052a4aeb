#!/bin/sh
# setup-mailauth.sh - install the npm mailauth 4.13.x library (and nothing
# else) into tests/integration/mailauth-npm/node_modules for test_dkim_arc.py,
# without a package.json: a prefix of its own, since npm install --no-save
# prunes whatever else the prefix holds. A second run is a no-op once the right version is there.
set -e
here=$(cd "$(dirname "$0")" && pwd)/mailauth-npm
mkdir -p "$here"
want=4.13
if [ -f "$here/node_modules/mailauth/package.json" ] &&
    grep -q "\"version\": \"$want\." "$here/node_modules/mailauth/package.json"; then
	exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm not found" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "node not found" >&2; exit 1; }
npm install --no-save --no-audit --no-fund --silent --prefix "$here" "mailauth@$want"
test -f "$here/node_modules/mailauth/package.json"
