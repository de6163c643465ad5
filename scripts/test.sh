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
echo "==> pytest"
exec "$py" -m pytest "$@"
