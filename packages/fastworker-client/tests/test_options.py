"""Retry settings and start times: checked on the caller's side, sent as the wire wants,
and refused before sending to a control plane that does not offer them."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from fastworker.client import (
    Client,
    Retries,
    Retry,
    TaskCall,
    TaskRegistry,
    UnsupportedFeatureError,
    task,
    use_client,
)
from fastworker.client.options import check_start, exception_name
from fastworker.protocol import (
    FEATURE_DEAD_LETTERS,
    FEATURE_DELAY,
    FEATURE_RETRIES,
    MAX_IDS_PER_MESSAGE,
    ConfigurationError,
    NotConnectedError,
)
from fastworker.protocol import messages as m

UTC = datetime.timezone.utc


class AppError(Exception):
    pass


def test_a_policy_names_exception_classes_by_module_and_qualified_name() -> None:
    policy = Retries(3, backoff=0.5, backoff_max=10, jitter=False, on=(ConnectionError, AppError))
    sent = policy.policy()
    assert sent is not None
    assert sent.retries == 3
    assert (sent.backoff, sent.backoff_max, sent.jitter) == (0.5, 10.0, False)
    assert sent.retry_on == ["builtins.ConnectionError", f"{__name__}.AppError"]
    assert exception_name(AppError) == f"{__name__}.AppError"
    assert Retries(0).policy() is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retries": -1}, "0 to"),
        ({"retries": True}, "whole number"),
        ({"retries": 2.0}, "whole number"),
        ({"retries": 1, "backoff": -1}, "retry_backoff"),
        ({"retries": 1, "backoff_max": float("inf")}, "retry_backoff_max"),
        ({"retries": 1, "jitter": 1}, "retry_jitter"),
        ({"retries": 1, "on": ()}, "exception classes"),
        ({"retries": 1, "on": (ValueError, "KeyError")}, "exception classes"),
        ({"retries": 1, "on": int}, "exception classes"),
    ],
)
def test_bad_retry_settings_are_refused_with_what_is_wrong(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Retries(**settings)


def test_a_start_time_is_a_countdown_or_an_aware_eta() -> None:
    assert check_start(None, None) == (None, None)
    assert check_start(5, None) == (5.0, None)
    when = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert check_start(None, when) == (None, when.timestamp())
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    assert check_start(None, when.astimezone(berlin))[1] == when.timestamp()
    with pytest.raises(ConfigurationError, match="naive datetime"):
        check_start(None, datetime.datetime(2030, 1, 1, 12, 0))  # naive on purpose
    with pytest.raises(ConfigurationError, match="not both"):
        check_start(1, when)
    with pytest.raises(ConfigurationError, match="countdown"):
        check_start(-1, None)
    with pytest.raises(ConfigurationError, match="countdown"):
        check_start(float("nan"), None)


def test_retry_asks_for_a_countdown_or_an_eta() -> None:
    assert Retry(countdown=5).delay(now=1000.0) == 5.0
    assert Retry(eta=datetime.datetime.fromtimestamp(1010.0, UTC)).delay(now=1000.0) == 10.0
    assert Retry().delay(now=1000.0) is None  # the backoff decides
    with pytest.raises(ConfigurationError, match="naive"):
        Retry(eta=datetime.datetime(2030, 1, 1))  # naive on purpose


class Recorder:
    """A Submitter that records what a task handle asks for."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def delay(self, name: str, /, *args: object, **options: object) -> str:
        self.calls.append({"name": name, "args": args, **options})
        return "id-1"

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        return None


async def test_a_task_sends_its_retries_and_a_copy_its_start_time() -> None:
    registry = TaskRegistry()

    @task(retries=3, retry_backoff=1.0, retry_on=ConnectionError, registry=registry)
    def fetch(url: str) -> str:
        return url

    assert fetch.retry == Retries(3, backoff=1.0, on=(ConnectionError,))
    recorder = Recorder()
    with use_client(recorder):
        await fetch.delay("u")
        await fetch.options(countdown=30).delay("u")
        await fetch.options(retry=Retries(0)).delay("u")
    first, later, once = recorder.calls
    assert (first["retry"], first["countdown"]) == (fetch.retry, None)
    assert (later["retry"], later["countdown"]) == (fetch.retry, 30)
    assert "retry" not in once  # no option at all: the call a 1.0 submitter understands


def test_a_task_refuses_bad_options_when_it_is_defined() -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        task(retries=-2)

    @task(registry=TaskRegistry())
    def report() -> None:
        return None

    with pytest.raises(ConfigurationError, match="naive"):
        report.options(eta=datetime.datetime(2030, 1, 1))  # naive on purpose


async def test_a_client_refuses_an_option_its_control_plane_does_not_offer() -> None:
    client = Client("ipc:///nonexistent/fastworker-test.sock")  # never connects
    when = datetime.datetime.now(UTC)
    asks: list[dict[str, Any]] = [{"countdown": 1.0}, {"eta": when}, {"retry": Retries(2)}]
    for options in asks:
        with pytest.raises(UnsupportedFeatureError, match="does not offer"):
            await client.delay("report", **options)
        with pytest.raises(UnsupportedFeatureError, match="does not offer"):
            await client.delay_many([TaskCall("report", **options)])
    client.features = frozenset({FEATURE_DELAY, FEATURE_RETRIES})
    for options in asks:
        with pytest.raises(NotConnectedError):  # offered: it goes on to send, and cannot
            await client.delay("report", **options)


async def test_retry_all_stops_when_what_it_retried_keeps_failing_back_in() -> None:
    """Dead letters that fail again at once rejoin the list while ``retry_dead(all=True)``
    runs: it retries what was there at the start, not for ever."""
    client = Client("ipc:///nonexistent/fastworker-test.sock")  # never connects
    client.features = frozenset({FEATURE_DEAD_LETTERS})
    client._running_loop = asyncio.get_running_loop  # pyright: ignore[reportPrivateUsage]
    sent: list[m.RetryDead] = []

    async def answer(build: Any, _kind: Any) -> m.RetriedDead:
        request = build(len(sent) + 1)
        sent.append(request)
        old = f"dead-{len(sent)}"
        # Always more left: each one retried failed and came back, under a new id.
        return m.RetriedDead(
            request_id=request.request_id,
            task_ids=[old],
            new_ids=[f"new-{len(sent)}"],
            remaining=MAX_IDS_PER_MESSAGE + 1,
        )

    client._request = answer  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue]
    retried = await asyncio.wait_for(client.retry_dead(all=True), 10)
    assert all(request.all for request in sent)
    assert len(sent) == 3  # the first, then one per 4,096 that were left at the start
    assert retried == {f"dead-{i}": f"new-{i}" for i in (1, 2, 3)}
