"""The ``chimeway`` command. Thin: parse options, call one library function, print."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import traceback
from typing import Any

import click

from chimeway import db, logs, migrations
from chimeway import worker as worker_module
from chimeway.app import Chimeway
from chimeway.cli import reports
from chimeway.config import ENV_DATABASE_URL
from chimeway.engine.readiness import startup_line
from chimeway.errors import ChimewayError, ConfigurationError, InvalidSignal, InvalidTrigger
from chimeway.results import Duplicate
from chimeway.types import DeliveryStatus


class CliState:
    """Built once per invocation; the database is resolved only when a command needs it."""

    def __init__(self, database_url: str | None, verbose: bool) -> None:
        self._explicit_url = database_url
        self._url: str | None = None
        self.verbose = verbose

    def use_url(self, database_url: str) -> None:
        """A command's own ``--database-url`` (wins over the one before the command)."""
        self._explicit_url, self._url = database_url, None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = db.database_url(self._explicit_url, report=note)
        return self._url


def note(message: str) -> None:
    """Progress and notices go to stderr, so stdout stays parseable."""
    click.echo(message, err=True)


class ChimewayGroup(click.Group):
    """Turns every error into one line on stderr and exit code 1: a :class:`ChimewayError`
    says what is wrong; anything else (a bug) says only its type, since its message may
    hold input values. ``--verbose`` adds the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ChimewayError as exc:
            self._fail(ctx, exc.message)
        except Exception as exc:
            self._fail(
                ctx,
                f"unexpected {type(exc).__name__}; run with --verbose to see where",
            )

    @staticmethod
    def _fail(ctx: click.Context, message: str) -> None:
        state = ctx.find_object(CliState)
        if state is not None and state.verbose:
            traceback.print_exc(file=sys.stderr)
        click.echo(f"Error: {message}", err=True)
        ctx.exit(1)


@click.group(cls=ChimewayGroup)
@click.option(
    "--database-url",
    envvar=ENV_DATABASE_URL,
    help="PostgreSQL URL [env CHIMEWAY_DATABASE_URL]; without one, the embedded server.",
)
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="chimeway")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, verbose: bool) -> None:
    """Chimeway: durable notification workflows on PostgreSQL."""
    ctx.obj = CliState(database_url, verbose)


@cli.group(cls=ChimewayGroup, invoke_without_command=True)
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending migrations (Procrastinate's schema, then Chimeway's)."""
    if ctx.invoked_subcommand is not None:
        return
    state: CliState = ctx.obj
    result = migrations.migrate(state.url, report=note)
    if result.applied:
        click.echo(f"Applied {len(result.applied)} migration(s):")
        for mig in result.applied:
            click.echo(f"  {mig.label}")
    else:
        click.echo(f"Nothing to migrate: all {result.already_applied} migration(s) are applied.")
    if result.pinned:
        click.echo(f"Set custom plans for the job fetch: {', '.join(result.pinned)}")


@migrate.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def migrate_status(state: CliState, as_json: bool) -> None:
    """Show each migration with its applied time, or pending."""
    with db.connect(state.url) as conn:
        rows = migrations.status(conn)
    if as_json:
        reports.write_json(rows, sys.stdout)
        return
    width = max(len(f"{r.line} {r.version}") for r in rows)
    for row in rows:
        when = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "-"
        ident = f"{row.line} {row.version}"
        click.echo(f"{ident:<{width}}  {row.state:<8}  {when:<25}  {row.name}")
    pending = sum(1 for r in rows if r.state == "pending")
    click.echo(f"{len(rows) - pending} applied, {pending} pending.")


@migrate.command("print")
@click.option(
    "--chimeway-only",
    is_flag=True,
    help="Only Chimeway's migrations, for a database whose Procrastinate schema "
    "you manage yourself (procrastinate.contrib.django, your own migrations).",
)
def migrate_print(chimeway_only: bool) -> None:
    """Print every migration as one SQL script, for your own migration tool."""
    click.echo(migrations.render_sql(chimeway_only=chimeway_only), nl=False)


def load_app(spec: str | None, url: str) -> Chimeway:
    """The user's Chimeway (``module:attr``, an instance or a factory), else a plain one."""
    if not spec:
        return Chimeway(url)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"--app must look like module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like other app servers: the app lives where you run
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --app: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(found) and not isinstance(found, Chimeway):
        try:
            inspect.signature(found).bind()
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{spec} is neither a Chimeway instance nor a factory taking no arguments"
            ) from None
        found = found()
    if not isinstance(found, Chimeway):
        raise ConfigurationError(f"{spec} is a {type(found).__name__}, not a Chimeway instance")
    return found


