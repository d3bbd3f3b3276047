"""The one error hierarchy of fastworker. Every package raises these, and errors that
cross the wire are rebuilt as the same classes on the other side.

::

    FastworkerError
    ├── ConfigurationError            a setting, flag or argument is invalid
    │   └── InvalidPriorityError      not one of the four priorities (also ValueError)
    ├── LoopThreadError               SyncClient called on its own loop thread (RuntimeError)
    ├── UnsupportedValueError         a value the codec cannot carry (also TypeError)
    ├── ProtocolError                 bytes on the wire that break the contract
    │   ├── MalformedFrameError       garbage, truncated, wrong types, nested too deeply
    │   ├── FrameTooLargeError        over the frame size limit
    │   ├── ProtocolVersionError      a peer speaking another major protocol version
    │   └── UnexpectedReplyError      a reply that does not answer the request it names
    ├── TransportError                the connection, not the content
    │   ├── NotConnectedError         used before start() or after stop()
    │   ├── ConnectionClosedError     the peer went away with requests in flight
    │   └── RequestTimeoutError       no answer within the request timeout (also TimeoutError)
    ├── RejectedError                 the control plane refused a request
    │   ├── UnknownTaskError          no task registered under that name
    │   ├── InvalidArgumentsError     arguments that do not fit the task's signature
    │   ├── TaskNotFoundError         no task with that id (never seen, or evicted)
    │   ├── QueueFullError            the queue is at its limit; retry later
    │   ├── StorageError              not stored durably: journal full, read-only or corrupt
    │   ├── DuplicateWorkerError      a subworker id that is already connected
    │   ├── LeaseError                an outcome from a connection not holding the lease
    │   ├── UnsupportedFeatureError   an option the control plane does not offer (older minor)
    │   ├── AuthenticationError       a missing or wrong shared secret
    │   └── ConnectionLimitError      the control plane serves as many connections as it may
    ├── ResultTimeoutError            the caller stopped waiting first (also TimeoutError)
    └── TaskError                     a task ended without a value
        ├── TaskFailedError           the task raised; carries remote type, message, traceback
        ├── TaskTimeoutError          the task ran past its own time limit
        ├── WorkerLostError           its subworker died or went silent, retries exhausted
        └── TaskCancelledError        cancelled before it ran, or stopped while running

Each class has a stable ``code``: the string that names it on the wire. A receiver
rebuilds the error with :func:`error_from_code`; a code it does not know (from a newer
peer) becomes a plain :class:`FastworkerError` that still carries the code and message.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionClosedError",
    "ConnectionLimitError",
    "DuplicateWorkerError",
    "FastworkerError",
    "FrameTooLargeError",
    "InvalidArgumentsError",
    "InvalidPriorityError",
    "LeaseError",
    "LoopThreadError",
    "MalformedFrameError",
    "NotConnectedError",
    "ProtocolError",
    "ProtocolVersionError",
    "QueueFullError",
    "RejectedError",
    "RequestTimeoutError",
    "ResultTimeoutError",
    "StorageError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TransportError",
    "UnexpectedReplyError",
    "UnknownTaskError",
    "UnsupportedFeatureError",
    "UnsupportedValueError",
    "WorkerLostError",
    "error_from_code",
]


class FastworkerError(Exception):
    """Root of every error fastworker raises."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # An instance may carry a code its class does not know: an error from a newer peer.
        self.remote_code = code if code is not None else type(self).code


class ConfigurationError(FastworkerError):
    """A setting, flag or argument given to fastworker is invalid."""

    code = "configuration"


class InvalidPriorityError(ConfigurationError, ValueError):
    """A value that is not one of the four task priorities."""

    code = "invalid_priority"


class LoopThreadError(FastworkerError, RuntimeError):
    """A SyncClient was called on its own event-loop thread, from a completion callback:
    the call would wait for ever for the loop busy running that callback. Nothing was sent."""

    code = "loop_thread"


class UnsupportedValueError(FastworkerError, TypeError):
    """An argument or result the codec cannot carry. Nothing is silently converted."""

    code = "unsupported_value"


class ProtocolError(FastworkerError):
    """Bytes on the wire that break the contract."""

    code = "protocol"


class MalformedFrameError(ProtocolError):
    """A frame that is not valid msgpack, is truncated, has fields of the wrong type, or
    is nested too deeply to decode."""

    code = "malformed_frame"


