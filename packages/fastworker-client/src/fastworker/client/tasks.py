"""Tasks: the ``task`` decorator, the registry it fills, and the client tasks submit through.

A task is a plain function, sync or async, that a subworker runs by name::

    from fastworker.client import TaskPriority, task


    @task
    def add(x: int, y: int) -> int:
        return x + y


    @task(name="charge_card", priority=TaskPriority.CRITICAL, timeout=30)
    async def charge(order_id: int) -> str: ...

Decorating registers the task in :data:`default_registry` (or the ``registry`` given), under
the function's short name unless ``name=`` says otherwise. A subworker imports the same
modules (``--task-modules``) and looks tasks up there by name; a web app imports them to
submit with typed calls: ``await add.delay(1, 2)`` returns the task id and
``await add.run(1, 2)`` waits for the result. Both go through the *current client*: the
one made current by :func:`use_client` in this context, else the process-wide one set by
:func:`set_default_client`.

This module imports the standard library and ``fastworker.protocol`` only: no transport.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import functools
import importlib
import inspect
import math
import os
import sys
import types
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from fastworker.protocol import (
    ConfigurationError,
    InvalidArgumentsError,
    NotConnectedError,
    TaskPriority,
    UnknownTaskError,
)

from .options import Retries, check_retry, check_start
from .schedules import Cron, Every, check_schedule

__all__ = [
    "MAX_TASK_NAME_LENGTH",
    "Submitter",
    "Task",
    "TaskRegistry",
    "current_client",
    "default_registry",
    "get_default_client",
    "set_default_client",
    "task",
    "use_client",
]

P = ParamSpec("P")
R = TypeVar("R")
# A Task only ever produces its R, so a Task[P, int] is also a Task[P, object]: that is
# what lets a registry hold tasks of any result type as Task[..., object].
R_co = TypeVar("R_co", covariant=True)

MAX_TASK_NAME_LENGTH = 256
"""The longest task name the wire carries (``TaskName`` in fastworker.protocol.messages)."""

# Keyword names that Task.delay and Task.run cannot pass on as task arguments: the
# Submitter's submission options, and the further ones fastworker.client.Client.delay takes,
# which would otherwise silently turn a task argument into a submission option.
_OPTION_NAMES = (
    "priority",
    "timeout",
    "task_id",
    "idempotency_key",
    "on_complete",
    "countdown",
    "eta",
    "retry",
)
# How many names an UnknownTaskError lists before it summarises the rest.
_MAX_LISTED_NAMES = 50


class Submitter(Protocol):
    """What :meth:`Task.delay` and :meth:`Task.run` need from a client: submit a task by
    name, and wait for a result by id. ``fastworker.client.Client`` is one."""

    async def delay(
        self,
        name: str,
        /,
        *args: object,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> str: ...

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any: ...


_current_client: ContextVar[Submitter | None] = ContextVar(
    "fastworker_current_client", default=None
)
_default_client: Submitter | None = None


@contextlib.contextmanager
def use_client(client: Submitter) -> Generator[None, None, None]:
    """Make ``client`` the current client in this context (this task and the asyncio tasks
    it starts) until the ``with`` block ends; blocks nest."""
    token = _current_client.set(client)
    try:
        yield
    finally:
        _current_client.reset(token)


def set_default_client(client: Submitter | None) -> None:
    """Set the process-wide client used where no :func:`use_client` block is active;
    ``None`` clears it."""
    global _default_client
    _default_client = client


def get_default_client() -> Submitter | None:
    """The process-wide client set by :func:`set_default_client`, whatever
    :func:`use_client` block is active; ``None`` if there is none."""
    return _default_client


def current_client() -> Submitter:
    """The client that ``Task.delay`` and ``Task.run`` submit through: the one made current
    by :func:`use_client`, else the process-wide default.

    Raises:
        NotConnectedError: there is neither.
    """
    client = _current_client.get()
    if client is None:
        client = _default_client
    if client is None:
        raise NotConnectedError(
            "no fastworker client is active; use `async with Client()` or pass one"
        )
    return client


class Task(Generic[P, R_co]):
    """A registered task: a plain sync or async function plus its submission options.

    Made by the :func:`task` decorator, which also registers it. Calling the task calls the
    function directly, in this process (for tests and local use); :meth:`delay` and
    :meth:`run` submit it to the control plane through the current client.

    Attributes:
        name: what the task is registered and submitted under.
        priority: the priority submissions of this task get unless told otherwise.
        timeout: seconds the task may run, or ``None`` for no limit.
        retry: how a submission is retried when it raises, or ``None`` for no retry.
        schedule: when the control plane that imports it runs it by itself
            (:func:`~fastworker.client.cron`, :func:`~fastworker.client.every`), or
            ``None``.
        is_async: whether the function is ``async def``.
        signature: the function's signature, which arguments are checked against.

    Known limit: keyword arguments named ``priority`` or ``timeout`` (or ``task_id``,
    ``idempotency_key``, ``on_complete``: the client's other submission options) cannot be
    passed through :meth:`delay` or :meth:`run`, because the client's ``delay()`` takes
    those names as submission options; they are refused with
    :class:`InvalidArgumentsError`. Pass such arguments positionally. Set the options
    themselves with :meth:`options`.
    """

    name: str
    priority: TaskPriority
    timeout: float | None
    retry: Retries | None
    schedule: Cron | Every | None
    is_async: bool
    signature: inspect.Signature

    def __init__(
        self,
        fn: Callable[P, R_co | Awaitable[R_co]],
        *,
        name: str | None = None,
        priority: TaskPriority | str = TaskPriority.NORMAL,
        timeout: float | None = None,
        retry: Retries | None = None,
        schedule: Cron | Every | None = None,
    ) -> None:
        """Wrap ``fn`` without registering it; use :func:`task` to define tasks.

        Raises:
            ConfigurationError: ``fn`` is not a plain function, ``name`` or ``timeout``
                is invalid, or it has a schedule but needs arguments.
            InvalidPriorityError: ``priority`` is not one of the four priorities.
        """
        _check_function(fn)
        if name is None:
            name = getattr(fn, "__name__", None)
            if name is None:
                raise ConfigurationError(f"{fn!r} has no __name__; give the task a name=")
        checked_name = _check_name(name)
        checked_priority = TaskPriority.parse(priority)
        checked_timeout = _check_timeout(timeout)
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read the signature of {_describe(fn)} for task {checked_name!r}: {exc}"
            ) from exc
        # __name__, __doc__, __wrapped__ and the like, so help() and inspect see the
        # function. First, so that nothing in fn.__dict__ can shadow what is set below.
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.name = checked_name
        self.priority = checked_priority
        self.timeout = checked_timeout
        self.retry = check_retry(retry)
        self._countdown: float | None = None
        self._eta: datetime.datetime | None = None
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = signature
        self._plain = _PlainSignature.of(signature)
        self.schedule = check_schedule(schedule)
        if self.schedule is not None:
            try:
                self.check_arguments((), {})
            except InvalidArgumentsError as exc:
                raise ConfigurationError(
                    f"task {checked_name!r} has a schedule, so it is run with no arguments,"
                    f" but {exc}"
                ) from None

    @property
    def fn(self) -> Callable[P, R_co | Awaitable[R_co]]:
        """The function itself; it returns an awaitable when :attr:`is_async`."""
        return self._fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co | Awaitable[R_co]:
        """Call the function directly, in this process: a value for a sync task, a
        coroutine to await for an async one."""
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<Task {self.name!r} {_describe(self._fn)} priority={self.priority.name} "
            f"timeout={self.timeout}>"
        )

    def check_arguments(self, args: Sequence[object], kwargs: Mapping[str, object]) -> None:
        """Check that ``args`` and ``kwargs`` bind to the function's signature (names and
        count; values are not type-checked).

        Raises:
            InvalidArgumentsError: they do not; the message names the task and the problem.
        """
        if self._plain is not None and self._plain.fits(args, kwargs):
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgumentsError(
                f"invalid arguments for task {self.name!r}: {exc}"
            ) from None

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Submit the task through the current client, with this task's priority and
        timeout, and return its id at once.

        Raises:
            InvalidArgumentsError: the arguments do not fit the signature (checked here,
                before anything is sent), or include a keyword named like a submission
                option such as ``priority`` (see the class docstring).
            NotConnectedError: no client is current (see :func:`current_client`).
        """
        return await self._submit(current_client(), args, kwargs)

    async def run(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Submit the task through the current client and wait for its result.

        Raises what :meth:`delay` raises, and what the client's ``result()`` raises for a
        task that ended without a value (``TaskFailedError`` and the other ``TaskError``
        kinds, ``ResultTimeoutError``).
        """
        client = current_client()
        task_id = await self._submit(client, args, kwargs)
        result: R_co = await client.result(task_id)
        return result

    def options(
        self,
        *,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        retry: Retries | None = None,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
    ) -> Task[P, R_co]:
        """A copy of this task with other submission options, not registered::

            await add.options(priority="high").delay(1, 2)
            await report.options(countdown=60).delay()
            await fetch.options(retry=Retries(5, on=(ConnectionError,))).delay(url)

        ``None`` keeps this task's own value (as ``timeout=None`` on the wire means "the
        task's own default"), so a copy cannot lift a task's time limit;
        ``retry=Retries(0)`` turns retries off. ``countdown`` (seconds) or ``eta`` (a
        datetime with a timezone) holds each submission of the copy until then.

        Raises:
            InvalidPriorityError: ``priority`` is not one of the four priorities.
            ConfigurationError: ``timeout`` is not a number of seconds above 0, ``retry``
                is not a :class:`Retries`, or the start time is invalid (both given, a
                negative countdown, a naive datetime).
        """
        new_priority = self.priority if priority is None else TaskPriority.parse(priority)
        new_timeout = self.timeout if timeout is None else _check_timeout(timeout)
        new_retry = self.retry if retry is None else check_retry(retry)
        check_start(countdown, eta)
        clone = copy.copy(self)
        clone.priority = new_priority
        clone.timeout = new_timeout
        clone.retry = new_retry
        if countdown is not None or eta is not None:
            clone._countdown, clone._eta = countdown, eta
        return clone

    async def _submit(
        self, client: Submitter, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> str:
        clashing = [option for option in _OPTION_NAMES if option in kwargs]
        if clashing:
            raise InvalidArgumentsError(
                f"cannot submit task {self.name!r} with a keyword argument named "
                f"{clashing[0]!r}: delay() and run() take that name as a submission option; "
                "pass the argument positionally"
            )
        self.check_arguments(args, kwargs)
        if self.retry is None and self._countdown is None and self._eta is None:
            # The 1.0 call, so a Submitter that takes no retry or start options still
            # serves every task that uses none.
            return await client.delay(
                self.name, *args, priority=self.priority, timeout=self.timeout, **kwargs
            )
        return await client.delay(
            self.name,
            *args,
            priority=self.priority,
            timeout=self.timeout,
            retry=self.retry,
            countdown=self._countdown,
            eta=self._eta,
            **kwargs,
        )


class TaskRegistry:
    """Tasks by name. The control plane and subworkers look tasks up here; the
    :func:`task` decorator fills it."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[..., object]] = {}

    def register(self, task: Task[..., object]) -> None:
        """Add ``task`` under its name.

        Registering the same function again (a module imported twice, or reloaded:
        same module and qualified name) replaces the earlier entry.

        Raises:
            ConfigurationError: a different function is already registered under the name.
        """
        existing = self._tasks.get(task.name)
        if existing is not None and not _same_function(existing.fn, task.fn):
            raise ConfigurationError(
                f"two functions are registered as task {task.name!r}: "
                f"{_describe(existing.fn)} and {_describe(task.fn)}; "
                "give one of them another name with @task(name=...)"
            )
        self._tasks[task.name] = task

    def get(self, name: str) -> Task[..., object] | None:
        """The task registered under ``name``, or ``None``."""
        return self._tasks.get(name)

    def __getitem__(self, name: str) -> Task[..., object]:
        """The task registered under ``name``.

        Raises:
            UnknownTaskError: there is none; the message lists the registered names.
        """
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(
                f"no task named {name!r}; registered: {self._listing()}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tasks

    def __iter__(self) -> Iterator[str]:
        """The registered names, sorted."""
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskRegistry of {len(self._tasks)} tasks>"

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tasks)

    def import_modules(self, modules: Iterable[str]) -> None:
        """Import task modules by dotted name (``"mytasks"``, ``"app.tasks"``) so that
        their ``@task`` decorators run.

        The current working directory is put on ``sys.path`` first, so ``mytasks`` finds
        ``./mytasks.py`` as users expect. The decorators register where they say: this
        registry when it is :data:`default_registry` and they pass no ``registry=``. A
        module imported before is not run again.

        Raises:
            ConfigurationError: a module failed to import; it names the module and the
                original error, which is chained.
        """
        cwd = os.getcwd()
        if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
            sys.path.insert(0, cwd)
        # A module file written after its directory was last scanned is found all the same.
        importlib.invalidate_caches()
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot import task module {module!r}: {type(exc).__name__}: {exc}"
                ) from exc

    def _listing(self) -> str:
        names = self.names()
        if not names:
            return "(none)"
        listed = ", ".join(names[:_MAX_LISTED_NAMES])
        if len(names) > _MAX_LISTED_NAMES:
            listed += f" and {len(names) - _MAX_LISTED_NAMES} more"
        return listed


