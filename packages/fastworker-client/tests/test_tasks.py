# pyright: reportUnnecessaryTypeIgnoreComment=true
"""The task decorator, the registry and the current client.

The typing checks at the bottom run under pyright only; with unnecessary ignore comments
reported (the line above), the lines that must *not* type-check are checked too.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fastworker.client import tasks as tasks_module
from fastworker.client.tasks import (
    Submitter,
    Task,
    TaskRegistry,
    current_client,
    get_default_client,
    set_default_client,
    task,
    use_client,
)
from fastworker.protocol import (
    ConfigurationError,
    InvalidArgumentsError,
    InvalidPriorityError,
    NotConnectedError,
    TaskPriority,
    UnknownTaskError,
)


@dataclass
class Submission:
    name: str
    args: tuple[object, ...]
    kwargs: dict[str, object]
    priority: TaskPriority | str | None
    timeout: float | None


class FakeClient:
    """Stands for the real client: records submissions and, for results, runs the task
    in this process, looked up by name in a registry as a subworker would."""

    def __init__(self, registry: TaskRegistry) -> None:
        self.registry = registry
        self.submitted: list[Submission] = []

    async def delay(
        self,
        name: str,
        /,
        *args: object,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> str:
        self.submitted.append(Submission(name, args, kwargs, priority, timeout))
        return f"task-{len(self.submitted)}"

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        submission = self.submitted[int(task_id.removeprefix("task-")) - 1]
        value = self.registry[submission.name].fn(*submission.args, **submission.kwargs)
        return await value if inspect.isawaitable(value) else value


@pytest.fixture
def registry() -> TaskRegistry:
    return TaskRegistry()


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> TaskRegistry:
    """A fresh registry in place of the module's default, so tests do not leak tasks."""
    fresh = TaskRegistry()
    monkeypatch.setattr(tasks_module, "default_registry", fresh)
    return fresh


@pytest.fixture(autouse=True)
def no_default_client() -> Iterator[None]:
    set_default_client(None)
    yield
    set_default_client(None)


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a uniquely named module into tmp_path, the working directory, and return its
    name; sys.path (without a "" entry) and sys.modules are restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", ".")])
    written: list[str] = []

    def write(source: str) -> str:
        name = f"fw_test_tasks_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


# --- the decorator ---------------------------------------------------------------------


def test_bare_decorator_registers_a_sync_function_under_its_short_name(
    default_registry: TaskRegistry,
) -> None:
    @task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    assert isinstance(add, Task)
    assert default_registry["add"] is add
    assert add.name == "add"
    assert add.priority is TaskPriority.NORMAL
    assert add.timeout is None
    assert add.is_async is False
    assert list(add.signature.parameters) == ["x", "y"]
    assert add(2, 3) == 5


async def test_bare_decorator_takes_an_async_function(default_registry: TaskRegistry) -> None:
    @task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    assert default_registry["add"] is add
    assert add.is_async is True
    pending = add(2, 3)
    assert inspect.isawaitable(pending)
    assert await pending == 5


def test_decorator_with_options(registry: TaskRegistry) -> None:
    @task(name="charge_card", priority=TaskPriority.CRITICAL, timeout=30, registry=registry)
    async def charge(order_id: int) -> str:
        return f"charged {order_id}"

    assert registry.names() == ["charge_card"]
    assert registry["charge_card"] is charge
    assert charge.name == "charge_card"
    assert charge.priority is TaskPriority.CRITICAL
    assert charge.timeout == 30.0
    assert isinstance(charge.timeout, float)
    assert charge.is_async is True


def test_decorator_with_options_on_a_sync_function(registry: TaskRegistry) -> None:
    @task(priority="high", timeout=0.5, registry=registry)
    def ping() -> str:
        return "pong"

    assert registry["ping"] is ping
    assert ping.priority is TaskPriority.HIGH
    assert ping.timeout == 0.5
    assert ping.is_async is False
    assert ping() == "pong"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("low", TaskPriority.LOW), (" Critical ", TaskPriority.CRITICAL), ("HIGH", TaskPriority.HIGH)],
)
def test_priority_names_are_parsed(
    registry: TaskRegistry, given: str, expected: TaskPriority
) -> None:
    made = task(priority=given, registry=registry)(lambda: None)
    assert made.priority is expected


