"""``GET /metrics``: the control plane's metrics in Prometheus's text format, fetched
through the client on each scrape (:meth:`~fastworker.client.Client.metrics`) within
:data:`SCRAPE_TIMEOUT`.

No HTTP here: the routes turn an unsupported feature into 501 and a control plane that
does not answer into 503 (:class:`~fastworker.protocol.TransportError` passes through).
"""

from __future__ import annotations

import asyncio
from typing import Final

from fastworker.client.prometheus import CONTENT_TYPE, render
from fastworker.protocol import RequestTimeoutError

from ._source import DashboardSource

__all__ = ["CONTENT_TYPE", "SCRAPE_TIMEOUT", "UNSUPPORTED", "scrape"]

SCRAPE_TIMEOUT: Final = 2.0
"""Seconds a scrape waits for the control plane; Prometheus's own default bound on a
scrape is 10 s, and the page's polls must not queue behind a slow one."""

UNSUPPORTED: Final = "metrics are not available from this control plane; it runs an older release"


async def scrape(source: DashboardSource, timeout: float = SCRAPE_TIMEOUT) -> bytes:
    """The control plane's metrics as Prometheus text.

    Raises:
        UnsupportedFeatureError: the control plane keeps no metrics (older).
        TransportError: it did not answer (RequestTimeoutError past ``timeout``).
    """
    try:
        reply = await asyncio.wait_for(source.metrics(), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(
            f"the control plane at {source.address} did not answer within {timeout} s"
        ) from None
    return render(reply)
