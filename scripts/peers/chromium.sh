#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser test
# (tests/integration/test_dashboard_browser.py, driven by selenium pointed at /usr/bin/chromedriver:
# nothing downloads a browser of its own). Debian's chromium and chromium-driver packages.
# Idempotent; run by scripts/test.sh before every test run.
set -euo pipefail

say() { echo "chromium.sh: $*"; }
die() { echo "chromium.sh: ERROR: $*" >&2; exit 1; }

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "chromium and chromedriver present ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
    exit 0
fi
command -v apt-get >/dev/null || die "apt-get missing: install chromium and chromium-driver by hand"
[ "$(id -u)" = 0 ] || die "run as root to apt-get install chromium chromium-driver"
export DEBIAN_FRONTEND=noninteractive
say "installing the Debian packages chromium and chromium-driver"
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null ||
    { apt-get update -q >/dev/null &&
      apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; } ||
    die "could not install chromium/chromium-driver with apt-get"
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] ||
    die "chromium or chromedriver missing after install"
say "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
