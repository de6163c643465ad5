#!/usr/bin/env bash
# Make .venv (once) and install amqp1q into it, editable, with the extras the caller needs.
# Re-installs only when pyproject.toml or the extras change, so a second run takes a moment.
#   source scripts/bootstrap.sh "test,lint"     -> sets AMQP1Q_PY to the venv's python
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${1:-}"
_venv="${AMQP1Q_VENV:-$_root/.venv}"
_python="${PYTHON:-python3}"

if ! "$_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "amqp1q needs Python >= 3.10; set PYTHON=/path/to/python3.10+" >&2
    exit 1
fi
if [ ! -x "$_venv/bin/python" ]; then
    echo "==> creating $_venv"
    "$_python" -m venv "$_venv"
fi
_stamp="$_venv/.amqp1q-installed"
_want="$(sha256sum "$_root/pyproject.toml" | cut -d' ' -f1) [$_extras]"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
    echo "==> installing amqp1q${_extras:+[$_extras]} into $_venv"
    "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$_root${_extras:+[$_extras]}"
    echo "$_want" > "$_stamp"
fi
export AMQP1Q_PY="$_venv/bin/python"
