#!/usr/bin/env bash
# The main job: push and consume jobs through amqp1q, printing throughput.
# Extra arguments go to `amqp1q demo` (try --jobs 100000, or --url amqp://...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh ""
exec "$AMQP1Q_PY" -m amqp1q demo "$@"