default_registry: TaskRegistry = TaskRegistry()
"""The registry :func:`task` registers into when given no ``registry``."""


class _TaskDecorator:
    """What ``task(name=..., ...)`` returns: applies those options to a function."""

    def __init__(
        self,
        name: str | None,
        priority: TaskPriority,
        timeout: float | None,
        retry: Retries | None,
        schedule: Cron | Every | None,
        registry: TaskRegistry | None,
    ) -> None:
        self._name = name
        self._priority = priority
        self._timeout = timeout
        self._retry = retry
        self._schedule = schedule
        self._registry = registry

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    def __call__(self, fn: Callable[P, Any], /) -> Task[P, Any]:
        return _make_task(
            fn,
            self._name,
            self._priority,
            self._timeout,
            self._retry,
            self._schedule,
            self._registry,
        )


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    priority: TaskPriority | str = TaskPriority.NORMAL,
    timeout: float | None = None,
    retries: int = 0,
    retry_backoff: float = 2.0,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    schedule: Cron | Every | None = None,
    registry: TaskRegistry | None = None,
) -> _TaskDecorator: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    priority: TaskPriority | str = TaskPriority.NORMAL,
    timeout: float | None = None,
    retries: int = 0,
    retry_backoff: float = 2.0,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    schedule: Cron | Every | None = None,
    registry: TaskRegistry | None = None,
) -> Task[..., Any] | _TaskDecorator:
    """Make a function a task and register it, bare (``@task``) or with options
    (``@task(name=..., priority=..., timeout=..., retries=...)``).

    Args:
        name: what the task is registered and submitted under; the function's
            ``__name__`` by default. At most 256 characters.
        priority: the default priority of its submissions: a :class:`TaskPriority` or its
            name (``"high"``).
        timeout: seconds the task may run, above 0; ``None`` for no limit.
        retries: how many more attempts a submission gets when it raises one of
            ``retry_on`` (or raises :class:`Retry`); 0, the default, for none.
        retry_backoff, retry_backoff_max, retry_jitter: the wait before attempt ``n + 1``
            is ``min(retry_backoff_max, retry_backoff * 2 ** (n - 1))`` seconds, or a
            random part of it with ``retry_jitter`` (see :class:`Retries`).
        retry_on: the exception classes that are retried, subclasses included.
        schedule: run it periodically, fired by the control plane that imports this
            module: :func:`~fastworker.client.cron` or :func:`~fastworker.client.every`.
            A scheduled task takes no arguments.
        registry: where to register it; :data:`default_registry` by default.

    The options are checked when the decorator is made, the function when it is applied.

    Raises:
        InvalidPriorityError: ``priority`` is not one of the four priorities.
        ConfigurationError: ``name``, ``timeout`` or ``schedule`` is invalid, the
            function is not a plain function, or another function is registered under
            the same name.
    """
    checked_priority = TaskPriority.parse(priority)
    checked_timeout = _check_timeout(timeout)
    on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    retry = Retries(retries, retry_backoff, retry_backoff_max, retry_jitter, on)
    checked_retry = retry if retries else None
    checked_schedule = check_schedule(schedule)
    if name is not None:
        _check_name(name)
    options = (checked_priority, checked_timeout, checked_retry, checked_schedule)
    if fn is None:
        return _TaskDecorator(name, *options, registry)
    return _make_task(fn, name, *options, registry)


