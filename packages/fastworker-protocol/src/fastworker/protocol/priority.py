"""Task priorities: four strict levels, in the order the control plane drains them."""

from __future__ import annotations

import enum

from .errors import InvalidPriorityError

__all__ = ["TaskPriority"]


class TaskPriority(enum.IntEnum):
    """How urgent a task is. The dispatcher always takes the oldest task of the highest
    non-empty level; there is no fairness across levels.

    Members are declared in drain order and a lower value drains first. The values are
    part of the wire format: they are never renumbered.
    """

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: TaskPriority | str | int) -> TaskPriority:
        """Read a priority from a member, its name in any case (``"critical"``), or its
        number. Anything else raises :class:`InvalidPriorityError`; nothing is guessed.
        """
        if isinstance(value, TaskPriority):
            return value
        # bool is an int subclass; True as a priority is a mistake, not a level.
        if isinstance(value, int) and not isinstance(value, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            member = cls.__members__.get(value.strip().upper())
            if member is not None:
                return member
        names = ", ".join(member.name.lower() for member in cls)
        raise InvalidPriorityError(f"{value!r} is not a task priority; expected one of {names}")
