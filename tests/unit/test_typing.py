"""The public API's types, checked by mypy --strict the way a user's code is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import unavailable

TYPING = Path(__file__).parent.parent / "typing"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", sorted(TYPING.glob("*.py")), ids=lambda path: path.name)
def test_mypy_accepts_and_refuses_what_it_should(path: Path) -> None:
    try:
        import mypy  # noqa: F401
    except ImportError:
        unavailable("mypy is not installed (pip install -e '.[lint]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--python-version",
            "3.11",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=Path(__file__).parent.parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
