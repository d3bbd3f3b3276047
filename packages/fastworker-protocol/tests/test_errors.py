"""The error tree: one root, stable codes, and errors rebuilt from the wire."""

from __future__ import annotations

import pytest

from fastworker.protocol import errors
from fastworker.protocol.errors import (
    FastworkerError,
    RequestTimeoutError,
    ResultTimeoutError,
    TaskFailedError,
    UnknownTaskError,
    error_from_code,
)


def _error_classes() -> list[type[FastworkerError]]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, FastworkerError)
    ]


def test_every_error_is_exported_and_rooted_in_fastworker_error() -> None:
    classes = _error_classes()
    assert len(classes) > 20
    assert {cls.__name__ for cls in classes} <= set(errors.__all__)


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in _error_classes()]
    assert len(codes) == len(set(codes))


def test_the_module_docstring_draws_every_class() -> None:
    assert errors.__doc__ is not None
    for cls in _error_classes():
        assert cls.__name__ in errors.__doc__


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_rebuilds_from_its_code(cls: type[FastworkerError]) -> None:
    rebuilt = error_from_code(cls.code, "went wrong")
    assert type(rebuilt) is cls
    assert rebuilt.message == "went wrong"
    assert rebuilt.remote_code == cls.code


def test_a_task_failure_carries_the_remote_type_and_traceback() -> None:
    rebuilt = error_from_code(
        "task_failed",
        "division by zero",
        remote_type="builtins.ZeroDivisionError",
        remote_traceback="Traceback ...",
    )
    assert isinstance(rebuilt, TaskFailedError)
    assert rebuilt.remote_type == "builtins.ZeroDivisionError"
    assert rebuilt.remote_traceback == "Traceback ..."
    assert str(rebuilt) == "builtins.ZeroDivisionError: division by zero"


def test_an_unknown_code_from_a_newer_peer_keeps_its_code_and_message() -> None:
    rebuilt = error_from_code("from_the_future", "new kind of refusal")
    assert type(rebuilt) is FastworkerError
    assert rebuilt.remote_code == "from_the_future"
    assert str(rebuilt) == "new kind of refusal"


def test_timeouts_can_be_caught_as_timeout_error() -> None:
    assert issubclass(RequestTimeoutError, TimeoutError)
    assert issubclass(ResultTimeoutError, TimeoutError)


def test_a_rejection_is_catchable_by_its_family() -> None:
    with pytest.raises(errors.RejectedError):
        raise UnknownTaskError("no task named 'ad'")
