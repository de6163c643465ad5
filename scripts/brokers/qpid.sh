#!/usr/bin/env bash
# Qpid Proton's example brokers for the test suite: the C one (broker.c, which sends every
# delivery pre-settled) and the C++ one (broker.cpp), built from Debian's
# libqpid-proton11-dev-examples against libqpid-proton11-dev and libqpid-proton-cpp12-dev.
# Binaries go to .brokers/qpid/ in the repository (git ignores it; never commit them):
#   .brokers/qpid/broker-c HOST PORT        .brokers/qpid/broker-cpp -a HOST:PORT
# The tests start and stop the brokers themselves (tests/qpid.py), each on a free port.
# Idempotent; run by scripts/test.sh before every test run. When both binaries are built and
# newer than their sources it only checks that (a few milliseconds).
# Environment: AMQP1Q_QPID_DIR (where the binaries go; default .brokers/qpid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

OUT="${AMQP1Q_QPID_DIR:-.brokers/qpid}"
EXAMPLES=/usr/share/proton/examples
PACKAGES=(libqpid-proton11-dev-examples libqpid-proton11-dev libqpid-proton-cpp12-dev gcc g++)
t0=$EPOCHREALTIME

elapsed() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2fs", b - a }'; }
say() { echo "qpid.sh: $*"; }
die() { echo "qpid.sh: ERROR: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# built BINARY SOURCE: the binary exists and is newer than its source.
built() { [ -x "$1" ] && [ -f "$2" ] && [ "$1" -nt "$2" ]; }

if built "$OUT/broker-c" "$EXAMPLES/c/broker.c" && built "$OUT/broker-cpp" "$EXAMPLES/cpp/broker.cpp"; then
    say "ready (already built in $OUT, $(elapsed))"
    exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get is needed to install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
          as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        die "could not install ${missing[*]} with apt-get"
fi

mkdir -p "$OUT"
# Built to a temporary name, then moved: a half-built binary never counts as built.
say "building broker-c"
gcc -O2 -o "$OUT/broker-c.tmp" -I"$EXAMPLES/c" "$EXAMPLES/c/broker.c" -lqpid-proton -lpthread
mv "$OUT/broker-c.tmp" "$OUT/broker-c"
say "building broker-cpp"
g++ -O2 -o "$OUT/broker-cpp.tmp" -I"$EXAMPLES/cpp" "$EXAMPLES/cpp/broker.cpp" \
    -lqpid-proton-cpp -lpthread
mv "$OUT/broker-cpp.tmp" "$OUT/broker-cpp"
say "ready ($OUT/broker-c, $OUT/broker-cpp; $(elapsed))"
