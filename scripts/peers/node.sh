#!/usr/bin/env bash
# Node.js interop peers (tests/interop/node: rhea's push.js / consume.js, @azure/service-bus's
# servicebus.js): make sure node and npm exist and node_modules matches package-lock.json.
# Idempotent; run by scripts/test.sh before every test run. Runs `npm ci` only when node_modules
# is missing or older than the lock file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/interop/node"

say() { echo "node.sh: $*"; }
die() { echo "node.sh: ERROR: $*" >&2; exit 1; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        say "node/npm missing; installing the Debian packages nodejs and npm"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null; } ||
            die "could not install nodejs/npm with apt-get"
    fi
    command -v node >/dev/null && command -v npm >/dev/null ||
        die "node and npm are required for the interop tests (install Node.js >= 18)"
fi

# node_modules/.package-lock.json is rewritten by every npm ci/install: compare against it.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -d node_modules/rhea ] ||
    [ ! -d node_modules/@azure/service-bus ]; then
    say "npm ci ($(node --version), npm $(npm --version))"
    npm ci --no-audit --no-fund --loglevel=error
else
    say "node_modules up to date"
fi