def test_a_bad_priority_fails_when_the_decorator_is_made(registry: TaskRegistry) -> None:
    with pytest.raises(InvalidPriorityError, match="'urgent' is not a task priority"):
        task(priority="urgent", registry=registry)
    assert len(registry) == 0


@pytest.mark.parametrize("timeout", [0, -1, 0.0, math.nan, math.inf, True, "30"])
def test_a_bad_timeout_is_a_configuration_error(registry: TaskRegistry, timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        task(timeout=timeout, registry=registry)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("name", ["", "x" * 257, 42])
def test_a_bad_name_is_a_configuration_error(registry: TaskRegistry, name: object) -> None:
    with pytest.raises(ConfigurationError, match="task name"):
        task(name=name, registry=registry)  # pyright: ignore[reportArgumentType]


def test_a_name_of_256_characters_is_accepted(registry: TaskRegistry) -> None:
    @task(name="x" * 256, registry=registry)
    def long() -> None: ...

    assert long.name in registry


def test_a_name_passed_as_the_function_gets_a_hint(registry: TaskRegistry) -> None:
    with pytest.raises(ConfigurationError, match=r"use @task\(name='add'\)"):
        task("add")  # pyright: ignore[reportCallIssue, reportArgumentType]


def test_generator_functions_are_refused(registry: TaskRegistry) -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="generator function"):
        task(registry=registry)(numbers)
    assert "numbers" not in registry


def test_a_task_is_not_decorated_twice(registry: TaskRegistry) -> None:
    @task(registry=registry)
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigurationError, match="task already"):
        task(name="again", registry=registry)(add)


def test_the_task_looks_like_its_function(registry: TaskRegistry) -> None:
    @task(registry=registry)
    def add(x: int, y: int = 1) -> int:
        """Add two numbers."""
        return x + y

    assert add.__doc__ == "Add two numbers."
    assert add.fn.__name__ == "add"
    assert inspect.signature(add) == add.signature
    assert "'add'" in repr(add)
    assert "NORMAL" in repr(add)


# --- the registry ----------------------------------------------------------------------


def test_a_different_function_under_a_taken_name_is_refused(registry: TaskRegistry) -> None:
    @task(name="add", registry=registry)
    def first(x: int, y: int) -> int:
        return x + y

    def second(x: int, y: int) -> int:
        return x - y

    with pytest.raises(ConfigurationError) as caught:
        task(name="add", registry=registry)(second)
    message = str(caught.value)
    assert "'add'" in message
    assert "first" in message
    assert "second" in message
    assert registry["add"] is first


def test_registering_the_same_function_again_replaces(registry: TaskRegistry) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    task(registry=registry)(add)
    again = task(priority="low", registry=registry)(add)
    assert registry["add"] is again
    assert registry["add"].priority is TaskPriority.LOW
    assert len(registry) == 1


def test_reloading_a_task_module_replaces_its_tasks(
    default_registry: TaskRegistry, write_module: Callable[[str], str]
) -> None:
    name = write_module(
        "from fastworker.client.tasks import task\n\n@task\ndef add(x, y):\n    return x + y\n"
    )
    default_registry.import_modules([name])
    before = default_registry["add"]
    module = importlib.reload(sys.modules[name])
    assert default_registry["add"] is not before
    assert default_registry["add"].fn is module.add.fn


def test_an_unknown_name_lists_the_registered_ones(registry: TaskRegistry) -> None:
    for name in ("sub", "add"):
        task(name=name, registry=registry)(lambda: None)
    with pytest.raises(UnknownTaskError, match=r"^no task named 'mul'; registered: add, sub$"):
        registry["mul"]


def test_an_unknown_name_in_an_empty_registry(registry: TaskRegistry) -> None:
    with pytest.raises(UnknownTaskError, match=r"^no task named 'add'; registered: \(none\)$"):
        registry["add"]


def test_a_long_listing_is_cut_short(registry: TaskRegistry) -> None:
    for number in range(60):
        task(name=f"t{number:02}", registry=registry)(lambda: None)
    with pytest.raises(UnknownTaskError, match=r"t49 and 10 more$"):
        registry["missing"]


