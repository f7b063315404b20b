"""The exception tree. Every error Chimeway raises derives from :class:`ChimewayError`::

    ChimewayError
    ├── ConfigurationError          the app or the deployment is set up wrong
    ├── DatabaseError               the database cannot do what is needed right now
    │   ├── DatabaseUnavailable     cannot connect, the server went away, the pool timed out
    │   ├── SchemaNotReady          run `chimeway migrate`
    │   └── MigrationError
    ├── InvalidInput                the caller's input is wrong; nothing was written
    │   ├── InvalidArgument         a plain argument (a limit, a timestamp, a setting)
    │   │   └── WrongConnection     ``conn=`` is not the connection kind the call joins
    │   ├── InvalidTrigger, InvalidSignal
    │   ├── InvalidNotifier, InvalidWorkflow, InvalidContent   declarations and what they return
    │   ├── InvalidToken ── TokenExpired        unsubscribe and inbox tokens
    │   └── WebhookUnauthorized, WebhookUnparseable   provider webhooks (never echo the body)
    ├── NotFound                    missing, or another tenant's (reported alike)
    └── Conflict                    the rows changed under the request
        ├── WorkflowVersionConflict
        └── InvalidTransition       a state machine refused a move (a race, or a bug)

Each class's docstring doubles as its default message. psycopg errors are translated in
one place (:func:`translate`) by SQLSTATE and constraint name, never by message text.

Adapters report provider failures with :class:`chimeway.adapters.Temporary`, ``Permanent``
and ``Bounced``: those are not errors of Chimeway but values a user's adapter raises to say
how a send went (like River's ``JobCancel``), so they derive from ``Exception`` directly.
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


# -- the app or the deployment is set up wrong --------------------------------------------


class ConfigurationError(ChimewayError):
    """Chimeway is not configured correctly."""


# -- the database ------------------------------------------------------------------------


class DatabaseError(ChimewayError):
    """The database cannot do what Chimeway needs right now."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class SchemaNotReady(DatabaseError):
    """The database schema is missing or out of date: run `chimeway migrate`."""


class MigrationError(DatabaseError):
    """A migration failed; the previously applied state is intact."""


# -- the caller's input ------------------------------------------------------------------


class InvalidInput(ChimewayError):
    """The input is invalid; nothing was written."""


class InvalidArgument(InvalidInput):
    """An argument is invalid."""


class WrongConnection(InvalidArgument):
    """``conn=`` is not a connection this call can join: the sync methods take a psycopg
    ``Connection``, the ``*_async`` ones a psycopg ``AsyncConnection``."""


class InvalidTrigger(InvalidInput):
    """The trigger call is invalid."""


class InvalidSignal(InvalidInput):
    """The signal is invalid."""


class InvalidNotifier(InvalidInput):
    """The notifier is invalid."""


class InvalidWorkflow(InvalidInput):
    """The workflow declaration is invalid."""


class InvalidContent(InvalidInput):
    """Rendered channel content is invalid."""


class InvalidToken(InvalidInput):
    """The token is not valid: forged, tampered with, malformed, expired or for another use."""


class TokenExpired(InvalidToken):
    """The token has expired."""


class WebhookUnauthorized(InvalidInput):
    """The webhook request could not be authenticated."""


class WebhookUnparseable(InvalidInput):
    """The webhook body is not in the provider's format."""


# -- the rows ----------------------------------------------------------------------------


class NotFound(ChimewayError):
    """Not found."""


class Conflict(ChimewayError):
    """The rows changed in a way that conflicts with the request."""


class WorkflowVersionConflict(Conflict):
    """A different workflow definition is already stored under this key and version."""


class InvalidTransition(Conflict):
    """The state transition is not allowed (a race with another writer, or a bug)."""


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
