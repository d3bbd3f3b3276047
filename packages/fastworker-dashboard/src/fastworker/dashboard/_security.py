"""Who may read the dashboard and who may act through it.

- Access token (optional): a request passes with ``Authorization: Bearer <token>``, or
  with the cookie set when a page was once opened as ``?token=<token>`` (HttpOnly,
  SameSite=Strict, scoped to the dashboard's path; the page then redirects to the same
  address without the token so it stays out of history and logs).
- Every POST must carry the page's CSRF token in the ``X-CSRF-Token`` header (htmx sends
  it from ``hx-headers``) and come from the dashboard's own origin (``Origin``, or
  ``Referer`` when a browser sends no ``Origin``; neither is refused). The token is an
  HMAC of a secret made when the router is built, so it changes when the process
  restarts; a cross-site page can neither read it nor send a custom header without a
  CORS preflight, which the dashboard never grants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = [
    "CSRF_HEADER",
    "TOKEN_COOKIE",
    "AccessGuard",
    "CsrfGuard",
    "same_origin",
]

CSRF_HEADER: Final = "X-CSRF-Token"
TOKEN_COOKIE: Final = "fastworker_dashboard_token"
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CsrfGuard:
    """Issues and checks the CSRF token of one dashboard."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.token = _b64(
            hmac.new(self._secret, b"fastworker-dashboard/csrf/v1", hashlib.sha256).digest()
        )

    def check(self, request: Request) -> str | None:
        """None when the request may act, else why it may not."""
        supplied = request.headers.get(CSRF_HEADER)
        if not supplied:
            return "missing CSRF token: reload the dashboard page"
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return "invalid CSRF token: reload the dashboard page"
        if not same_origin(request):
            return "cross-origin request refused"
        return None


def _netloc(scheme: str, netloc: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    netloc = netloc.lower()
    default = f":{_DEFAULT_PORTS[scheme]}"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (else ``Referer``) names the host it was sent to.

    Only the host and port are compared, not the scheme, so the check holds behind a
    proxy that ends TLS; such a proxy must pass the ``Host`` header through.
    """
    source = request.headers.get("origin")
    if source is None or source == "null":
        source = request.headers.get("referer")
    if not source:
        return False
    parts = urlsplit(source)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False
    host = request.headers.get("host")
    if not host:
        return False
    return _netloc(parts.scheme, parts.netloc) == _netloc(parts.scheme, host)


class AccessGuard:
    """The optional access token of one dashboard."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token:
            raise ValueError("the access token must not be empty")
        self._token = token
        self.cookie_value = (
            None
            if token is None
            else _b64(
                hmac.new(token.encode(), b"fastworker-dashboard/cookie/v1", "sha256").digest()
            )
        )

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def matches(self, supplied: str) -> bool:
        """Whether ``supplied`` is the access token (constant time)."""
        return self._token is not None and hmac.compare_digest(
            supplied.encode(), self._token.encode()
        )

    def allows(self, request: Request) -> bool:
        """Whether the request carries the token, as a bearer header or the cookie."""
        if self._token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.matches(value.strip()):
            return True
        cookie = request.cookies.get(TOKEN_COOKIE)
        return (
            cookie is not None
            and self.cookie_value is not None
            and hmac.compare_digest(cookie.encode(), self.cookie_value.encode())
        )
