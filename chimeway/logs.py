"""Log output for the command line: one line per record, with the ``extra`` fields that
Chimeway's (and Procrastinate's) loggers attach, as ``key=value`` or as JSON, each stamped
with its time in ISO 8601, in UTC (``2026-03-01T12:00:00.123Z``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

#: The levels ``--log-level`` accepts.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


def error_fields(exc: BaseException) -> dict[str, Any]:
    """What a log line may say of ``exc``: its class, its SQLSTATE (a database error) and
    the innermost place in Chimeway it came through (``store/deliveries.py:298``); never its
    message, which may quote a row's values (PostgreSQL's ``DETAIL: Key (email)=(...)``)."""
    package = Path(__file__).parent
    inside = [
        f"{Path(f.filename).relative_to(package)}:{f.lineno}"
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).is_relative_to(package)
    ]
    return {
        "error": type(exc).__name__,
        "sqlstate": getattr(exc, "sqlstate", None),
        "raised_in": inside[-1] if inside else None,
    }


class Withheld(Exception):
    """Stands in for an exception in a log record: the traceback (code, never data) and the
    exception's class and SQLSTATE, without its message."""


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def withheld(exc: BaseException) -> ExcInfo:
    """``exc_info`` for a log line about ``exc`` that keeps its traceback and drops its
    message (and those of the exceptions it was raised from, named by class only)."""
    kind = type(exc)
    said = f"{kind.__module__}.{kind.__qualname__}"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        said += f" (SQLSTATE {sqlstate})"
    causes: list[str] = []
    seen = _raised_from(exc)
    while seen is not None and len(causes) < 5:
        causes.append(type(seen).__name__)
        seen = _raised_from(seen)
    if causes:
        said += f", raised from {' <- '.join(causes)}"
    return Withheld, Withheld(f"{said}; its message is withheld"), exc.__traceback__


def _raised_from(exc: BaseException) -> BaseException | None:
    """The exception ``exc`` was raised from, as Python's traceback shows it."""
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


class Withholding(logging.Filter):
    """On a handler: every record's exception is logged as :func:`withheld` logs it, the
    lines of other libraries (Procrastinate, psycopg's pool) included."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and not isinstance(error, Withheld):
            record.exc_info = withheld(error)
            record.exc_text = None
        return True


def iso_time(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601, UTC, to the millisecond."""
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class KeyValueFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extras(record).items() if v is not None)
        return f"{base} {fields}" if fields else base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": iso_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extras(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str = "INFO", as_json: bool = False, *, keep_handlers: bool = False) -> None:
    """Chimeway's log lines at ``level`` on stderr. With ``keep_handlers``, handlers the
    application already put on the root logger stay (Chimeway's records go through them)
    and only when there are none is Chimeway's own handler installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(Withholding())
    root = logging.getLogger()
    if not (keep_handlers and root.handlers):
        root.handlers[:] = [handler]
        root.setLevel(logging.WARNING)
    chosen = logging.getLevelName(level.upper())
    if not isinstance(chosen, int):
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    logging.getLogger("chimeway").setLevel(chosen)
    # Procrastinate logs every job at INFO; Chimeway's own lines say what changed. Its
    # details come back with --log-level DEBUG.
    logging.getLogger("procrastinate").setLevel(
        chosen if chosen == logging.DEBUG else max(chosen, logging.WARNING)
    )
