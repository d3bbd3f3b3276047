"""Peers of another protocol major refuse each other with ProtocolVersionError, on both
sides, and the control plane keeps serving its own. ``nox -s compat`` builds today's
packages with the protocol's major version raised and names that interpreter in
FASTWORKER_COMPAT_OTHER_MAJOR_PYTHON; without it these tests are skipped."""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from compat_roles import OTHER_MAJOR_VARIABLE, Side, describe, side
from test_mixed_versions import run_client

from fw_processes import Processes, connect

EXIT_REFUSED = 4
"""The ``fastworker`` command's exit status when the control plane refuses it."""

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not os.environ.get(OTHER_MAJOR_VARIABLE),
        reason=f"needs a build of another protocol major in ${OTHER_MAJOR_VARIABLE}",
    ),
]


def _other_major() -> Side:
    return describe("client", os.environ[OTHER_MAJOR_VARIABLE])


async def test_a_client_of_another_major_is_refused(processes: Processes) -> None:
    other = _other_major()
    address = processes.address()
    processes.control_plane(address)
    ours = await connect(address)
    try:
        out = await run_client(other, "roundtrip", address)
        assert out["connect_error"] == "ProtocolVersionError"
        assert f"speaks fastworker protocol {other.protocol}" in processes.log("control-plane")
        overview = await ours.overview()  # still serving its own major
        assert overview.counters.submitted == 0
    finally:
        await ours.stop()


async def test_a_control_plane_of_another_major_is_refused(processes: Processes) -> None:
    other = _other_major()
    address = processes.address()
    processes.control_plane(address, python=other.python)
    out = await run_client(side("client"), "roundtrip", address)
    assert out["connect_error"] == "ProtocolVersionError"
    assert re.search(
        rf"peer speaks fastworker protocol {re.escape(other.protocol)}", out["message"]
    )


async def test_a_subworker_of_another_major_is_refused(processes: Processes) -> None:
    other = _other_major()
    address = processes.address()
    processes.control_plane(address)
    ours = await connect(address)
    try:
        worker = processes.subworker(address, "sw-other", python=other.python)
        assert await asyncio.to_thread(worker.wait, 60) == EXIT_REFUSED
        log = processes.log("subworker-sw-other")
        assert "refused by the control plane: peer speaks fastworker protocol 1." in log
        overview = await ours.overview()
        assert [w.worker_id for w in overview.workers if w.address != "local"] == []
    finally:
        await ours.stop()
