"""Integrations with other frameworks. Each submodule imports its framework lazily (optional)."""

from __future__ import annotations

from .web import JobService

__all__ = ["JobService"]
