"""The read-only operator dashboard, mounted at ``/dashboard`` (docs/http.md "Dashboard"):
server-rendered HTML, no script at all.

* ``GET /dashboard/``: the tenant at a glance: runs by state, deliveries by status, the job
  queues (depth, oldest due job, oldest running job, jobs of stalled workers) and the
  tenant's stuck and oldest open deliveries;
* ``GET /dashboard/runs?state=&workflow=`` and ``GET /dashboard/runs/{id}``: runs, and a
  run's explanation, its whole trace and its deliveries;
* ``GET /dashboard/deliveries?status=&channel=&recipient=`` and
  ``GET /dashboard/deliveries/{id}``: deliveries, and a delivery's story with the sentence
  saying why it did or did not send (:mod:`chimeway.engine.explain`);
* ``GET /dashboard/diagrams``: the state machines of deliveries and runs;
* ``GET|POST /dashboard/login`` and ``POST /dashboard/logout``.

Every page needs an operator token (``operator_tokens``, else ``$CHIMEWAY_OPERATOR_TOKENS``,
space-separated): ``TENANT:TOKEN`` reads that tenant only; a bare ``TOKEN`` reads any tenant,
one at a time, chosen with ``?tenant=``. A browser signs in once through the login form (an
HttpOnly, SameSite=Strict cookie then carries the token); scripts send ``Authorization:
Bearer <token>``. Tokens are compared in constant time, every one of them on every request.
Without a token, or with a wrong one, a page answers ``401``; a token scoped to one tenant
asking for another gets ``403``. Every read is scoped to the tenant (another tenant's run or
delivery is ``404``, like a missing one), every value is HTML-escaped, and the pages show
ids, names, states and times, never a payload or rendered content.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from chimeway import diagrams, logs
from chimeway.engine import dashboard
from chimeway.engine.context import Engine
from chimeway.errors import ConfigurationError, DatabaseError, InvalidArgument, NotFound
from chimeway.inputs import identifier_problem
from chimeway.results import DeliveryExplanation
from chimeway.store.dashboard import DeliveryRow, StateCount
from chimeway.types import DeliveryStatus, RunState

logger = logging.getLogger(__name__)

ENV_TOKENS = "CHIMEWAY_OPERATOR_TOKENS"
COOKIE = "chimeway_operator"
#: The shortest token accepted: a guessable token would open every tenant's history.
MIN_TOKEN_CHARS = 24
#: The largest sign-in form read.
MAX_FORM_BYTES = 4096

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


#: Elements without an end tag.
VOID = frozenset({"input", "meta", "br"})


class Safe(str):
    """HTML that is already escaped (built here from escaped parts)."""

    __slots__ = ()


def esc(value: object) -> Safe:
    """``value`` as HTML text: escaped, unless it is :class:`Safe` already."""
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("")
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Safe(html.escape(str(value), quote=True))


def tag(name: str, /, *children: object, **attributes: object) -> Safe:
    """``<name attributes>children</name>``, everything escaped (``class_`` for class)."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attributes.items()
        if value is not None and value is not False
    )
    if name in VOID:
        return Safe(f"<{name}{attrs}>")
    return Safe(f"<{name}{attrs}>{''.join(esc(c) for c in children)}</{name}>")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], **attributes: object) -> Safe:
    head = tag("tr", *(tag("th", h) for h in headers))
    body = [tag("tr", *(tag("td", cell) for cell in row)) for row in rows]
    if not body:
        body = [tag("tr", tag("td", "none", colspan=len(headers), class_="empty"))]
    return tag("table", tag("thead", head), tag("tbody", *body), **attributes)


# -- operators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """Who a token lets in: one tenant, or any (``tenant is None``: chosen per request)."""

    tenant: str | None


