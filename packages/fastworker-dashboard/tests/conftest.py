"""Fixtures of the dashboard's own tests: no control plane, only the stand-in client of
dashboard_fakes (this folder is put on the import path for it)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from dashboard_fakes import FakeSource, make_app


@pytest.fixture
def fake() -> FakeSource:
    return FakeSource()


@pytest.fixture
def make_http(fake: FakeSource) -> Iterator[Callable[..., TestClient]]:
    """Builds a TestClient of a FastAPI app with the dashboard mounted."""
    with contextlib.ExitStack() as stack:

        def build(prefix: str = "", **options: Any) -> TestClient:
            # Entered, so the app's lifespan and its loop last for the whole test.
            http = TestClient(make_app(fake, prefix, **options))
            stack.enter_context(http)
            return http

        yield build


@pytest.fixture
def http(make_http: Callable[..., TestClient]) -> TestClient:
    return make_http()
