"""TaskPriority: four strict levels, stable numbers, parsed only from what is meant."""

from __future__ import annotations

import pytest

from fastworker.protocol import ConfigurationError, InvalidPriorityError, TaskPriority


def test_members_are_declared_in_drain_order_and_lower_values_drain_first() -> None:
    assert list(TaskPriority) == [
        TaskPriority.CRITICAL,
        TaskPriority.HIGH,
        TaskPriority.NORMAL,
        TaskPriority.LOW,
    ]
    assert sorted(
        [TaskPriority.LOW, TaskPriority.CRITICAL, TaskPriority.NORMAL, TaskPriority.HIGH]
    ) == list(TaskPriority)


def test_values_are_the_wire_format_and_never_change() -> None:
    assert {member.name: member.value for member in TaskPriority} == {
        "CRITICAL": 0,
        "HIGH": 1,
        "NORMAL": 2,
        "LOW": 3,
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("critical", TaskPriority.CRITICAL),
        ("CRITICAL", TaskPriority.CRITICAL),
        ("High", TaskPriority.HIGH),
        (" normal ", TaskPriority.NORMAL),
        ("low", TaskPriority.LOW),
        (0, TaskPriority.CRITICAL),
        (3, TaskPriority.LOW),
        (TaskPriority.HIGH, TaskPriority.HIGH),
    ],
)
def test_parse_reads_names_in_any_case_and_numbers(
    given: str | int, expected: TaskPriority
) -> None:
    assert TaskPriority.parse(given) is expected


@pytest.mark.parametrize("given", ["urgent", "", "0", 4, -1, True, 2.0, None])
def test_parse_refuses_anything_else_with_a_typed_error(given: object) -> None:
    with pytest.raises(InvalidPriorityError, match="critical, high, normal, low"):
        TaskPriority.parse(given)  # type: ignore[arg-type]


def test_invalid_priority_is_a_configuration_error_and_a_value_error() -> None:
    with pytest.raises(ConfigurationError):
        TaskPriority.parse("urgent")
    with pytest.raises(ValueError):  # noqa: PT011 - the subclass relation is what is tested
        TaskPriority.parse("urgent")
