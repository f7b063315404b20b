"""The inbox routes (design §14), mounted at ``/v1/inbox``:

* ``GET /v1/inbox?status=all|unread|unseen&archived=false&limit=50&cursor=...``: a page of
  items, newest first, and ``next_cursor``;
* ``GET /v1/inbox/counts``: ``{"unseen", "unread", "total"}``;
* ``POST /v1/inbox/mark`` with ``{"ids": [...] | "all", "action": "seen" | "read" |
  "archived" | "unarchived" | "unread"}``: what changed;
* ``GET /v1/inbox/stream``: server-sent events: ``counts`` at once and after every change,
  ``item`` for each new item (its ``id:`` is the item's cursor, so a client reconnecting with
  ``Last-Event-ID`` gets what it missed), ``marked`` when items were marked elsewhere, and
  ``reload`` when the client should fetch its list again. A stream ends when its token
  expires; reconnect with a new one;
* ``GET /v1/inbox/widget.js`` and ``GET /v1/inbox/example``: the reference bell and a page
  that shows it (public: they hold no data).

Every data route needs a recipient token from ``cw.inbox.token``, as ``Authorization: Bearer
<token>`` or, for ``EventSource`` (which cannot send headers), ``?access_token=<token>`` on
the stream. A missing, forged or expired token is ``401``; a token reads its own recipient's
inbox only. Cross-origin pages are allowed from ``cors_origins``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chimeway.engine import inbox
from chimeway.engine.context import Engine
from chimeway.errors import (
    ConfigurationError,
    DatabaseError,
    InvalidArgument,
    InvalidToken,
    TokenExpired,
)
from chimeway.http.feed import Event, Hub, Subscriber, counts_json, encode, item_json
from chimeway.policy.tokens import InboxClaims
from chimeway.results import InboxItem, InboxStatus

logger = logging.getLogger(__name__)

#: Seconds between two comments on an idle stream (keeps proxies from closing it).
HEARTBEAT = 15.0
#: The longest a stream stays open, whatever its token's expiry.
MAX_STREAM = dt.timedelta(hours=1)
#: Sent first on a stream: how long a client waits before reconnecting (milliseconds).
RETRY_MS = 2000
MAX_MARK_BODY = 100_000

Handler = Callable[[Request, InboxClaims], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def build(engine: Engine, hub: Hub, cors_origins: Sequence[str] = ()) -> Starlette:
    """The inbox app, to mount at ``/v1/inbox``."""
    routes = Routes(engine, hub)
    return Starlette(
        routes=[
            Route("/", routes.authenticated(routes.list_page), methods=["GET"]),
            Route("/counts", routes.authenticated(routes.counts), methods=["GET"]),
            Route("/mark", routes.authenticated(routes.mark), methods=["POST"]),
            Route(
                "/stream", routes.authenticated(routes.stream, query_token=True), methods=["GET"]
            ),
            Route("/widget.js", widget, methods=["GET"]),
            Route("/example", example, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                max_age=600,
            )
        ],
    )


class Routes:
    """The data routes over one engine and the process's hub."""

    def __init__(self, engine: Engine, hub: Hub) -> None:
        self.engine = engine
        self.hub = hub

    def authenticated(self, handler: Handler, *, query_token: bool = False) -> Endpoint:
        """``handler`` for requests that carry a valid token, with its claims."""

        async def endpoint(request: Request) -> Response:
            presented = _token(request, query_token)
            if presented is None:
                return _unauthorized("an inbox token is required (Authorization: Bearer)")
            try:
                claims = inbox.verify(self.engine, presented)
            except ConfigurationError:
                logger.error(
                    "an inbox request came, but Chimeway has no secret to verify its token",
                    extra={"action": "inbox.no_secret"},
                )
                return JSONResponse(
                    {"error": "the inbox is not configured on this server"}, status_code=503
                )
            except TokenExpired:
                return _unauthorized("the inbox token has expired", "invalid_token")
            except InvalidToken:
                return _unauthorized("the inbox token is not valid", "invalid_token")
            try:
                return await handler(request, claims)
            except InvalidArgument as exc:
                return JSONResponse({"error": exc.message}, status_code=400)
            except DatabaseError:
                logger.warning(
                    "database unavailable", extra={"action": "http.database_unavailable"}
                )
                return JSONResponse(
                    {"error": "the database is unavailable; try again later"},
                    status_code=503,
                    headers={"Retry-After": "5"},
                )

        return endpoint

    async def list_page(self, request: Request, claims: InboxClaims) -> Response:
        query = request.query_params
        archived = query.get("archived", "false")
        if archived not in ("true", "false"):
            raise InvalidArgument("archived must be true or false")
        size = query.get("limit", "50")
        if not size.isdigit():
            raise InvalidArgument(f"limit must be an integer from 1 to {inbox.MAX_LIMIT}")
        found = await run_in_threadpool(
            inbox.list_items,
            self.engine,
            claims.tenant_id,
            claims.recipient_id,
            status=cast(InboxStatus, query.get("status", "all")),
            archived=archived == "true",
            limit_to=int(size[:6]),
            cursor=query.get("cursor"),
        )
        return JSONResponse(
            {"items": [item_json(i) for i in found.items], "next_cursor": found.next_cursor}
        )

    async def counts(self, request: Request, claims: InboxClaims) -> Response:
        found = await run_in_threadpool(
            inbox.counts, self.engine, claims.tenant_id, claims.recipient_id
        )
        return JSONResponse(counts_json(found))

    async def mark(self, request: Request, claims: InboxClaims) -> Response:
        body = await request.body()
        if len(body) > MAX_MARK_BODY:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        ids, action = _mark_request(body)
        done = await run_in_threadpool(
            inbox.mark, self.engine, claims.tenant_id, claims.recipient_id, ids, action
        )
        return JSONResponse(
            {
                "action": done.action,
                "changed": [str(i) for i in done.changed],
                "signals": done.signals,
            }
        )

    async def stream(self, request: Request, claims: InboxClaims) -> Response:
        subscriber = await self.hub.subscribe(claims.tenant_id, claims.recipient_id)
        try:
            first = await self._opening(claims, request.headers.get("last-event-id"))
        except BaseException:
            self.hub.unsubscribe(subscriber)
            raise
        ends_at = min(claims.expires_at, dt.datetime.now(dt.UTC) + MAX_STREAM)
        return StreamingResponse(
            self._events(subscriber, first, ends_at),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _opening(self, claims: InboxClaims, last: str | None) -> list[Event]:
        """What a stream sends first: what it missed since ``last`` (a cursor), if given,
        then the counts."""
        replayed: list[InboxItem] = []
        reload = False
        if last:
            try:
                replayed, reload = await run_in_threadpool(
                    inbox.replay, self.engine, claims.tenant_id, claims.recipient_id, last
                )
            except InvalidArgument:
                reload = True  # not a cursor of ours: start afresh
        current = await run_in_threadpool(
            inbox.counts, self.engine, claims.tenant_id, claims.recipient_id
        )
        return [
            *([Event("reload")] if reload else []),
            *(Event("item", item=i) for i in replayed),
            Event("counts", counts=current),
        ]

    async def _events(
        self, subscriber: Subscriber, first: list[Event], ends_at: dt.datetime
    ) -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            for event in first:
                yield encode(event)
            while True:
                left = (ends_at - dt.datetime.now(dt.UTC)).total_seconds()
                if left <= 0:
                    return
                try:
                    got = await asyncio.wait_for(
                        subscriber.queue.get(), timeout=min(HEARTBEAT, left)
                    )
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if got is None:
                    return
                yield encode(got)
        finally:
            self.hub.unsubscribe(subscriber)


async def widget(request: Request) -> Response:
    return Response(
        _static("widget.js"),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def example(request: Request) -> Response:
    return Response(_static("example.html"), media_type="text/html")


class RedactAccessTokens(logging.Filter):
    """Hides the value of ``access_token=`` in uvicorn's access log lines (a stream opened
    by ``EventSource`` carries its token in the URL); add it to the ``uvicorn.access``
    logger. ``chimeway serve`` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(
            isinstance(a, str) and "access_token=" in a for a in args
        ):
            record.args = tuple(
                _QUERY_TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in args
            )
        return True


_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s]*")


def _token(request: Request, query_token: bool) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if query_token:
        return request.query_params.get("access_token") or None
    return None


def _unauthorized(message: str, error: str | None = None) -> JSONResponse:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return JSONResponse(
        {"error": message}, status_code=401, headers={"WWW-Authenticate": challenge}
    )


def _mark_request(body: bytes) -> tuple[Any, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidArgument("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidArgument("the body must be a JSON object")
    ids, action = data.get("ids"), data.get("action")
    if ids != "all" and not isinstance(ids, list):
        raise InvalidArgument('ids must be a list of item ids or "all"')
    if not isinstance(action, str):
        raise InvalidArgument(f"action must be one of {', '.join(inbox.ACTIONS)}")
    return ids, action


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("chimeway.http") / "static" / name).read_bytes()