LOG_LEVEL_OPTION = click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    help="Level of Chimeway's log lines (Procrastinate's below WARNING come with DEBUG).",
)


def configure_logging(ctx: click.Context, level: str, as_json: bool) -> None:
    """Logging for a long-running command, set up after ``--app`` was imported (see
    docs/cli.md#logging): ``--log-level`` always sets the level of Chimeway's (and
    Procrastinate's) loggers; Chimeway's stderr handler replaces the root logger's handlers
    unless the app configured some and ``--log-json`` was not given."""
    source = ctx.get_parameter_source("log_json")
    explicit = source in (
        click.core.ParameterSource.COMMANDLINE,
        click.core.ParameterSource.ENVIRONMENT,
    )
    logs.configure(level, as_json=as_json, keep_handlers=not (explicit and as_json))


APP_OPTION = click.option(
    "--app",
    "app_spec",
    envvar="CHIMEWAY_APP",
    help="Your Chimeway instance as module:attr [env CHIMEWAY_APP]; it brings your adapters "
    "and notifiers. Without it, a plain Chimeway on --database-url.",
)


@cli.command()
@APP_OPTION
@click.option("--queues", help="Comma-separated queues to work on (default: all).")
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes to run under this one (use every core).",
)
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between polls; LISTEN/NOTIFY wakes workers sooner.",
)
@click.option("--name", help="Worker name, shown in logs and Procrastinate's tables.")
@click.option(
    "--shutdown-timeout",
    type=float,
    default=None,
    help="Seconds to wait for running jobs on stop (default: until they finish).",
)
@LOG_LEVEL_OPTION
@click.option(
    "--waker/--no-waker",
    default=True,
    show_default=True,
    help="Wake for scheduled jobs at their due time (one process per queue set leads); "
    "without it they start at the next poll.",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str | None,
    queues: str | None,
    concurrency: int,
    processes: int,
    poll_interval: float,
    name: str | None,
    shutdown_timeout: float | None,
    log_level: str,
    waker: bool,
    log_json: bool,
) -> None:
    """Run a worker: deliveries, timers, signals, maintenance and your own tasks."""
    state: CliState = ctx.obj
    if processes > 1:
        configure_logging(ctx, log_level, log_json)  # the parent imports no app
        argv = [
            "worker",
            "--concurrency",
            str(concurrency),
            "--poll-interval",
            str(poll_interval),
            "--log-level",
            log_level,
        ]
        argv += ["--app", app_spec] if app_spec else []
        argv += ["--queues", queues] if queues else []
        argv += ["--name", name] if name else []
        argv += (
            ["--shutdown-timeout", str(shutdown_timeout)] if shutdown_timeout is not None else []
        )
        argv += ["--log-json"] if log_json else []
        argv += [] if waker else ["--no-waker"]
        # The URL goes through the environment: command lines are visible to every user.
        ctx.exit(worker_module.run_processes(argv, processes, database_url=state.url))
    cw = load_app(app_spec, state.url)
    configure_logging(ctx, log_level, log_json)
    selected = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    note(startup_line(cw.engine, selected, concurrency))
    options = worker_module.WorkerOptions(
        queues=selected,
        concurrency=concurrency,
        poll_interval=poll_interval,
        name=name,
        shutdown_timeout=shutdown_timeout,
        waker=waker,
    )
    code = worker_module.run(cw, options)
    cw.close()
    ctx.exit(code)


@cli.command()
@APP_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    envvar="CHIMEWAY_CORS_ORIGINS",
    help="An origin whose pages may call the inbox routes, like https://app.example.com "
    "(repeat it; env CHIMEWAY_CORS_ORIGINS, space-separated).",
)
@LOG_LEVEL_OPTION
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def serve(
    ctx: click.Context,
    app_spec: str | None,
    host: str,
    port: int,
    cors_origins: tuple[str, ...],
    log_level: str,
    log_json: bool,
) -> None:
    """Serve the HTTP API: provider webhooks, the in-app inbox, /healthz and /metrics."""
    import logging

    import uvicorn

    from chimeway.http.inbox import RedactAccessTokens

    state: CliState = ctx.obj
    cw = load_app(app_spec, state.url)
    configure_logging(ctx, log_level, log_json)
    logging.getLogger("uvicorn.access").addFilter(RedactAccessTokens())
    providers = ", ".join(sorted(cw.engine.webhook_providers)) or "none (pass webhook_providers)"
    inbox = "tokens signed" if cw.engine.signer else "no secret: inbox tokens refused"
    note(
        f"chimeway serve: http://{host}:{port}; database {db.redact_url(cw.database_url)}; "
        f"webhook providers {providers}; inbox {inbox}"
    )
    try:
        uvicorn.run(
            cw.asgi(cors_origins=cors_origins),
            host=host,
            port=port,
            log_config=None,
            server_header=False,
            # Inbox streams stay open: on shutdown they get this long to end.
            timeout_graceful_shutdown=5,
        )
    finally:
        cw.close()


