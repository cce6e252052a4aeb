#!/bin/bash
# run-tests.sh - build Petrel with sanitizers (unless PETREL_BUILD_DIR names
# a finished build), run the Check unit tests and the Python integration
# tests, and end with one line "N passed, N failed[, N skipped]".
# Exit status: 0 only when something ran and nothing failed.
#
# Environment: PETREL_BUILD_DIR (default ./build), PYTEST_ARGS (extra
# arguments for pytest, e.g. "-k relay -x").
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
case ${PETREL_BUILD_DIR:-} in
""|/*) ;;
*) PETREL_BUILD_DIR=$PWD/$PETREL_BUILD_DIR ;;
esac
cd "$SRC" || exit 2
BUILD=${PETREL_BUILD_DIR:-$SRC/build}
PYTHON=/usr/bin/python3

# counts - "P passed, F failed" plus ", S skipped" when S > 0
counts() {
	if [ "$3" -gt 0 ]; then echo "$1 passed, $2 failed, $3 skipped"
	else echo "$1 passed, $2 failed"; fi
}
die() { echo "run-tests: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

# --- build
is_san_build() { grep -q '^SAN_CFLAGS = .*-fsanitize' "$1/Makefile" 2>/dev/null; }

if [ -n "${PETREL_BUILD_DIR:-}" ] && [ -x "$BUILD/petreld" ] && [ -x "$BUILD/petrelctl" ]; then
	echo "== using build in $BUILD"
	is_san_build "$BUILD" || echo "run-tests: note: $BUILD is not a sanitizer build"
else
	echo "== building in $BUILD"
	if [ ! -x "$SRC/configure" ]; then
		./autogen.sh || die "autogen.sh failed"
	fi
	mkdir -p "$BUILD" || die "cannot create $BUILD"
	if ! is_san_build "$BUILD"; then
		# missing, or configured without sanitizers (e.g. by contrib/demo.sh)
		[ -f "$BUILD/Makefile" ] && make -C "$BUILD" -s clean >/dev/null 2>&1
		(cd "$BUILD" && "$SRC/configure" --enable-sanitizers -q) ||
			die "configure failed"
	fi
	if ! make -C "$BUILD" -s -j2 >"$BUILD/build.out" 2>&1; then
		tail -30 "$BUILD/build.out" >&2
		die "build failed (full output in $BUILD/build.out)"
	fi
fi

# --- sanitizer options: LeakSanitizer needs ptrace; switch it off only
# where it cannot run (it fails under ptrace restrictions)
lsan=1
if command -v cc >/dev/null; then
	t=$(mktemp -d)
	printf '#include <stdlib.h>\nvoid *volatile p;\nint main(void){p=malloc(7);p=0;return 0;}\n' >"$t/l.c"
	if cc -fsanitize=address -o "$t/l" "$t/l.c" 2>/dev/null; then
		out=$(ASAN_OPTIONS=detect_leaks=1 "$t/l" 2>&1)
		case $out in
		*"detected memory leaks"*) ;;
		*) lsan=0 ;;
		esac
	fi
	rm -rf "$t"
fi
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=$lsan"
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS UBSAN_OPTIONS
echo "== ASAN_OPTIONS=$ASAN_OPTIONS"

passed=0 failed=0 skipped=0

# --- unit tests (Check); the command-line AM_TESTS_ENVIRONMENT keeps our
# ASAN_OPTIONS instead of the Makefile's
echo "== unit tests"
rm -f "$BUILD"/tests/unit/*.log "$BUILD"/tests/unit/*.trs
CK_FORK=yes CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-4} \
	make -C "$BUILD" -s -j2 check \
	AM_TESTS_ENVIRONMENT='CK_FORK=yes; export CK_FORK;' >"$BUILD/unit-check.out" 2>&1
unit_rc=$?
u_pass=0 u_fail=0 u_skip=0 ntrs=0
for trs in "$BUILD"/tests/unit/*.trs; do
	[ -e "$trs" ] || continue
	ntrs=$((ntrs + 1))
	log=${trs%.trs}.log
	name=$(basename "${trs%.trs}")
	res=$(sed -n 's/^:test-result: *//p' "$trs" | head -1)
	# Check: "100%: Checks: N, Failures: F, Errors: E" (one per suite run)
	read -r n f e < <(sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$log" |
		awk '{n+=$1; f+=$2; e+=$3} END {print n+0, f+0, e+0}')
	if [ "$res" = SKIP ]; then
		u_skip=$((u_skip + 1))
	elif [ "$n" -gt 0 ]; then
		u_pass=$((u_pass + n - f - e))
		u_fail=$((u_fail + f + e))
		# all checks passed, yet the program failed (leak, crash at exit)
		if [ "$res" != PASS ] && [ $((f + e)) -eq 0 ]; then
			u_fail=$((u_fail + 1))
		fi
	elif [ "$res" = PASS ]; then
		u_pass=$((u_pass + 1))
	else
		u_fail=$((u_fail + 1))
	fi
	printf '   %-24s %-5s checks=%s failures=%s errors=%s\n' "$name" "${res:-?}" "$n" "$f" "$e"
	if [ "$res" != PASS ] && [ "$res" != SKIP ]; then
		grep -E '(:[A-Z]:|AddressSanitizer|runtime error|LeakSanitizer)' "$log" | head -20 | sed 's/^/      /'
	fi
done
if [ "$ntrs" -eq 0 ] && [ "$unit_rc" -ne 0 ]; then
	echo "   make check failed before running tests:"
	tail -20 "$BUILD/unit-check.out" | sed 's/^/      /'
	u_fail=$((u_fail + 1))
fi
echo "unit: $(counts "$u_pass" "$u_fail" "$u_skip")"
passed=$((passed + u_pass)); failed=$((failed + u_fail)); skipped=$((skipped + u_skip))

# --- integration tests (pytest)
echo "== integration tests"
junit=$(mktemp /tmp/petrel-junit.XXXXXX.xml)
# shellcheck disable=SC2086
PETREL_BUILD_DIR=$BUILD timeout "${PYTEST_TIMEOUT:-3600}" \
	"$PYTHON" -m pytest -q -p no:cacheprovider -rfE --junitxml="$junit" \
	${PYTEST_ARGS:-} tests/integration
py_rc=$?
read -r i_pass i_fail i_skip < <("$PYTHON" - "$junit" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0 0"); sys.exit()
p = f = s = 0
for tc in root.iter("testcase"):
    kids = {c.tag for c in tc}
    if kids & {"failure", "error"}:
        f += 1
    elif "skipped" in kids:
        s += 1
    else:
        p += 1
print(p, f, s)
EOF
)
rm -f "$junit"
# pytest itself broke (internal error, interrupted, timeout) without a counted failure
if [ "$py_rc" -ne 0 ] && [ "$py_rc" -ne 5 ] && [ "$i_fail" -eq 0 ]; then
	echo "   pytest exited $py_rc"
	i_fail=1
fi
echo "integration: $(counts "$i_pass" "$i_fail" "$i_skip")"
passed=$((passed + i_pass)); failed=$((failed + i_fail)); skipped=$((skipped + i_skip))

counts "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ] && [ $((passed + failed)) -gt 0 ]
