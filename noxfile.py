"""Developer sessions: ``nox -s tests lint typecheck docs bench build``.

``scripts/test.sh`` is what CI runs (it needs no nox); these sessions split the same work up.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _brokers(session: nox.Session) -> None:
    for script in (
        "scripts/brokers/rabbitmq.sh",
        "scripts/brokers/qpid.sh",
        "scripts/peers/node.sh",
    ):
        session.run("bash", script, external=True, success_codes=[0])


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite (brokers set up first). Arguments go to pytest."""
    session.install("-e", ".[test]")
    _brokers(session)
    session.run("pytest", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Only the tests that need no network."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,lint]")  # lint: mypy, types-PyYAML, tomli (3.10 branch)
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput and CPU per job, side by side with the reference clients (docs/benchmarks.md)."""
    session.install("-e", ".[rabbitmq]", "-r", "benchmarks/requirements.txt")
    _brokers(session)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    session.install("build", "twine")
    session.run("python", "-m", "build", "--outdir", "dist")
    session.run("twine", "check", "dist/*")
