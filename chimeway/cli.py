"""The ``chimeway`` command. Thin: parse options, call one library function, print."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from chimeway import migrations, settings
from chimeway.errors import ChimewayError


class CliState:
    """Built once per invocation; the database is resolved only when a command needs it."""

    def __init__(self, database_url: str | None, verbose: bool) -> None:
        self._explicit_url = database_url
        self._url: str | None = None
        self.verbose = verbose

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = settings.database_url(self._explicit_url, report=note)
        return self._url


def note(message: str) -> None:
    """Progress and notices go to stderr, so stdout stays parseable."""
    click.echo(message, err=True)


class ChimewayGroup(click.Group):
    """Turns every :class:`ChimewayError` into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChimewayError as exc:
            state = ctx.obj if isinstance(ctx.obj, CliState) else None
            if state is not None and state.verbose:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {exc.message}", err=True)
            ctx.exit(1)


@click.group(cls=ChimewayGroup)
@click.option(
    "--database-url",
    envvar=settings.ENV_DATABASE_URL,
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


@migrate.command("status")
@click.pass_obj
def migrate_status(state: CliState) -> None:
    """Show each migration with its applied time, or pending."""
    from chimeway import db

    with db.connect(state.url) as conn:
        rows = migrations.status(conn)
    width = max(len(f"{r.line} {r.version}") for r in rows)
    for row in rows:
        when = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "-"
        ident = f"{row.line} {row.version}"
        click.echo(f"{ident:<{width}}  {row.state:<8}  {when:<25}  {row.name}")
    pending = sum(1 for r in rows if r.state == "pending")
    click.echo(f"{len(rows) - pending} applied, {pending} pending.")


@migrate.command("print")
def migrate_print() -> None:
    """Print every migration as one SQL script, for your own migration tool."""
    click.echo(migrations.render_sql(), nl=False)


def main() -> None:
    cli(prog_name="chimeway")


if __name__ == "__main__":
    main()
