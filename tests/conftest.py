"""Fixtures of the cross-package tests; the process helpers live in fw_processes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fastworker.client import Client
from fw_processes import Processes, connect


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
async def control_plane(processes: Processes) -> AsyncIterator[tuple[str, Client]]:
    """A control plane process with no subworkers, and a client of it."""
    address = processes.address()
    processes.control_plane(address)
    client = await connect(address)
    yield address, client
    await client.stop()
