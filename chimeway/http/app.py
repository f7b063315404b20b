"""The routes (design §14), over an engine:

* ``POST /v1/webhooks/{provider}``: the raw body is verified before anything parses it.
  ``200`` once the events are stored (or were stored before: a retry is inert); ``401``
  when the request is not authentic and ``400`` when it is not in the provider's format,
  both having written nothing; ``404`` for a provider nobody registered; ``503`` only when
  the database cannot take the events, so that the provider retries later.
* ``/v1/inbox``: each recipient's in-app inbox, its live stream and the reference bell
  (:mod:`chimeway.http.inbox`).
* ``GET|POST /v1/unsubscribe/{token}``: the one-click unsubscribe link (RFC 8058). ``POST``
  (what a mail client's unsubscribe button sends, and the confirmation form) turns the
  token's scope off and answers ``200``; ``GET`` only shows a small page with a form that
  posts, so a link scanner following the link unsubscribes nobody. ``400`` for a token that
  is not valid, ``410`` for an expired one, ``404`` when the app signs no links.
* ``GET /healthz``: ``200`` when the database answers, ``503`` otherwise.
* ``GET /metrics``: Prometheus text, read from the tables at each scrape.
* ``/dashboard``: the read-only operator dashboard, behind an operator token
  (:mod:`chimeway.http.dashboard`).

Webhooks are stored without leaving the event loop: verified and parsed there (a large
body on a thread), then written by a :class:`~chimeway.engine.webhooks.WebhookWriter`,
which gives the requests arriving at once one statement and one commit (group commit) on
an asyncio connection pool, and answers each once that commit is done. The engine's other
calls are synchronous (psycopg with a pool); they run on Starlette's thread pool, so a slow
query never blocks the event loop. Response bodies are small JSON objects
that name the problem and never repeat what was posted.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chimeway import logs
from chimeway.engine import metrics, preferences, webhooks
from chimeway.engine.context import Engine
from chimeway.errors import (
    ChimewayError,
    ConfigurationError,
    DatabaseError,
    InvalidInput,
    InvalidToken,
    NotFound,
    TokenExpired,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from chimeway.http import dashboard as dashboard_routes
from chimeway.http import inbox as inbox_routes
from chimeway.http.feed import Hub
from chimeway.http.prometheus import SnapshotCollector
from chimeway.policy import PreferenceScope

logger = logging.getLogger(__name__)

#: A webhook body larger than this is refused (413) before it is read further.
MAX_BODY_BYTES = 5_000_000

Endpoint = Callable[[Request], Awaitable[Response]]


def build(
    engine: Engine,
    *,
    cors_origins: Iterable[str] = (),
    operator_tokens: Iterable[str] | None = None,
    webhook_writer: webhooks.WebhookWriter | None = None,
) -> Starlette:
    """The ASGI app for ``engine``; mount it in your own ASGI app or serve it with uvicorn.
    Pages served from ``cors_origins`` may call the inbox routes. ``operator_tokens`` (else
    ``$CHIMEWAY_OPERATOR_TOKENS``) open the operator dashboard (:mod:`.dashboard`).
    ``webhook_writer`` stores the webhooks (default: a :class:`~.webhooks.WebhookWriter`
    with its defaults); the app closes it when it shuts down."""
    writer = webhook_writer or webhooks.WebhookWriter(engine)
    operators = dashboard_routes.Operators.configured(operator_tokens)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: metrics.snapshot(engine)))

    receive_webhook = _webhook_endpoint(engine, writer)

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            claims = await run_in_threadpool(preferences.check_unsubscribe, engine, token)
        except (InvalidToken, ConfigurationError) as exc:
            return _link_refused(exc)
        except DatabaseError as exc:
            return _unavailable(exc)
        what = html.escape(_scope_words(claims.scope))
        return _page(
            200,
            "Unsubscribe",
            f"<p>Stop receiving {what}?</p>"
            f'<form method="post"><input type="hidden" name="List-Unsubscribe" '
            f'value="One-Click"><button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            rule = await run_in_threadpool(preferences.unsubscribe, engine, token)
        except (InvalidToken, ConfigurationError) as exc:
            return _link_refused(exc)
        except DatabaseError as exc:
            return _unavailable(exc)
        scope = PreferenceScope(rule.channel, rule.category, rule.workflow)
        what = html.escape(_scope_words(scope))
        return _page(200, "Unsubscribed", f"<p>You will no longer receive {what}.</p>")

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
    dashboard_app = (
        dashboard_routes.build(engine, operators) if operators else dashboard_routes.off()
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.close()
        await writer.close()

    app = Starlette(
        routes=[
            Route("/v1/webhooks/{provider}", receive_webhook, methods=["POST"]),
            # The feed itself answers at /v1/inbox, without a redirect to /v1/inbox/.
            Route("/v1/inbox", AtMountRoot(inbox_app, "/v1/inbox")),
            Mount("/v1/inbox", inbox_app),
            Route("/v1/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
            Route("/v1/unsubscribe/{token}", unsubscribe, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
            Route("/dashboard", AtMountRoot(dashboard_app, "/dashboard")),
            Mount("/dashboard", dashboard_app),
        ],
        lifespan=lifespan,
    )
    app.state.inbox_hub = hub
    return app


def _webhook_endpoint(engine: Engine, writer: webhooks.WebhookWriter) -> Endpoint:
    """``POST /v1/webhooks/{provider}`` (see the module)."""

    async def receive_webhook(request: Request) -> Response:
        provider = request.path_params["provider"]
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _problem(413, "the body is too large")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, "the body is too large")
        try:
            # A plain dict (the first of repeated headers, as Starlette's Headers reads
            # them): providers look headers up several times, and Headers decodes every
            # raw header at each lookup.
            headers: dict[str, str] = {}
            for key, value in request.scope["headers"]:
                headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
            result = await webhooks.process_async(
                engine, writer, provider, body, headers, url=str(request.url)
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

    return receive_webhook


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


def _scope_words(scope: PreferenceScope) -> str:
    """What an unsubscribe turns off, for the page: "email about 'mentions'"."""
    channel = scope.channel or "messages"
    if scope.category:
        return f"{channel} about '{scope.category}'"
    if scope.workflow:
        return f"{channel} of '{scope.workflow}'"
    return channel


def _page(status: int, title: str, body: str) -> HTMLResponse:
    """A minimal page; the link's token is in its URL, so no referrer leaves it."""
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title></head>'
        f"<body><h1>{title}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _link_refused(exc: ChimewayError) -> HTMLResponse:
    """The messages of these errors never contain the token."""
    if isinstance(exc, ConfigurationError):
        status, text = 404, "Unsubscribe links are not enabled here."
    elif isinstance(exc, TokenExpired):
        status, text = 410, "This unsubscribe link has expired."
    else:
        status, text = 400, "This unsubscribe link is not valid."
    logger.info(
        "unsubscribe link refused",
        extra={"action": "unsubscribe.refused", "status": status, "error": exc.message},
    )
    return _page(status, "Unsubscribe", f"<p>{text}</p>")


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
        "database unavailable",
        extra={"action": "http.database_unavailable"},
        exc_info=logs.withheld(exc),
    )
    return JSONResponse(
        {"error": "the database is unavailable; try again later"},
        status_code=503,
        headers={"Retry-After": "30"},
    )