def _make_task(
    fn: Callable[P, Any],
    name: str | None,
    priority: TaskPriority,
    timeout: float | None,
    retry: Retries | None,
    schedule: Cron | Every | None,
    registry: TaskRegistry | None,
) -> Task[P, Any]:
    new_task = Task(
        fn, name=name, priority=priority, timeout=timeout, retry=retry, schedule=schedule
    )
    # Looked up at each call, so the default registry can be swapped (in tests).
    (registry if registry is not None else default_registry).register(new_task)
    return new_task


@dataclasses.dataclass(frozen=True)
class _PlainSignature:
    """A signature of positional-or-keyword parameters only, the common case, checked
    with a few set operations instead of ``inspect.Signature.bind`` (which costs tens of
    microseconds, paid on every submission and every run)."""

    names: tuple[str, ...]
    positions: dict[str, int]
    required: int

    @classmethod
    def of(cls, signature: inspect.Signature) -> _PlainSignature | None:
        parameters = list(signature.parameters.values())
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
            return None
        required = sum(1 for p in parameters if p.default is inspect.Parameter.empty)
        if any(p.default is inspect.Parameter.empty for p in parameters[required:]):
            return None
        names = tuple(p.name for p in parameters)
        return cls(names, {name: i for i, name in enumerate(names)}, required)

    def fits(self, args: Sequence[object], kwargs: Mapping[str, object]) -> bool:
        """True when the arguments bind; False when they may not (bind() then decides and
        words the error)."""
        given = len(args)
        if given > len(self.names):
            return False
        for key in kwargs:
            position = self.positions.get(key)
            if position is None or position < given:
                return False
        return all(name in kwargs for name in self.names[given : self.required])