@cli.command()
@APP_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def sweep(state: CliState, app_spec: str | None, as_json: bool) -> None:
    """Run one maintenance sweep: due waits, due deferred and stuck deliveries."""
    with load_app(app_spec, state.url) as cw:
        report = cw.sweep(report=None if as_json else note)
    if as_json:
        reports.write_json(report, sys.stdout)
    else:
        click.echo(f"Sweep done: {report}.")


@cli.command()
@APP_OPTION
@click.option("--tenant", required=True, help="Tenant of the signal.")
@click.option("--actor", required=True, help="Actor (recipient id) the signal is about.")
@click.option("--payload", help="A JSON object carried with the signal.")
@click.option("--idempotency-key", help="Repeated keys (per tenant) are ignored.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.argument("event")
@click.pass_obj
def signal(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    actor: str,
    payload: str | None,
    idempotency_key: str | None,
    as_json: bool,
    event: str,
) -> None:
    """Send a signal EVENT (e.g. chimeway.notification.read) to waiting runs."""
    body = parse_json_object(payload, "--payload", InvalidSignal)
    with load_app(app_spec, state.url) as cw:
        tracked = cw.track_signal(tenant, actor, event, body, idempotency_key)
    if as_json:
        reports.write_json(tracked, sys.stdout)
    elif tracked.duplicate:
        click.echo(f"Duplicate: signal {tracked.signal_id} was already recorded; nothing sent.")
    else:
        click.echo(f"Signal {tracked.signal_id} recorded; a worker routes it.")


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
TENANT_OPTION = click.option("--tenant", required=True, help="Tenant the record belongs to.")
BY_OPTION = click.option(
    "--by",
    default=lambda: os.environ.get("USER") or None,
    help="Who does it, kept in the history [default: $USER].",
)
STATUS_OPTION = click.option(
    "--status",
    type=click.Choice([s.value for s in DeliveryStatus]),
    help="Only deliveries in this status.",
)
LIMIT_OPTION = click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="At most this many.",
)


