#!/bin/bash
# bench/e2e-dkim.sh - bench/e2e.sh against Postfix with the OpenDKIM milter
# (postfix-peer.sh N SIZE CONC dkim), with the number of DKIM signing runs
# petreld's /metrics counted. Same usage and environment as bench/e2e.sh.
BENCH_DKIM=1 exec "$(cd "$(dirname "$0")" && pwd)/e2e.sh" "$@"