def test_registry_lookups(registry: TaskRegistry) -> None:
    @task(registry=registry)
    def sub(x: int, y: int) -> int:
        return x - y

    @task(registry=registry)
    def add(x: int, y: int) -> int:
        return x + y

    assert registry.get("add") is add
    assert registry.get("mul") is None
    assert "sub" in registry
    assert "mul" not in registry
    assert 3 not in registry
    assert list(registry) == ["add", "sub"]
    assert registry.names() == ["add", "sub"]
    assert len(registry) == 2


def test_registries_are_separate(registry: TaskRegistry, default_registry: TaskRegistry) -> None:
    @task(registry=registry)
    def add(x: int, y: int) -> int:
        return x + y

    assert "add" in registry
    assert "add" not in default_registry


# --- argument checks -------------------------------------------------------------------


@pytest.fixture
def add(registry: TaskRegistry) -> Task[[int, int], int]:
    @task(registry=registry)
    def add(x: int, y: int) -> int:
        return x + y

    return add


def test_arguments_that_bind_pass(add: Task[[int, int], int]) -> None:
    add.check_arguments([1, 2], {})
    add.check_arguments([1], {"y": 2})
    add.check_arguments([], {"x": 1, "y": 2})


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ([1], {}, "missing a required argument: 'y'"),
        ([1, 2, 3], {}, "too many positional arguments"),
        ([1, 2], {"z": 3}, "got an unexpected keyword argument 'z'"),
        ([1], {"x": 2}, "multiple values for argument 'x'"),
    ],
)
def test_arguments_that_do_not_bind_are_refused(
    add: Task[[int, int], int], args: list[object], kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidArgumentsError) as caught:
        add.check_arguments(args, kwargs)
    assert str(caught.value) == f"invalid arguments for task 'add': {problem}"


def test_the_message_names_the_task_not_the_function(registry: TaskRegistry) -> None:
    @task(name="charge_card", registry=registry)
    def charge(order_id: int, *, amount: int) -> None: ...

    with pytest.raises(InvalidArgumentsError, match=r"^invalid arguments for task 'charge_card'"):
        charge.check_arguments([1], {})
    charge.check_arguments([1], {"amount": 5})


# --- importing task modules ------------------------------------------------------------


def test_import_modules_finds_a_module_in_the_working_directory(
    default_registry: TaskRegistry, write_module: Callable[[str], str]
) -> None:
    name = write_module(
        "from fastworker.client.tasks import task\n\n"
        "@task(priority='high')\n"
        "def shout(text: str) -> str:\n"
        "    return text.upper()\n"
    )
    assert os.getcwd() not in sys.path
    default_registry.import_modules([name])
    assert sys.path[0] == os.getcwd()
    assert default_registry.names() == ["shout"]
    assert default_registry["shout"].priority is TaskPriority.HIGH
    assert default_registry["shout"].fn("hi") == "HI"
    # Importing again neither fails nor adds the working directory twice.
    default_registry.import_modules([name])
    assert sys.path.count(os.getcwd()) == 1


def test_a_missing_module_is_a_configuration_error(
    registry: TaskRegistry, write_module: Callable[[str], str]
) -> None:
    missing = f"fw_no_such_module_{uuid.uuid4().hex}"
    with pytest.raises(ConfigurationError, match=f"'{missing}'.*ModuleNotFoundError") as caught:
        registry.import_modules([missing])
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_a_module_that_raises_is_a_configuration_error(
    registry: TaskRegistry, write_module: Callable[[str], str]
) -> None:
    name = write_module("raise RuntimeError('database is down')\n")
    with pytest.raises(
        ConfigurationError, match=f"cannot import task module '{name}': RuntimeError: database"
    ) as caught:
        registry.import_modules([name])
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_two_modules_with_one_task_name_are_refused(
    default_registry: TaskRegistry, write_module: Callable[[str], str]
) -> None:
    source = "from fastworker.client.tasks import task\n\n@task\ndef add(x, y):\n    return x + y\n"
    first, second = write_module(source), write_module(source)
    with pytest.raises(ConfigurationError, match=f"'{second}'") as caught:
        default_registry.import_modules([first, second])
    assert f"{first}.add" in str(caught.value)
    assert f"{second}.add" in str(caught.value)


