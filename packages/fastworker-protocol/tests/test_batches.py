"""Splitting lists to the schema's per-message bounds."""

from __future__ import annotations

import pytest

from fastworker.protocol import in_chunks


def test_chunks_keep_order_and_bound_each_part() -> None:
    parts = list(in_chunks(list(range(10)), 4))
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_list_that_fits_is_one_chunk_and_an_empty_one_none() -> None:
    assert list(in_chunks([1, 2], 4)) == [[1, 2]]
    empty: list[int] = []
    assert list(in_chunks(empty, 4)) == []


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(in_chunks([1], 0))
