"""Every code block of README.md and docs/: found, compiled, and every settlement awaited.

Issue 19: docs/quickstart.md showed `job.retry(delay=5)` without `await`; copied, the job stayed
unsettled (a "coroutine was never awaited" warning, then a 10 s wait on close). No page may
show that again: not in a Python block, not in inline code. New pages are covered as they
appear (the pages are globbed)."""

from __future__ import annotations

import ast
import sys

import pytest
import yaml

from .snippets import (
    OPTIONS,
    ROOT,
    Snippet,
    compile_snippet,
    inline_code,
    pages,
    snippets,
    unawaited_inline,
    unawaited_settlements,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PAGES = pages()
BLOCKS = [snippet for path in PAGES for snippet in snippets(path)]
PYTHON = [snippet for snippet in BLOCKS if snippet.is_python]


def test_the_pages_and_their_python_blocks_are_found() -> None:
    names = {path.relative_to(PAGES[0].parent).as_posix() for path in PAGES}
    assert {"README.md", "docs/quickstart.md", "docs/brokers/rabbitmq.md"} <= names
    assert len(PYTHON) >= 20
    assert {snippet.page for snippet in PYTHON} >= {"README.md", "docs/quickstart.md"}


@pytest.mark.parametrize("snippet", PYTHON, ids=lambda snippet: snippet.where)
def test_each_python_block_compiles_and_awaits_its_settlements(snippet: Snippet) -> None:
    compile_snippet(snippet)
    assert unawaited_settlements(snippet.code) == [], f"{snippet.where}: settle with await"


@pytest.mark.parametrize("snippet", BLOCKS, ids=lambda snippet: snippet.where)
def test_markers_are_known_and_give_reasons(snippet: Snippet) -> None:
    if snippet.option is None:
        return
    assert snippet.option in OPTIONS, f"{snippet.where}: unknown marker {snippet.option!r}"
    assert snippet.is_python, f"{snippet.where}: markers are for python blocks"
    if snippet.option == "compile-only":
        assert snippet.reason, f"{snippet.where}: say why it is compile-only"
    if snippet.option == "checked-by":
        assert snippet.delegate is not None, f"{snippet.where}: checked-by PATH::TEST"


DELEGATED = [snippet for snippet in PYTHON if snippet.option == "checked-by"]


@pytest.mark.parametrize("snippet", DELEGATED, ids=lambda snippet: snippet.where)
def test_a_delegated_block_names_a_test_that_runs_it(snippet: Snippet) -> None:
    """A block the harness does not run is run by the test it names: the test exists, and
    reads the page's blocks through ``delegated_to`` (which checks they are handed to it)."""
    assert snippet.delegate is not None, f"{snippet.where}: checked-by PATH::TEST"
    path, name = snippet.delegate
    source = ROOT / path
    assert source.is_file(), f"{snippet.where}: no test file {path}"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    test = next(
        (
            node
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
        ),
        None,
    )
    assert test is not None, f"{snippet.where}: {path} has no test {name}"
    calls = {
        node.func.id
        for node in ast.walk(test)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert "delegated_to" in calls, f"{snippet.where}: {name} does not call delegated_to()"
    assert snippet.path.name in source.read_text(encoding="utf-8"), (
        f"{snippet.where}: {path} does not name {snippet.page}"
    )


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_inline_code_awaits_its_settlements(path: object) -> None:
    assert isinstance(path, type(PAGES[0]))
    wrong = [f"line {line}: `{code}`" for line, code in inline_code(path) if unawaited_inline(code)]
    assert wrong == [], f"{path.name}: settle with await in inline code too"


@pytest.mark.parametrize(
    "snippet",
    [s for s in BLOCKS if s.language in ("toml", "yaml", "yml")],
    ids=lambda snippet: snippet.where,
)
def test_configuration_blocks_parse(snippet: Snippet) -> None:
    if snippet.language == "toml":
        tomllib.loads(snippet.code)
    else:
        yaml.safe_load(snippet.code)


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("await job.retry(delay=5)", []),
        ("job.retry(delay=5)", ["line 1: job.retry(delay=5)"]),
        ("async def f(job):\n    job.release()\n", ["line 2: job.release()"]),
        ("x = [await j.ack() for j in jobs]", []),
        ("asyncio.gather(job.reject('r'))", ["line 1: job.reject('r')"]),
    ],
)
def test_the_checker_finds_unawaited_settlements(code: str, found: list[str]) -> None:
    assert unawaited_settlements(code) == found


@pytest.mark.parametrize(
    ("code", "wrong"),
    [
        ("await job.ack()", False),
        ("job.retry(delay=5)", True),
        ('job.reject("reason")', True),
        ("retry(delay=s)", False),  # the vocabulary, not a call on a job
        ("consumer.drain()", False),
    ],
)
def test_the_inline_checker(code: str, wrong: bool) -> None:
    assert unawaited_inline(code) is wrong
