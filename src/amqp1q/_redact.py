"""Keeping secrets out of reprs, logs and errors.

Two tools: :class:`Secret`, a string wrapper whose ``str`` and ``repr`` never show the value, and
:func:`redact`, which scrubs passwords from URLs and keys from Service Bus connection strings in
free text (including malformed ones, which is when error messages quote them).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "Secret", "redact"]

MASK: Final = "***"

# scheme://user:PASSWORD@host — the password runs from the first ':' after the user name to the
# *last* '@' of the authority, so a password holding an unescaped '@' or '/' is still hidden.
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)(?P<secret>\S*)@")
_SAS_FIELD = re.compile(
    r"(?P<head>\b(?:SharedAccessKey|SharedAccessSignature|AccessKey|Password|sig)\s*=\s*)"
    r"(?P<secret>[^;&\s]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Return ``text`` with URL passwords and connection-string keys replaced by ``***``."""
    if "@" in text:
        text = _URL_USERINFO.sub(_mask_userinfo, text)
    if "=" in text:
        text = _SAS_FIELD.sub(lambda m: m.group("head") + MASK, text)
    return text


def _mask_userinfo(match: re.Match[str]) -> str:
    secret = match.group("secret")
    # ``\S*@`` is greedy: keep anything after the last '@' that belongs to the host part.
    return f"{match.group('head')}{MASK}@" if secret else match.group(0)


class Secret:
    """A secret string: ``str()`` and ``repr()`` show ``***``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
