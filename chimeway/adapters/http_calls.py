"""What the HTTP adapters share: one httpx client each, transport errors as
:class:`Temporary`, HTTP statuses as failure classes, and ``Retry-After``."""

from __future__ import annotations

import math
import ssl
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from chimeway.adapters.types import DeliveryFailure, Permanent, Temporary

USER_AGENT = "chimeway"


class HttpClient:
    """One adapter's HTTP client: thread-safe, at most ``capacity`` requests at once, every
    network step (connect, write, each read) bounded by ``timeout``, redirects not followed
    (a provider that redirects needs a new URL).

    The bound is a semaphore here and the connection pool itself is unbounded: httpcore's
    sync pool, when full, can close a connection it has just handed to a waiting request
    (encode/httpcore#1110), which fails that request with a read error or a read timeout.
    """

    def __init__(
        self, *, provider: str, timeout: float, capacity: int, verify: ssl.SSLContext | bool
    ) -> None:
        self.provider = provider
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(capacity)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            follow_redirects=False,
            verify=verify,
            headers={"User-Agent": USER_AGENT},
        )

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST, turning the request's own failures into :class:`Temporary` (a timeout or a
        connection error says nothing about the message) and a malformed URL into
        :class:`Permanent`. The URL is never part of the message: it may carry a token."""
        provider = self.provider
        if not self._slots.acquire(timeout=self.timeout):
            raise Temporary(
                f"{provider}: every send slot stayed busy for {self.timeout:g}s",
                meta={"provider": provider, "timeout": True},
            )
        try:
            return self._client.post(url, **kwargs)
        except httpx.TimeoutException as exc:
            raise Temporary(
                f"{provider}: no answer in time ({type(exc).__name__})",
                meta={"provider": provider, "timeout": True},
            ) from exc
        except httpx.TransportError as exc:
            raise Temporary(
                f"{provider}: request failed ({type(exc).__name__}: {_first_line(exc)})",
                meta={"provider": provider},
            ) from exc
        except httpx.InvalidURL as exc:
            raise Permanent(f"{provider}: the URL is invalid", meta={"provider": provider}) from exc
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response body as a JSON object, or ``None`` when it is not one."""
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_temporary_status(status: int) -> bool:
    """408, 429 and 5xx are worth retrying; other non-2xx answers are not."""
    return status in (408, 429) or status >= 500


def status_failure(response: httpx.Response, message: str, meta: dict[str, Any]) -> DeliveryFailure:
    """The failure for a non-2xx answer: :class:`Temporary` (with ``Retry-After``) when
    :func:`is_temporary_status`, else :class:`Permanent`."""
    meta = {**meta, "status_code": response.status_code}
    if is_temporary_status(response.status_code):
        return Temporary(message, meta=meta, retry_after=retry_after(response))
    return Permanent(message, meta=meta)


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The response's ``Retry-After`` in seconds, if it has a readable one."""
    return parse_retry_after(response.headers.get("Retry-After"), now)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds or an HTTP date
    (RFC 9110 §10.2.3), never negative. ``None`` when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"