class FrameTooLargeError(ProtocolError):
    """A frame over the size limit; it is refused before decoding."""

    code = "frame_too_large"


class ProtocolVersionError(ProtocolError):
    """A peer that speaks another major protocol version."""

    code = "protocol_version"


class UnexpectedReplyError(ProtocolError):
    """A reply that does not answer the request it names."""

    code = "unexpected_reply"


class TransportError(FastworkerError):
    """The connection failed, not the content."""

    code = "transport"


class NotConnectedError(TransportError):
    """A client or worker used before it was started or after it was stopped."""

    code = "not_connected"


class ConnectionClosedError(TransportError):
    """The peer went away while requests were in flight."""

    code = "connection_closed"


class RequestTimeoutError(TransportError, TimeoutError):
    """The control plane did not answer a request within its bound."""

    code = "request_timeout"


class RejectedError(FastworkerError):
    """The control plane understood the request and refused it."""

    code = "rejected"


class UnknownTaskError(RejectedError):
    """No task is registered under the requested name."""

    code = "unknown_task"


class InvalidArgumentsError(RejectedError):
    """Arguments that do not fit the task's signature."""

    code = "invalid_arguments"


class TaskNotFoundError(RejectedError):
    """No task with that id: never submitted, or evicted from the result cache."""

    code = "task_not_found"


class QueueFullError(RejectedError):
    """The control plane's queue is at its limit. Retry later."""

    code = "queue_full"


class StorageError(RejectedError):
    """The control plane could not store the request durably (journal full, read-only or
    corrupt); nothing was accepted."""

    code = "storage"


class DuplicateWorkerError(RejectedError):
    """A subworker announced an id that another connected subworker already has."""

    code = "duplicate_worker"


class LeaseError(RejectedError):
    """An outcome or hand-back came from a connection that does not hold the task's
    lease: a client, or a subworker the task was never leased to. Nothing changed."""

    code = "lease"


class UnsupportedFeatureError(RejectedError):
    """A submission option the control plane does not offer: it speaks an older protocol
    minor, or runs without the feature. Refused by the client before anything is sent
    (and by the control plane, from a client that sends it anyway)."""

    code = "unsupported_feature"


class AuthenticationError(RejectedError):
    """The control plane requires a shared secret and the peer did not present it."""

    code = "authentication"


class ConnectionLimitError(RejectedError):
    """The control plane serves as many connections as ``--max-connections`` allows; this
    one was closed. Retry later, or raise the limit."""

    code = "connection_limit"


class ResultTimeoutError(FastworkerError, TimeoutError):
    """The caller stopped waiting before the task finished. The task itself goes on."""

    code = "result_timeout"


class TaskError(FastworkerError):
    """A task ended without producing a value."""

    code = "task_error"


class TaskFailedError(TaskError):
    """The task raised. ``remote_type`` names the exception class in the worker,
    ``remote_traceback`` is its formatted traceback."""

    code = "task_failed"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        remote_type: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message, code=code)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}" if self.remote_type else self.message


class TaskTimeoutError(TaskError):
    """The task ran past its own time limit and was stopped."""

    code = "task_timeout"


class WorkerLostError(TaskError):
    """The subworker running the task died or went silent, and the task was not retried."""

    code = "worker_lost"


class TaskCancelledError(TaskError):
    """The task was cancelled: before it ran, or while it ran (the message says how it
    stopped)."""

    code = "task_cancelled"


def _all_subclasses(root: type[FastworkerError]) -> list[type[FastworkerError]]:
    found: list[type[FastworkerError]] = [root]
    for child in root.__subclasses__():
        found.extend(_all_subclasses(child))
    return found


_BY_CODE: dict[str, type[FastworkerError]] = {
    cls.code: cls for cls in _all_subclasses(FastworkerError)
}


def error_from_code(
    code: str, message: str, *, remote_type: str = "", remote_traceback: str = ""
) -> FastworkerError:
    """Rebuild the error a peer sent as ``code`` and ``message``."""
    cls = _BY_CODE.get(code, FastworkerError)
    if issubclass(cls, TaskFailedError):
        return cls(message, code=code, remote_type=remote_type, remote_traceback=remote_traceback)
    return cls(message, code=code)
