"""The routes (design §14), over an engine:

* ``POST /v1/webhooks/{provider}``: the raw body is verified before anything parses it.
  ``200`` once the events are stored (or were stored before: a retry is inert); ``401``
  when the request is not authentic and ``400`` when it is not in the provider's format,
  both having written nothing; ``404`` for a provider nobody registered; ``503`` only when
  the database cannot take the events, so that the provider retries later.
* ``/v1/inbox``: each recipient's in-app inbox, its live stream and the reference bell
  (:mod:`chimeway.http.inbox`).
* ``GET /healthz``: ``200`` when the database answers, ``503`` otherwise.
* ``GET /metrics``: Prometheus text, read from the tables at each scrape.

The engine's calls are synchronous (psycopg with a pool); they run on Starlette's thread
pool, so a slow query never blocks the event loop. Response bodies are small JSON objects
that name the problem and never repeat what was posted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chimeway.engine import metrics, webhooks
from chimeway.engine.context import Engine
from chimeway.errors import (
    ChimewayError,
    DatabaseError,
    InvalidInput,
    NotFound,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from chimeway.http import inbox as inbox_routes
from chimeway.http.feed import Hub
from chimeway.http.prometheus import SnapshotCollector

logger = logging.getLogger(__name__)

#: A webhook body larger than this is refused (413) before it is read further.
MAX_BODY_BYTES = 5_000_000

Endpoint = Callable[[Request], Awaitable[Response]]


def build(engine: Engine, *, cors_origins: Iterable[str] = ()) -> Starlette:
    """The ASGI app for ``engine``; mount it in your own ASGI app or serve it with uvicorn.
    Pages served from ``cors_origins`` may call the inbox routes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: metrics.snapshot(engine)))

    async def receive_webhook(request: Request) -> Response:
        provider = request.path_params["provider"]
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _problem(413, "the body is too large")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, "the body is too large")
        try:
            result = await run_in_threadpool(
                webhooks.process, engine, provider, body, request.headers, url=str(request.url)
            )
        except WebhookUnauthorized as exc:
            return _refused(provider, 401, exc)
        except (WebhookUnparseable, InvalidInput) as exc:
            return _refused(provider, 400, exc)
        except NotFound as exc:
            return _refused(provider, 404, exc)
        except DatabaseError as exc:
            return _unavailable(exc)
        return JSONResponse(
            {
                "events": result.events,
                "stored": len(result.ingress_ids),
                "duplicates": result.duplicates,
            }
        )

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(metrics.check_database, engine)
        except DatabaseError as exc:
            return _unavailable(exc)
        return JSONResponse({"status": "ok"})

    async def scrape(request: Request) -> Response:
        try:
            text = await run_in_threadpool(generate_latest, registry)
        except DatabaseError as exc:
            return _unavailable(exc)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    hub = Hub(engine)
    inbox_app = inbox_routes.build(engine, hub, list(cors_origins))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.close()

    app = Starlette(
        routes=[
            Route("/v1/webhooks/{provider}", receive_webhook, methods=["POST"]),
            # The feed itself answers at /v1/inbox, without a redirect to /v1/inbox/.
            Route("/v1/inbox", AtMountRoot(inbox_app, "/v1/inbox")),
            Mount("/v1/inbox", inbox_app),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.inbox_hub = hub
    return app


class AtMountRoot:
    """Serves a mounted app's ``/`` at the mount's own path (``Mount`` only matches the
    path with a slash after it, and redirects without)."""

    def __init__(self, app: ASGIApp, mount: str) -> None:
        self.app = app
        self.mount = mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = {
            **scope,
            "path": scope["path"] + "/",
            "root_path": scope.get("root_path", "") + self.mount,
        }
        await self.app(inner, receive, send)


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _refused(provider: str, status: int, exc: ChimewayError) -> JSONResponse:
    """The messages of these errors name a header or field, never a value: safe to return."""
    logger.info(
        "webhook refused",
        extra={"action": "webhook.refused", "provider": provider, "status": status},
    )
    return _problem(status, exc.message)


def _unavailable(exc: ChimewayError) -> JSONResponse:
    logger.warning(
        "database unavailable", extra={"action": "http.database_unavailable"}, exc_info=exc
    )
    return JSONResponse(
        {"error": "the database is unavailable; try again later"},
        status_code=503,
        headers={"Retry-After": "30"},
    )
