"""The exception tree. Every error Chimeway raises derives from :class:`ChimewayError`.

Each class's docstring doubles as its default message. psycopg errors are translated in
one place (:func:`translate`) by SQLSTATE and constraint name, never by message text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors


class ChimewayError(Exception):
    """Chimeway failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(ChimewayError):
    """Chimeway is not configured correctly."""


class DatabaseUnavailable(ChimewayError):
    """The database cannot be reached."""


class MigrationError(ChimewayError):
    """A migration failed; the previously applied state is intact."""


class SchemaNotReady(ChimewayError):
    """The database schema is missing or out of date: run `chimeway migrate`."""


class NotFound(ChimewayError):
    """Not found."""


class InvalidArgument(ChimewayError):
    """An argument is invalid."""


class InvalidNotifier(ChimewayError):
    """The notifier is invalid."""


class InvalidContent(ChimewayError):
    """Rendered channel content is invalid."""


class InvalidTrigger(ChimewayError):
    """The trigger call is invalid."""


class InvalidTransition(ChimewayError):
    """The state transition is not allowed."""


class InvalidWorkflow(ChimewayError):
    """The workflow declaration is invalid."""


class WorkflowVersionConflict(ChimewayError):
    """A different workflow definition is already stored under this key and version."""


class InvalidSignal(ChimewayError):
    """The signal is invalid."""


class AdapterError(ChimewayError):
    """A channel adapter is missing or misbehaved."""


# Constraint name -> error factory, for violations that callers can cause with bad input.
_CONSTRAINTS: dict[str, type[ChimewayError]] = {
    "chimeway_signals_event_name_length": InvalidSignal,
}

_SCHEMA_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedFunction,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedObject,
)
# The server went away under us: shutdown, crash, restart (SQLSTATE class 57P).
_SERVER_GONE = (
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
)


def translate(exc: psycopg.Error) -> ChimewayError | None:
    """Map a psycopg error to a Chimeway error, or ``None`` when it is not ours to explain."""
    if isinstance(exc, _SCHEMA_ERRORS):
        return SchemaNotReady(
            f"database schema is missing or out of date ({exc.diag.message_primary}); "
            "run `chimeway migrate`"
        )
    if isinstance(exc, _SERVER_GONE) or (
        isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    ):
        # Connection failures, pool timeouts and closed connections carry no SQLSTATE.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DatabaseUnavailable(f"database unavailable: {first}")
    if isinstance(exc, pg_errors.IntegrityError):
        name = exc.diag.constraint_name or ""
        factory = _CONSTRAINTS.get(name)
        if factory is not None:
            return factory(f"{factory.__doc__}: {exc.diag.message_primary}")
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise psycopg errors that :func:`translate` knows as Chimeway errors."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
