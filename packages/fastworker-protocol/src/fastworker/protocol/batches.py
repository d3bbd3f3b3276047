"""Splitting long lists to fit the schema's per-message bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

__all__ = ["in_chunks"]

_T = TypeVar("_T")


def in_chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    """Consecutive slices of ``items`` of at most ``size`` each, in order; none if
    ``items`` is empty. (``itertools.batched`` arrived in Python 3.12.)"""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]
