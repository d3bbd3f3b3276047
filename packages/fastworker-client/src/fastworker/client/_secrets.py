"""Secrets read from files, for the ``--*-token-file`` flags of every command: a secret
on a command line shows in ``ps``, one in a file readable by the service alone does not."""

from __future__ import annotations

from fastworker.protocol import ConfigurationError

__all__ = ["read_secret"]


def read_secret(flag: str, path: str) -> str:
    """The secret on the first line of ``path``, for the flag named ``flag``.

    Raises:
        ConfigurationError: the file cannot be read, or its first line is empty.
    """
    try:
        with open(path, encoding="utf-8") as secret_file:
            secret = secret_file.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{flag}: cannot read {path}: {exc}") from None
    if not secret:
        raise ConfigurationError(f"{flag}: {path} holds no secret on its first line")
    return secret