# --- submitting through the current client ---------------------------------------------


async def test_delay_submits_through_the_client_in_use(registry: TaskRegistry) -> None:
    @task(name="charge_card", priority="critical", timeout=30, registry=registry)
    async def charge(order_id: int, *, amount: int = 0) -> str:
        return f"charged {order_id} {amount}"

    client = FakeClient(registry)
    with use_client(client):
        task_id = await charge.delay(7, amount=100)
    assert task_id == "task-1"
    assert client.submitted == [
        Submission("charge_card", (7,), {"amount": 100}, TaskPriority.CRITICAL, 30.0)
    ]


async def test_run_submits_and_waits_for_the_result(registry: TaskRegistry) -> None:
    @task(registry=registry)
    def add(x: int, y: int) -> int:
        return x + y

    @task(registry=registry)
    async def mul(x: int, y: int) -> int:
        return x * y

    client = FakeClient(registry)
    with use_client(client):
        assert await add.run(2, 3) == 5
        assert await mul.run(2, 3) == 6
    assert [(s.name, s.args, s.priority) for s in client.submitted] == [
        ("add", (2, 3), TaskPriority.NORMAL),
        ("mul", (2, 3), TaskPriority.NORMAL),
    ]


async def test_arguments_are_checked_before_anything_is_sent(
    add: Task[[int, int], int], registry: TaskRegistry
) -> None:
    client = FakeClient(registry)
    with use_client(client), pytest.raises(InvalidArgumentsError, match="'y'"):
        await add.delay(1)  # pyright: ignore[reportCallIssue]
    assert client.submitted == []


@pytest.mark.parametrize(
    "option", ["priority", "timeout", "task_id", "idempotency_key", "on_complete"]
)
async def test_an_argument_named_like_an_option_is_refused_by_name(
    registry: TaskRegistry, option: str
) -> None:
    @task(registry=registry)
    def reorder(items: list[int], **flags: str) -> list[int]:
        return sorted(items)

    client = FakeClient(registry)
    with use_client(client):
        with pytest.raises(InvalidArgumentsError, match=f"keyword argument named '{option}'"):
            await reorder.delay([2, 1], **{option: "x"})
        with pytest.raises(InvalidArgumentsError, match=f"keyword argument named '{option}'"):
            await reorder.run([2, 1], **{option: "x"})
    assert client.submitted == []


async def test_an_option_named_argument_goes_through_positionally(
    registry: TaskRegistry,
) -> None:
    @task(registry=registry)
    def reorder(items: list[int], priority: str) -> list[int]:
        return sorted(items, reverse=priority == "desc")

    client = FakeClient(registry)
    with use_client(client):
        assert await reorder.run([1, 2], "desc") == [2, 1]
    assert client.submitted[0].kwargs == {}


async def test_options_returns_an_unregistered_copy(
    add: Task[[int, int], int], registry: TaskRegistry
) -> None:
    urgent = add.options(priority="high", timeout=5)
    assert urgent is not add
    assert (urgent.name, urgent.priority, urgent.timeout) == ("add", TaskPriority.HIGH, 5.0)
    assert (add.priority, add.timeout) == (TaskPriority.NORMAL, None)
    assert registry["add"] is add
    assert len(registry) == 1

    client = FakeClient(registry)
    with use_client(client):
        await urgent.delay(1, 2)
        await add.delay(1, 2)
    assert [(s.priority, s.timeout) for s in client.submitted] == [
        (TaskPriority.HIGH, 5.0),
        (TaskPriority.NORMAL, None),
    ]


def test_options_left_out_keep_the_task_s_own(registry: TaskRegistry) -> None:
    @task(priority="low", timeout=9, registry=registry)
    def slow() -> None: ...

    same = slow.options()
    assert (same.priority, same.timeout) == (TaskPriority.LOW, 9.0)
    faster = slow.options(timeout=1)
    assert (faster.priority, faster.timeout) == (TaskPriority.LOW, 1.0)