@cli.command()
@APP_OPTION
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@JSON_OPTION
@click.pass_obj
def prune(state: CliState, app_spec: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove finished jobs and history older than the retention ages (your app's, with --app)."""
    with load_app(app_spec, state.url) as cw:
        report = cw.prune(dry_run=dry_run, report=None if as_json else note)
    if as_json:
        reports.write_json(report, sys.stdout)
    else:
        click.echo(f"Prune {'dry run' if dry_run else 'done'}: {report}.")


@cli.command()
@click.option(
    "--wait",
    "wait_seconds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds a notice may stay unread before it escalates to email (give yourself "
    "time to click one in the printed inbox page).",
)
@click.option(
    "--keep-serving",
    is_flag=True,
    help="Keep the inbox page and its HTTP service up after the summary, until Ctrl-C.",
)
@click.pass_obj
def demo(state: CliState, wait_seconds: int, keep_serving: bool) -> None:
    """Run an escalation workflow end to end and explain every run (about 5 s)."""
    from chimeway.cli.demo import run_demo

    out = sys.stdout
    run_demo(state.url, out, note, wait_seconds=wait_seconds, keep_serving=keep_serving)


@cli.command()
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.argument("run_id")
@click.pass_obj
def explain(state: CliState, app_spec: str | None, tenant: str, as_json: bool, run_id: str) -> None:
    """Where a workflow run is and why."""
    with load_app(app_spec, state.url) as cw:
        explained = cw.workflows.explain(tenant, run_id)
    reports.show(explained, as_json, reports.run_explanation, sys.stdout)


@cli.command()
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.argument("run_id")
@click.pass_obj
def trace(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    limit: int | None,
    run_id: str,
) -> None:
    """Every transition of a workflow run, oldest first."""
    with load_app(app_spec, state.url) as cw:
        transitions = cw.workflows.list_traces(tenant, run_id, limit)
    reports.show(transitions, as_json, reports.trace, sys.stdout)


@cli.group(cls=ChimewayGroup)
def runs() -> None:
    """Workflow runs."""


@runs.command("list")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.option("--state", "run_state", help="Only runs in this state (active, waiting, ...).")
@click.option("--workflow", help="Only runs of this workflow key.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.pass_obj
def runs_list(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    run_state: str | None,
    workflow: str | None,
    limit: int,
) -> None:
    """A tenant's runs, newest first."""
    with load_app(app_spec, state.url) as cw:
        found = cw.workflows.list_runs(tenant, state=run_state, workflow_key=workflow, limit=limit)
    reports.show(found, as_json, reports.runs, sys.stdout)


@runs.command("cancel")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.option("--reason", required=True, help="Why, kept in the run's trace.")
@BY_OPTION
@click.argument("run_id")
@click.pass_obj
def runs_cancel(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    reason: str,
    by: str | None,
    run_id: str,
) -> None:
    """Stop a run and cancel its deliveries not sent yet (who and why go in its trace)."""
    with load_app(app_spec, state.url) as cw:
        result = cw.cancel_run(tenant, run_id, reason, cancelled_by=by)
    reports.show(result, as_json, reports.run_cancelled, sys.stdout)


@cli.group(cls=ChimewayGroup)
def deliveries() -> None:
    """Deliveries."""


@deliveries.command("explain")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.argument("delivery_id")
@click.pass_obj
def deliveries_explain(
    state: CliState, app_spec: str | None, tenant: str, as_json: bool, delivery_id: str
) -> None:
    """Why a delivery did or did not send, with its full timeline."""
    with load_app(app_spec, state.url) as cw:
        explained = cw.explain_delivery(tenant, delivery_id)
    reports.show(explained, as_json, reports.delivery, sys.stdout)


@deliveries.command("redrive")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@BY_OPTION
@click.argument("delivery_id")
@click.pass_obj
def deliveries_redrive(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    by: str | None,
    delivery_id: str,
) -> None:
    """Send a failed delivery now, or one whose provider gave up once more."""
    with load_app(app_spec, state.url) as cw:
        result = cw.redrive_delivery(tenant, delivery_id, redriven_by=by)
    reports.show(result, as_json, reports.delivery_redriven, sys.stdout)


@deliveries.command("list")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.option("--recipient", help="Only deliveries to this recipient id.")
@STATUS_OPTION
@LIMIT_OPTION
@click.pass_obj
def deliveries_list(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    recipient: str | None,
    status: str | None,
    limit: int,
) -> None:
    """A tenant's deliveries, newest first (to one recipient, in one status)."""
    with load_app(app_spec, state.url) as cw:
        found = cw.find(tenant, recipient=recipient, status=status, limit=limit)
    reports.show(found, as_json, reports.delivery_summaries, sys.stdout)


@cli.group(cls=ChimewayGroup)
def events() -> None:
    """Triggered events."""


@events.command("find")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@click.option("--recipient", help="Deliveries to this recipient id.")
@click.option("--idempotency-key", help="Deliveries of the event triggered with this key.")
@click.option("--correlation-id", help="Deliveries of the events carrying this correlation id.")
@STATUS_OPTION
@LIMIT_OPTION
@click.pass_obj
def events_find(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    recipient: str | None,
    idempotency_key: str | None,
    correlation_id: str | None,
    status: str | None,
    limit: int,
) -> None:
    """What happened to a recipient's notifications, or to an event, by key."""
    keys = [k for k in (recipient, idempotency_key, correlation_id) if k is not None]
    if len(keys) != 1:
        raise click.UsageError("give one of --recipient, --idempotency-key, --correlation-id")
    with load_app(app_spec, state.url) as cw:
        found = cw.find(
            tenant,
            recipient=recipient,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            status=status,
            limit=limit,
        )
    reports.show(found, as_json, reports.delivery_summaries, sys.stdout)


@cli.command()
@APP_OPTION
@TENANT_OPTION
@click.option("--idempotency-key", required=True, help="Repeating it makes the trigger inert.")
@click.option("--params", default="{}", show_default=True, help="The notifier's params (JSON).")
@click.option("--correlation-id", help="Your request or trace id, kept on the event.")
@JSON_OPTION
@click.argument("notifier_key")
@click.pass_obj
def trigger(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    idempotency_key: str,
    params: str,
    correlation_id: str | None,
    as_json: bool,
    notifier_key: str,
) -> None:
    """Trigger a notifier registered on your app (--app) by its key."""
    body = parse_json_object(params, "--params", InvalidTrigger) or {}
    if not app_spec:
        raise ConfigurationError("trigger needs --app (or CHIMEWAY_APP): your notifiers live there")
    with load_app(app_spec, state.url) as cw:
        result = cw.trigger(
            notifier_key,
            body,
            tenant_id=tenant,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )
    out = sys.stdout
    if as_json:  # a Duplicate has only the event id: say which it is
        reports.write_json(
            {"duplicate": isinstance(result, Duplicate), **reports.to_jsonable(result)}, out
        )
    elif isinstance(result, Duplicate):
        click.echo(f"Duplicate: event {result.event_id} already exists; nothing was written.")
    else:
        click.echo(
            f"Triggered event {result.event_id}: {len(result.notification_ids)} notification(s), "
            f"{len(result.delivery_ids)} delivery(ies), {len(result.run_ids)} run(s)."
        )


@cli.group(cls=ChimewayGroup)
def preferences() -> None:
    """Recipients' opt-outs, quiet hours and caps (and the tenant's defaults)."""


DEFAULT_OPTION = click.option(
    "--default",
    "tenant_default",
    is_flag=True,
    help="The tenant's default (for recipients without a rule of their own), not a recipient's.",
)


def _owner(recipient_id: str | None, tenant_default: bool) -> str | None:
    if (recipient_id is None) == (not tenant_default):
        raise click.UsageError("give either a RECIPIENT_ID or --default (the tenant's default)")
    return recipient_id


@preferences.command("get")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@DEFAULT_OPTION
@click.argument("recipient_id", required=False)
@click.pass_obj
def preferences_get(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    tenant_default: bool,
    recipient_id: str | None,
) -> None:
    """A recipient's rules, quiet hours and caps, beside the tenant's defaults."""
    owner = _owner(recipient_id, tenant_default)
    with load_app(app_spec, state.url) as cw:
        found = cw.preferences.get(tenant, owner)
    reports.show(found, as_json, reports.preferences, sys.stdout)


@preferences.command("set")
@APP_OPTION
@TENANT_OPTION
@JSON_OPTION
@DEFAULT_OPTION
@click.option("--channel", help="The channel (email, sms, ...); alone: the whole channel.")
@click.option("--category", help="A notifier category, on every channel or on --channel.")
@click.option("--workflow", help="A workflow (or notifier) key, on every channel or on --channel.")
@click.option("--on/--off", "enabled", default=None, help="Turn the scope on or off (required).")
@click.argument("recipient_id", required=False)
@click.pass_obj
def preferences_set(
    state: CliState,
    app_spec: str | None,
    tenant: str,
    as_json: bool,
    tenant_default: bool,
    channel: str | None,
    category: str | None,
    workflow: str | None,
    enabled: bool | None,
    recipient_id: str | None,
) -> None:
    """Turn a channel, a category or a workflow on or off for a recipient."""
    owner = _owner(recipient_id, tenant_default)
    if enabled is None:
        raise click.UsageError("give --on or --off")
    with load_app(app_spec, state.url) as cw:
        rule = cw.preferences.set(
            tenant, owner, enabled=enabled, channel=channel, category=category, workflow=workflow
        )
    reports.show(rule, as_json, reports.preference, sys.stdout)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the database, migrations, LISTEN/NOTIFY, workers, jobs and overdue waits."""
    from chimeway.cli.doctor import run_checks

    state: CliState = ctx.obj
    checks = run_checks(state.url)
    if as_json:
        ok = all(c.ok for c in checks)
        reports.write_json({"ok": ok, "checks": checks}, sys.stdout)
        ctx.exit(0 if ok else 1)
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    click.echo(f"{len(checks) - len(failed)} ok, {len(failed)} failing.")
    ctx.exit(1 if failed else 0)


def _command_url(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        state = ctx.find_object(CliState)
        assert state is not None
        state.use_url(value)


def accept_database_url(command: click.Command) -> None:
    """Give ``command`` and every command under it its own ``--database-url``, so that
    ``chimeway migrate --database-url URL`` works as well as ``chimeway --database-url URL
    migrate`` (the command's own wins)."""
    if command is not cli and not any(p.name == "command_database_url" for p in command.params):
        command.params.append(
            click.Option(
                ["--database-url", "command_database_url"],
                expose_value=False,
                callback=_command_url,
                help="PostgreSQL URL (as before the command) [env CHIMEWAY_DATABASE_URL].",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_database_url(sub)


def parse_json_object(
    text: str | None, option: str, error: type[ChimewayError]
) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:  # Python's parser gives up long before any limit of ours
        raise error(f"{option} is nested too deeply to read") from None
    if not isinstance(value, dict):
        raise error(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


accept_database_url(cli)


def main() -> None:
    # Every option can also come from the environment: CHIMEWAY_<COMMAND>_<OPTION>, e.g.
    # CHIMEWAY_WORKER_CONCURRENCY=20 (documented options also name a shorter variable).
    cli(prog_name="chimeway", auto_envvar_prefix="CHIMEWAY")
