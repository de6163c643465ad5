"""The code in README.md and docs/**/*.md: found, checked, and the rules it keeps.

Every fenced block of every page is found here (new pages are picked up by the glob, with no
list to update). Python blocks (```python, ```py) are compiled as one module per block, with
top-level ``await`` allowed, and must settle every job they settle with ``await``; inline code
in the prose is held to the same rule. ``test_docs_run.py`` then executes them.

A block may be marked by an HTML comment on the line right above its fence (invisible on
GitHub and in mkdocs)::

    <!-- snippet: compile-only: needs azure-identity -->
    <!-- snippet: runs-forever -->
    <!-- snippet: checked-by: tests/integration/test_x.py::test_the_page_on_x -->

- ``compile-only: REASON``: checked, not executed (say why: a process-wide setting, a package
  the tests do not install, a fragment of a larger program);
- ``runs-forever``: a consumer loop or a worker: executed, and cancelled after a moment; it
  must not end by itself, nor fail;
- ``checked-by: PATH::TEST``: executed by that test instead, against the peer it needs (a
  broker the harness cannot stand in for, such as Qpid Proton's example brokers). The test
  must exist and read the blocks through :func:`delegated_to`, which asserts they name it
  (test_docs_checked.py checks both). It fails, never skips, for want of its peer under
  ``CI=true``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = [
    "ROOT",
    "SETTLEMENTS",
    "Snippet",
    "compile_snippet",
    "delegated_to",
    "inline_code",
    "pages",
    "snippets",
    "unawaited_settlements",
]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = frozenset({"python", "py"})
OPTIONS = ("compile-only", "runs-forever", "checked-by")
#: Options whose blocks the harness does not execute itself.
NOT_RUN_HERE = frozenset({"compile-only", "checked-by"})
#: The settling methods of a received job: coroutines, so awaited, always.
SETTLEMENTS = frozenset({"ack", "retry", "release", "reject"})

_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>```+|~~~+)[ ]*(?P<info>[^\n`]*)$")
_MARK = re.compile(r"^<!--\s*snippet:\s*(?P<option>[a-z-]+)\s*(?::\s*(?P<reason>.*?))?\s*-->$")
_INLINE = re.compile(r"(?<!`)`(?!`)(?P<code>[^`\n]+)`(?!`)")
_INLINE_SETTLE = re.compile(rf"(?P<await>\bawait\s+)?\b[\w.\[\]()]*\.(?:{'|'.join(SETTLEMENTS)})\(")


@attrs.frozen
class Snippet:
    """One fenced block: where it is, its language, its code, and its marker, if any."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    option: str | None = None
    reason: str | None = None

    @property
    def page(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON

    @property
    def delegate(self) -> tuple[str, str] | None:
        """``(path, test name)`` of the test a ``checked-by`` block is executed by."""
        if self.option != "checked-by" or not self.reason:
            return None
        path, sep, name = self.reason.partition("::")
        return (path.strip(), name.strip()) if sep and path.strip() and name.strip() else None


def pages() -> list[Path]:
    """README.md and every page under docs/ (sub-folders too), in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(path: Path) -> Iterator[Snippet]:
    """The fenced blocks of ``path`` in order, with the marker above each, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        index += 1  # the closing fence
        language = opening.group("info").split()[0].lower() if opening.group("info") else ""
        option = reason = None
        above = lines[start - 1].strip() if start > 0 else ""
        mark = _MARK.match(above)
        if mark is not None:
            option, reason = mark.group("option"), mark.group("reason")
        elif above.startswith("<!--") and "snippet" in above:
            option = f"unreadable marker {above!r}"
        yield Snippet(path, start + 1, language, "\n".join(body) + "\n", option, reason)


def delegated_to(path: Path, test: str) -> list[Snippet]:
    """The python blocks of ``path``, each checked to be marked ``checked-by: ...::test``: what
    the delegate ``test`` runs. Raises :class:`AssertionError` for a block not handed to it."""
    blocks = [snippet for snippet in snippets(path) if snippet.is_python]
    for snippet in blocks:
        delegate = snippet.delegate or ("", "")
        assert delegate[1] == test, (
            f"{snippet.where} is not marked <!-- snippet: checked-by: ...::{test} -->"
        )
    return blocks


def compile_snippet(snippet: Snippet) -> object:
    """The block compiled as a module of its own, top-level ``await`` allowed."""
    return compile(
        snippet.code, snippet.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )


def unawaited_settlements(code: str) -> list[str]:
    """``x.ack(...)`` / ``retry`` / ``release`` / ``reject`` calls not directly awaited."""
    tree = ast.parse(code)
    awaited = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Await)}
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SETTLEMENTS
        and id(node) not in awaited
    ]


def inline_code(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, code)`` for every inline code span in the prose (outside fenced blocks)."""
    in_fence: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opening = _FENCE.match(line)
        if opening is not None and (in_fence is None or line.strip().startswith(in_fence)):
            in_fence = opening.group("fence") if in_fence is None else None
            continue
        if in_fence is None:
            for match in _INLINE.finditer(line):
                yield number, match.group("code")


def unawaited_inline(code: str) -> bool:
    """True for inline code that settles a job without ``await`` (``job.retry(delay=5)``)."""
    return any(match.group("await") is None for match in _INLINE_SETTLE.finditer(code))