def test_options_are_checked(add: Task[[int, int], int]) -> None:
    with pytest.raises(InvalidPriorityError):
        add.options(priority="asap")
    with pytest.raises(ConfigurationError, match="timeout"):
        add.options(timeout=-5)


async def test_without_a_client_submitting_fails_clearly(add: Task[[int, int], int]) -> None:
    with pytest.raises(NotConnectedError, match="no fastworker client is active"):
        current_client()
    with pytest.raises(NotConnectedError, match=r"async with Client\(\)"):
        await add.delay(1, 2)
    with pytest.raises(NotConnectedError):
        await add.run(1, 2)


async def test_the_default_client_is_the_fallback(
    add: Task[[int, int], int], registry: TaskRegistry
) -> None:
    fallback, scoped = FakeClient(registry), FakeClient(registry)
    assert get_default_client() is None
    set_default_client(fallback)
    assert current_client() is fallback
    with use_client(scoped):
        assert current_client() is scoped
        assert get_default_client() is fallback
        await add.delay(1, 2)
    assert current_client() is fallback
    await add.delay(3, 4)
    assert [s.args for s in scoped.submitted] == [(1, 2)]
    assert [s.args for s in fallback.submitted] == [(3, 4)]
    set_default_client(None)
    with pytest.raises(NotConnectedError):
        current_client()


async def test_use_client_nests_and_stays_in_its_context(registry: TaskRegistry) -> None:
    outer, inner = FakeClient(registry), FakeClient(registry)

    async def seen() -> Submitter:
        return current_client()

    with use_client(outer):
        with use_client(inner):
            assert current_client() is inner
            # An asyncio task started here inherits the context's client.
            assert await asyncio.create_task(seen()) is inner
        assert current_client() is outer
    with pytest.raises(NotConnectedError):
        current_client()


# --- static typing (checked by pyright, never run) -------------------------------------

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import assert_type

    @task
    def typed_add(x: int, y: int) -> int:
        return x + y

    @task
    async def typed_async_add(x: int, y: int) -> int:
        return x + y

    @task(name="charge_card", priority=TaskPriority.CRITICAL, timeout=30)
    async def typed_charge(order_id: int) -> str:
        return str(order_id)

    @task(priority="low")
    def typed_sync_with_options(x: int, y: int) -> int:
        return x + y

    async def typing_checks() -> None:
        # P is invariant, so these assignments hold only for exactly the parameters
        # (int, int); R is covariant, so the assert_type calls below pin it exactly.
        # (assert_type on the task itself would also compare the parameter *names*, which
        # pyright keeps: it infers "Task[(x: int, y: int), int]".)
        sync_add: Task[[int, int], int] = typed_add
        async_add: Task[[int, int], int] = typed_async_add
        with_options: Task[[int, int], int] = typed_sync_with_options
        charge: Task[[int], str] = typed_charge
        # R is the awaited result for async functions too, never a coroutine.
        assert_type(await typed_add.run(1, 2), int)
        assert_type(await typed_async_add.run(1, 2), int)
        assert_type(await typed_charge.run(1), str)
        assert_type(await typed_async_add.delay(1, 2), str)
        assert_type(await typed_add.options(priority="high").run(1, 2), int)
        assert_type(typed_add.fn(1, 2), int | Awaitable[int])
        # A registry holds tasks of any result type.
        TaskRegistry().register(sync_add)
        TaskRegistry().register(async_add)
        TaskRegistry().register(with_options)
        TaskRegistry().register(charge)
        submitter: Submitter = FakeClient(TaskRegistry())
        with use_client(submitter):
            pass
        # What must not type-check: each ignore is reported if it is not needed.
        not_int: Task[[int, int], str] = typed_add  # pyright: ignore[reportAssignmentType]
        not_async: Task[[int, int], int] = typed_charge  # pyright: ignore[reportAssignmentType]
        await typed_add.delay("1", 2)  # pyright: ignore[reportArgumentType]
        await typed_async_add.run(1)  # pyright: ignore[reportCallIssue]
        await typed_add.delay(1, 2, priority="high")  # pyright: ignore[reportCallIssue]
        del not_int, not_async
