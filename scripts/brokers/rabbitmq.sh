#!/usr/bin/env bash
# RabbitMQ for the test suite: installed, running, with the rabbitmq_amqp1_0 and
# rabbitmq_management plugins on, AMQP 1.0 answering on 127.0.0.1:5672 and the
# management API on http://127.0.0.1:15672 (guest/guest).
# Idempotent; run by scripts/test.sh before every test run. When everything is
# already in place it only probes the two ports (well under a second).
# Environment: AMQP1Q_RABBITMQ_WAIT (seconds to wait for readiness, default 60).
set -euo pipefail

WAIT="${AMQP1Q_RABBITMQ_WAIT:-60}"
PLUGINS=(rabbitmq_amqp1_0 rabbitmq_management)
t0=$EPOCHREALTIME

elapsed() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2fs", b - a }'; }
say() { echo "rabbitmq.sh: $*"; }
die() { echo "rabbitmq.sh: ERROR: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# probe SECONDS: wait up to SECONDS for (a) the AMQP 1.0 SASL header to be echoed
# on 5672 and (b) GET /api/overview to answer 200. Exit 0 when both are ready.
probe() {
    python3 - "$1" <<'EOF'
import base64, socket, sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[1])
auth = "Basic " + base64.b64encode(b"guest:guest").decode()

def amqp10() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2) as s:
            s.sendall(b"AMQP\x03\x01\x00\x00")
            reply = s.recv(8)
    except OSError as e:
        return f"port 5672: {e}"
    if reply[:4] == b"AMQP" and len(reply) > 4 and reply[4] == 3:
        return ""
    return f"port 5672 does not speak AMQP 1.0 (replied {reply!r})"

def management() -> str:
    req = urllib.request.Request("http://127.0.0.1:15672/api/overview", headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return "" if r.status == 200 else f"management API: HTTP {r.status}"
    except Exception as e:
        return f"management API: {e}"

while True:
    problems = [p for p in (amqp10(), management()) if p]
    if not problems:
        sys.exit(0)
    if time.monotonic() >= deadline:
        print("; ".join(problems), file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
EOF
}

# Fast path: already set up.
if probe 0 2>/dev/null; then
    say "ready (already set up, $(elapsed))"
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
    say "installing rabbitmq-server"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
fi
export PATH="$PATH:/usr/sbin"

if ! as_root rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    say "starting RabbitMQ"
    # The init script works with and without systemd; -detached is the fallback.
    as_root service rabbitmq-server start >/dev/null 2>&1 || as_root rabbitmq-server -detached
    deadline=$((SECONDS + WAIT))
    until as_root rabbitmq-diagnostics -q ping >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "RabbitMQ did not start within ${WAIT}s (see /var/log/rabbitmq/)"
        sleep 1
    done
fi

enabled=$(as_root rabbitmq-plugins -q list -e -m 2>/dev/null || true)
missing=()
for p in "${PLUGINS[@]}"; do
    grep -qx "$p" <<<"$enabled" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "enabling ${missing[*]}"
    as_root rabbitmq-plugins -q enable "${missing[@]}" >/dev/null
fi

probe "$WAIT" || die "not ready after ${WAIT}s (AMQP 1.0 on 127.0.0.1:5672 and management on :15672 expected)"
say "ready ($(elapsed))"
