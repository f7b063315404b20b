"""Log output for the command line: one line per record, with the ``extra`` fields that
Chimeway's (and Procrastinate's) loggers attach, as ``key=value`` or as JSON."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extras(record).items() if v is not None)
        return f"{base} {fields}" if fields else base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extras(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    chosen = logging.getLevelName(level.upper())
    logging.getLogger("chimeway").setLevel(chosen)
    # Procrastinate logs every job at INFO; Chimeway's own lines say what changed. Its
    # details come back with --log-level DEBUG.
    logging.getLogger("procrastinate").setLevel(
        chosen if chosen == logging.DEBUG else max(chosen, logging.WARNING)
    )