class Operators:
    """The configured tokens. :meth:`check` compares a presented token with every one of
    them in constant time, and never stops early."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._tokens: list[tuple[bytes, Operator]] = []
        for entry in entries:
            tenant, sep, token = entry.partition(":")
            if not sep:
                tenant, token = "", entry
            if sep and identifier_problem(tenant):
                raise ConfigurationError("an operator token's tenant must be an identifier")
            if len(token) < MIN_TOKEN_CHARS or identifier_problem(token) or " " in token:
                raise ConfigurationError(
                    f"an operator token must be at least {MIN_TOKEN_CHARS} characters "
                    "without spaces (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
            self._tokens.append((token.encode(), Operator(tenant or None)))

    @classmethod
    def configured(cls, tokens: Iterable[str] | None) -> Operators:
        """``tokens``, else ``$CHIMEWAY_OPERATOR_TOKENS`` (space-separated)."""
        if tokens is None:
            tokens = os.environ.get(ENV_TOKENS, "").split()
        return cls(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def check(self, presented: str | None) -> Operator | None:
        if not presented:
            return None
        given = presented.encode("utf-8", "replace")
        found = None
        for token, operator in self._tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = operator
        return found


# -- the app ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """An authenticated request: the operator and the tenant it reads."""

    request: Request
    operator: Operator
    tenant: str | None

    def link(self, path: str, **params: object) -> str:
        """A link inside the dashboard, carrying the chosen tenant along."""
        query = {k: str(v) for k, v in params.items() if v not in (None, "")}
        if self.operator.tenant is None and self.tenant:
            query = {"tenant": self.tenant, **query}
        root = self.request.scope.get("root_path", "")
        return f"{root}{path}" + (f"?{urlencode(query)}" if query else "")


Page = Callable[[Engine, Seen], Awaitable[Response]]


def build(engine: Engine, operators: Operators) -> Starlette:
    """The dashboard app, to mount at ``/dashboard``."""

    def authenticated(page: Page, *, needs_tenant: bool = True) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            operator = operators.check(_presented(request))
            if operator is None:
                return _login_page(request, status=401)
            wanted = request.query_params.get("tenant") or None
            if operator.tenant is not None and wanted not in (None, operator.tenant):
                return _page(
                    request, 403, "Forbidden", tag("p", "This token reads another tenant.")
                )
            tenant = operator.tenant or wanted
            seen = Seen(request, operator, tenant)
            if needs_tenant and tenant is None:
                return _tenant_picker(seen)
            try:
                return await page(engine, seen)
            except NotFound as exc:
                return _page(request, 404, "Not found", tag("p", exc.message), seen)
            except InvalidArgument as exc:
                return _page(request, 400, "Bad request", tag("p", exc.message), seen)
            except DatabaseError as exc:
                logger.warning(
                    "dashboard: database unavailable",
                    extra={"action": "dashboard.database_unavailable"},
                    exc_info=logs.withheld(exc),
                )
                return _page(request, 503, "Unavailable", tag("p", "The database is away."))

        return endpoint

    async def login_form(request: Request) -> Response:
        return _login_page(request, status=200)

    async def login(request: Request) -> Response:
        # The form is urlencoded (what a browser posts); parsed here, as Starlette's own
        # form parser needs python-multipart.
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _login_page(request, status=401, failed=True)
        try:
            values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4).get("token")
        except ValueError:  # too many fields
            values = None
        token = values[0] if values else None
        operator = operators.check(token)
        if operator is None or token is None:
            logger.info("dashboard login refused", extra={"action": "dashboard.login_refused"})
            return _login_page(request, status=401, failed=True)
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/", status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            token,
            path=root or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=root or "/")
        return response

    return Starlette(
        routes=[
            Route("/", authenticated(overview), methods=["GET"]),
            Route("/runs", authenticated(run_list), methods=["GET"]),
            Route("/runs/{run_id}", authenticated(run_detail), methods=["GET"]),
            Route("/deliveries", authenticated(delivery_list), methods=["GET"]),
            Route("/deliveries/{delivery_id}", authenticated(delivery_detail), methods=["GET"]),
            Route("/diagrams", authenticated(diagram_page, needs_tenant=False), methods=["GET"]),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
        ]
    )


async def overview(engine: Engine, seen: Seen) -> Response:
    assert seen.tenant is not None
    view = await run_in_threadpool(dashboard.overview, engine, seen.tenant)
    ages = {a.queue: a for a in view.job_ages}
    queues = table(
        [
            "queue",
            "due",
            "scheduled",
            "running",
            "oldest due (s)",
            "oldest running (s)",
            "stalled",
        ],
        [
            [
                q.queue,
                q.due,
                q.scheduled,
                q.running,
                f"{q.oldest_due_seconds:.1f}",
                f"{ages[q.queue].oldest_running_seconds:.1f}" if q.queue in ages else "",
                ages[q.queue].stalled if q.queue in ages else 0,
            ]
            for q in view.queues
        ],
        id="queues",
    )
    body = Safe(
        tag("h2", "Runs by state")
        + _counts(seen, view.run_states, "/runs", "state", "run-states")
        + tag("h2", "Deliveries by status")
        + _counts(seen, view.delivery_statuses, "/deliveries", "status", "delivery-statuses")
        + tag("h2", "Job queues")
        + tag("p", "All tenants' jobs, as counts (jobs carry ids only).", class_="note")
        + queues
        + tag("h2", "Stuck and oldest open deliveries")
        + tag(
            "p",
            f"Dispatched for longer than {int(view.stuck_after.total_seconds())} s "
            "first (a sweep takes them over), then the oldest open ones.",
            class_="note",
        )
        + _deliveries(seen, view.stuck, "stuck")
    )
    return _page(seen.request, 200, f"Tenant {seen.tenant}", body, seen)


async def run_list(engine: Engine, seen: Seen) -> Response:
    assert seen.tenant is not None
    state = seen.request.query_params.get("state") or None
    workflow = seen.request.query_params.get("workflow") or None
    found = await run_in_threadpool(
        lambda: dashboard.runs(engine, seen.tenant or "", state=state, workflow_key=workflow)
    )
    form = _filters(
        seen,
        "/runs",
        [
            _select("state", state, [s.value for s in RunState]),
            _text("workflow", workflow),
        ],
    )
    rows = table(
        ["run", "workflow", "recipient", "state", "step", "reason", "started", "last move"],
        [
            [
                tag("a", str(r.id), href=seen.link(f"/runs/{r.id}")),
                f"{r.workflow_key} v{r.workflow_version}",
                r.recipient_id,
                r.state,
                r.current_step_name,
                r.terminal_reason or r.status_reason,
                r.started_at,
                r.last_transition_at,
            ]
            for r in found
        ],
        id="runs",
    )
    return _page(seen.request, 200, "Runs", Safe(form + rows), seen)


async def run_detail(engine: Engine, seen: Seen) -> Response:
    assert seen.tenant is not None
    run_id = seen.request.path_params["run_id"]
    page = await run_in_threadpool(dashboard.run, engine, seen.tenant, run_id)
    run = page.run
    facts = table(
        ["", ""],
        [
            ["workflow", f"{run.workflow_key} v{run.workflow_version}"],
            ["recipient", run.recipient_id],
            ["state", run.state],
            ["current step", run.current_step_name],
            ["reason", run.status_reason],
            ["terminal reason", run.terminal_reason],
            ["suspended until", run.suspended_until],
            ["pending signals", ", ".join(run.pending_signals)],
            ["started", run.started_at],
        ],
        id="run",
    )
    trace = table(
        ["at", "from", "to", "step", "reason", "delivery", "context"],
        [
            [
                t.created_at,
                t.from_state,
                t.to_state,
                t.step_key,
                t.reason,
                tag("a", str(t.delivery_id), href=seen.link(f"/deliveries/{t.delivery_id}"))
                if t.delivery_id
                else "",
                _json(t.context),
            ]
            for t in page.trace
        ],
        id="trace",
    )
    links = tag(
        "ul",
        *(
            tag("li", tag("a", str(d), href=seen.link(f"/deliveries/{d}")))
            for d in page.delivery_ids
        ),
        id="run-deliveries",
    )
    body = Safe(facts + tag("h2", "Trace") + trace + tag("h2", "Deliveries") + links)
    return _page(seen.request, 200, f"Run {run.id}", body, seen)


async def delivery_list(engine: Engine, seen: Seen) -> Response:
    assert seen.tenant is not None
    params = seen.request.query_params
    status = params.get("status") or None
    channel = params.get("channel") or None
    recipient = params.get("recipient") or None
    found = await run_in_threadpool(
        lambda: dashboard.deliveries(
            engine, seen.tenant or "", status=status, channel=channel, recipient_id=recipient
        )
    )
    form = _filters(
        seen,
        "/deliveries",
        [
            _select("status", status, [s.value for s in DeliveryStatus]),
            _text("channel", channel),
            _text("recipient", recipient),
        ],
    )
    return _page(
        seen.request,
        200,
        "Deliveries",
        Safe(form + _deliveries(seen, found, "deliveries")),
        seen,
    )


async def delivery_detail(engine: Engine, seen: Seen) -> Response:
    assert seen.tenant is not None
    delivery_id = seen.request.path_params["delivery_id"]
    story = await run_in_threadpool(dashboard.delivery, engine, seen.tenant, delivery_id)
    return _page(seen.request, 200, f"Delivery {story.delivery_id}", _story(seen, story), seen)


async def diagram_page(engine: Engine, seen: Seen) -> Response:
    body = Safe(
        tag("h2", "Deliveries")
        + tag("pre", diagrams.delivery_diagram(), id="delivery-diagram")
        + tag("h2", "Workflow runs")
        + tag("pre", diagrams.run_diagram(), id="run-diagram")
        + tag("p", "Mermaid state diagrams (docs/states.md renders them).", class_="note")
    )
    return _page(seen.request, 200, "State diagrams", body, seen)


def off() -> Starlette:
    """What ``/dashboard`` answers when no operator token is configured."""

    async def endpoint(request: Request) -> Response:
        return _page(
            request,
            404,
            "Dashboard off",
            tag("p", f"No operator token is configured: set {ENV_TOKENS}."),
        )

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


# -- pieces ----------------------------------------------------------------------------------


def _counts(seen: Seen, counts: Sequence[StateCount], path: str, param: str, table_id: str) -> Safe:
    return table(
        [param, "count"],
        [[tag("a", c.label, href=seen.link(path, **{param: c.label})), c.n] for c in counts],
        id=table_id,
    )


def _deliveries(seen: Seen, rows: Sequence[DeliveryRow], table_id: str) -> Safe:
    return table(
        [
            "delivery",
            "recipient",
            "channel",
            "status",
            "reason",
            "workflow",
            "attempts",
            "created",
            "status since",
        ],
        [
            [
                tag("a", str(d.id), href=seen.link(f"/deliveries/{d.id}")),
                d.recipient_id,
                d.channel,
                d.status,
                d.suppression_reason,
                tag("a", d.workflow_key or "run", href=seen.link(f"/runs/{d.workflow_run_id}"))
                if d.workflow_run_id
                else (d.workflow_key or ""),
                d.attempts,
                d.created_at,
                d.status_changed_at,
            ]
            for d in rows
        ],
        id=table_id,
    )


def _story(seen: Seen, story: DeliveryExplanation) -> Safe:
    facts = table(
        ["", ""],
        [
            ["notification", story.notification_key],
            ["event", story.event_id],
            ["correlation id", story.correlation_id],
            ["recipient", story.recipient_id],
            ["channel", story.channel],
            ["status", story.status],
            ["suppression reason", story.suppression_reason],
            [
                "run",
                tag(
                    "a",
                    str(story.workflow_run_id),
                    href=seen.link(f"/runs/{story.workflow_run_id}"),
                )
                if story.workflow_run_id
                else "",
            ],
            ["step", story.workflow_step],
        ],
        id="delivery",
    )
    attempts = table(
        ["#", "outcome", "error class", "error", "provider message id", "started", "finished"],
        [
            [
                a.attempt_number,
                a.outcome,
                a.error_class,
                a.error,
                a.provider_message_id,
                a.started_at,
                a.finished_at,
            ]
            for a in story.attempts
        ],
        id="attempts",
    )
    timeline = table(
        ["at", "what", "detail"],
        [[e.at, e.event, _json(e.detail)] for e in story.timeline],
        id="timeline",
    )
    decisions = tag("ul", *(tag("li", d) for d in story.decisions), id="decisions")
    return Safe(
        tag("p", story.why, id="why", class_="why")
        + facts
        + tag("h2", "Policy decisions")
        + decisions
        + tag("h2", "Attempts")
        + attempts
        + tag("h2", "Timeline")
        + timeline
    )


def _json(value: Mapping[str, Any]) -> Safe:
    if not value:
        return Safe("")
    return tag("code", json.dumps(value, sort_keys=True, default=str))


def _filters(seen: Seen, path: str, fields: Sequence[Safe]) -> Safe:
    hidden = (
        tag("input", type="hidden", name="tenant", value=seen.tenant)
        if seen.operator.tenant is None
        else Safe("")
    )
    root = seen.request.scope.get("root_path", "")
    return tag(
        "form",
        hidden,
        *fields,
        tag("button", "Filter", type="submit", id="apply"),
        method="get",
        action=f"{root}{path}",
        class_="filters",
        id="filters",
    )


def _select(name: str, chosen: str | None, options: Sequence[str]) -> Safe:
    choices = [tag("option", "any", value="")] + [
        tag("option", o, value=o, selected="selected" if o == chosen else None) for o in options
    ]
    return tag("label", name, " ", tag("select", *choices, name=name, id=f"f-{name}"))


def _text(name: str, value: str | None) -> Safe:
    return tag(
        "label", name, " ", tag("input", type="text", name=name, value=value or "", id=f"f-{name}")
    )


def _tenant_picker(seen: Seen) -> Response:
    root = seen.request.scope.get("root_path", "")
    form = tag(
        "form",
        tag("label", "tenant ", tag("input", type="text", name="tenant", id="f-tenant")),
        tag("button", "Open", type="submit", id="open"),
        method="get",
        action=f"{root}{seen.request.url.path.removeprefix(root) or '/'}",
    )
    return _page(
        seen.request,
        200,
        "Choose a tenant",
        Safe(tag("p", "This token reads any tenant: choose one.") + form),
        seen,
    )


def _login_page(request: Request, *, status: int, failed: bool = False) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    form = tag(
        "form",
        tag("label", "Operator token ", tag("input", type="password", name="token", id="token")),
        tag("button", "Sign in", type="submit", id="sign-in"),
        method="post",
        action=f"{root}/login",
    )
    note = tag("p", "That token is not valid.", class_="error", id="login-error") if failed else ""
    response = _page(request, status, "Sign in", Safe(esc(note) + form))
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chimeway dashboard"'
    return response


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2937;color:#fff;padding:.6em 1em}
header a{color:#fff;margin-right:1em}
main{padding:1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f6}
td.empty{color:#888}
code{font-size:12px;word-break:break-all}
.note{color:#555}
.why{font-size:1.1em;background:#fef3c7;padding:.5em}
.error{color:#b91c1c}
form.filters label{margin-right:1em}
pre{background:#f3f4f6;padding:1em;overflow:auto}
"""


def _page(
    request: Request, status: int, title: str, body: Safe, seen: Seen | None = None
) -> HTMLResponse:
    nav = Safe("")
    if seen is not None:
        root = request.scope.get("root_path", "")
        nav = tag(
            "nav",
            tag("a", "Overview", href=seen.link("/")),
            tag("a", "Runs", href=seen.link("/runs")),
            tag("a", "Deliveries", href=seen.link("/deliveries")),
            tag("a", "Diagrams", href=seen.link("/diagrams")),
            tag(
                "form",
                tag("button", "Sign out", type="submit", id="sign-out"),
                method="post",
                action=f"{root}/logout",
                style="display:inline",
            ),
            tag("span", f"tenant: {seen.tenant or '(choose one)'}", id="tenant"),
        )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{esc(title)} · Chimeway</title><style>{STYLE}</style></head>"
        f"<body><header>{tag('strong', 'Chimeway')} {nav}</header>"
        f"<main>{tag('h1', title)}{body}</main></body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=HEADERS)
