#!/usr/bin/env bash
# Everything the tests need, then the whole suite: install, brokers, lint, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k memory -x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh "test,lint"
py="$AMQP1Q_PY"
bin="$(dirname "$py")"

for setup in scripts/brokers/*.sh scripts/peers/*.sh; do
    [ -f "$setup" ] || continue
    echo "==> $setup"
    bash "$setup"
done

echo "==> ruff"
"$bin/ruff" check src tests
"$bin/ruff" format --check src tests
echo "==> mypy --strict"
"$bin/mypy"
# The suite mostly waits on brokers and subprocesses: 4 worker processes (pytest-xdist; set
# AMQP1Q_TEST_WORKERS=0 for one process). Tests marked serial (a RabbitMQ restart) disturb the
# others, so they run afterwards, alone. pytest's exit code 5 ("no tests collected", when the
# arguments select none of one kind) is not a failure.
workers="${AMQP1Q_TEST_WORKERS:-4}"
parallel=()
[ "$workers" != "0" ] && parallel=(-n "$workers")
echo "==> pytest (${workers} workers; then the serial tests)"
for arg in "$@"; do
    case "$arg" in -m | -m*) exec "$py" -m pytest "${parallel[@]}" "$@" ;; esac  # their -m
done
rc=0
"$py" -m pytest "${parallel[@]}" -m "not serial" "$@" || rc=$?
[ "$rc" = 5 ] && rc=0
serial_rc=0
"$py" -m pytest -m serial "$@" || serial_rc=$?
[ "$serial_rc" = 5 ] && serial_rc=0
[ "$rc" != 0 ] && exit "$rc"
exit "$serial_rc"