def _check_function(fn: object) -> None:
    if isinstance(fn, Task):
        raise ConfigurationError(f"{fn!r} is a task already; decorate a function once")
    if isinstance(fn, str):
        raise ConfigurationError(
            f"task() takes the function to decorate, not {fn!r}; to name a task, "
            f"use @task(name={fn!r})"
        )
    if not callable(fn):
        raise ConfigurationError(f"a task must be a function, not {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(
            f"{_describe(fn)} is a generator function; a task must return its result"
        )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a task name must be a non-empty string, not {name!r}")
    if len(name) > MAX_TASK_NAME_LENGTH:
        raise ConfigurationError(
            f"task name {name[:40]!r}... is {len(name)} characters long; "
            f"the limit is {MAX_TASK_NAME_LENGTH}"
        )
    return name


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    # bool is an int subclass; True as a timeout is a mistake, not one second.
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError(
            f"a task timeout must be a number of seconds or None, not {timeout!r}"
        )
    seconds = float(timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"a task timeout must be a finite number of seconds above 0 "
            f"(or None for no limit), not {timeout!r}"
        )
    return seconds


def _same_function(a: Callable[..., object], b: Callable[..., object]) -> bool:
    """Whether two functions are one task's function: the same object, or the same module
    and qualified name (the module was reloaded)."""
    if a is b:
        return True
    a_module, a_qualname = _identity(a)
    if a_module is None or a_qualname is None:
        return False
    return (a_module, a_qualname) == _identity(b)


def _identity(fn: object) -> tuple[str | None, str | None]:
    module: object = getattr(fn, "__module__", None)
    qualname: object = getattr(fn, "__qualname__", None)
    return (
        module if isinstance(module, str) else None,
        qualname if isinstance(qualname, str) else None,
    )


def _describe(fn: object) -> str:
    """``module.qualname (file:line)``, as far as ``fn`` tells."""
    module, qualname = _identity(fn)
    text = f"{module}.{qualname}" if module and qualname else repr(fn)
    code: object = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType):
        text += f" ({code.co_filename}:{code.co_firstlineno})"
    return text
