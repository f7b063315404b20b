"""Checks of caller input shared by the public entry points; each raises the caller's error type.

Every message names the field and the rule broken, and shows a value only as a short, escaped
preview (never a long or binary value). The limits:

- an identifier (tenant, recipient, actor, idempotency key, event name, correlation id,
  channel) is a non-blank ``str`` of at most :data:`MAX_IDENTIFIER_CHARS` characters (by
  default) without control characters (C0, DEL, C1: NUL, tab and newline included) or lone
  surrogates;
- a JSON object (trigger params, a signal payload) is a mapping with ``str`` keys holding
  dicts, lists, tuples, strings, ints of at most 1000 digits, finite floats, bools and
  ``None``; no NUL or lone surrogate in any key or string; at most :data:`MAX_DEPTH` levels of
  nesting (the object itself is level 1) and :data:`MAX_BYTES` bytes as compact UTF-8 JSON;
- a list limit is an ``int`` (not a ``bool``) from 1 to the caller's maximum.

The JSON check is iterative: no input, however deep or self-referencing, raises
``RecursionError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from chimeway.errors import ChimewayError
from chimeway.storable import (
    PLAIN_CHAR_BYTES,
    PLAIN_FLOAT_CHARS,
    PLAIN_INT,
    PLAIN_INT_CHARS,
    child_path,
    control_problem,
    float_problem,
    int_problem,
    json_size,
    plain_text,
    preview,
    short_path,
    text_problem,
)

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_IDENTIFIER_CHARS",
    "identifier",
    "identifier_problem",
    "json_object",
    "json_problem",
    "limit",
    "non_blank",
]

MAX_IDENTIFIER_CHARS: Final = 255
"""Far below PostgreSQL's ~2,700-byte limit on a b-tree index entry (4 bytes a character)."""
MAX_DEPTH: Final = 32
MAX_BYTES: Final = 1_000_000


def identifier_problem(text: str, max_chars: int = MAX_IDENTIFIER_CHARS) -> str | None:
    """The identifier rule broken by ``text`` (blank, too long, a control character, a lone
    surrogate), or ``None``. The length is checked first, so a huge value is not scanned."""
    if not text.strip():
        return "must not be blank"
    if len(text) > max_chars:
        return f"is {len(text)} characters long; at most {max_chars} allowed"
    return control_problem(text) or text_problem(text)


def identifier(
    name: str, value: Any, error: type[ChimewayError], *, max_chars: int = MAX_IDENTIFIER_CHARS
) -> str:
    """``value`` once it is known to follow the identifier rule (see the module)."""
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be a non-blank string, got {preview(value)}")
    problem = identifier_problem(value, max_chars)
    if problem is not None:
        raise error(f"{name} {problem}")
    return value


def non_blank(
    name: str, value: Any, error: type[ChimewayError], *, max_chars: int | None = None
) -> str:
    """``value`` once it is known to be a non-blank ``str`` that PostgreSQL can store (no NUL,
    no lone surrogate), of at most ``max_chars`` characters when given. For free text; use
    :func:`identifier` for names and keys."""
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be a non-blank string, got {preview(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise error(f"{name} is {len(value)} characters long; at most {max_chars} allowed")
    problem = text_problem(value)
    if problem is not None:
        raise error(f"{name} {problem}")
    return value


def limit(name: str, value: Any, error: type[ChimewayError], *, maximum: int) -> int:
    """``value`` once it is known to be an ``int`` (not a ``bool``) from 1 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise error(f"{name} must be an int from 1 to {maximum}, got {preview(value)}")
    return int(value)


def json_object(
    name: str,
    value: Any,
    error: type[ChimewayError],
    *,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """A copy of ``value`` (a ``dict``; nested values are not copied) once it is known to be
    a JSON object that PostgreSQL can store (see the module)."""
    if not isinstance(value, Mapping):
        raise error(f"{name} must be a JSON object, got {type(value).__name__}")
    copy = dict(value)
    checked = value if isinstance(value, dict) else copy  # the original, for its cycles
    problem = json_problem(checked, name=name, max_depth=max_depth, max_bytes=max_bytes)
    if problem is not None:
        raise error(f"{name} must be JSON-serializable: {problem}")
    return copy


def json_problem(
    value: object,
    *,
    name: str = "",
    max_depth: int | None = MAX_DEPTH,
    max_bytes: int | None = None,
) -> str | None:
    """Why ``value`` cannot be stored as JSON by PostgreSQL as it is, or ``None``.

    The answer starts with the path of the first offending value (``params.items.0.when:``,
    or ``(root):`` when ``name`` is empty). Accepted: the types ``json.dumps`` takes (dicts,
    lists, tuples, strings, numbers, bools, ``None``, and their subclasses) within the limits of
    the module; ``max_depth`` and ``max_bytes`` are not checked when ``None``. With
    ``max_bytes``, the work done is bounded by it.
    """
    if max_depth is not None and max_depth <= MAX_DEPTH:
        # Plain data within every limit is the common case: a quick recursive read (its
        # depth bounded by max_depth) proves it; anything else takes the exact walk below,
        # which finds the first problem and its path.
        budget = _plain_budget(value, max_depth, _UNBOUNDED if max_bytes is None else max_bytes)
        if budget >= 0:
            return None
    return _Check(name, max_depth, max_bytes).run(value)


_UNBOUNDED: Final = 1 << 62


def _plain_budget(value: object, depth: int, budget: int) -> int:
    """What is left of ``budget`` once ``value`` is counted, or -1 when the quick read
    cannot prove it is fine: a type other than exactly ``dict``, ``list``, ``tuple``,
    ``str``, ``int``, ``float``, ``bool`` or ``None`` (subclasses included), a key that is
    not a ``str``, text with a problem, an int with more than 15 digits, a float that is
    not finite, containers nested more than ``depth`` deep (a cycle is one), or more than
    ``budget`` bytes by an upper bound of its compact JSON (:data:`PLAIN_CHAR_BYTES` a
    character). Every -1 is decided again by the exact walk."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        return budget - 2 - PLAIN_CHAR_BYTES * len(text) if plain_text(text) else -1
    if kind is dict:
        if depth <= 0:
            return -1
        budget -= 2
        for key, child in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not plain_text(key):
                return -1
            budget = _plain_budget(child, depth - 1, budget - 4 - PLAIN_CHAR_BYTES * len(key))
            if budget < 0:
                return -1
        return budget
    if kind is list or kind is tuple:
        if depth <= 0:
            return -1
        budget -= 2
        for child in value:  # type: ignore[attr-defined]
            budget = _plain_budget(child, depth - 1, budget - 1)
            if budget < 0:
                return -1
        return budget
    if kind is int:
        return budget - PLAIN_INT_CHARS if -PLAIN_INT < value < PLAIN_INT else -1  # type: ignore[operator]
    if kind is bool or value is None:
        return budget - 5
    if kind is float:
        return budget - PLAIN_FLOAT_CHARS if math.isfinite(value) else -1  # type: ignore[arg-type]
    return -1


@dataclass
class _Frame:
    """A container being read: what is left of it, and where it is."""

    items: Iterator[tuple[Any, Any]]
    source_id: int
    path: str
    is_object: bool
    first: bool = True


class _Check:
    """An iterative, depth-first read that stops at the first problem."""

    def __init__(self, name: str, max_depth: int | None, max_bytes: int | None) -> None:
        self.name = name
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.used = 0  # bytes as compact UTF-8 JSON so far (when max_bytes is set)
        self.stack: list[_Frame] = []
        self.open: set[int] = set()  # ids of the containers on the stack (cycle detection)

    def run(self, value: object) -> str | None:
        problem = self.enter(value, self.name)
        while problem is None and self.stack:
            frame = self.stack[-1]
            entry = next(frame.items, None)
            if entry is None:
                self.stack.pop()
                self.open.discard(frame.source_id)
                continue
            key, child = entry
            self.count(0 if frame.first else 1)
            frame.first = False
            if frame.is_object:
                problem = self.key(frame.path, key)
                if problem is not None:
                    return problem
            problem = self.enter(child, child_path(frame.path, key)) or self.size_problem()
        return problem or self.size_problem()

    def key(self, path: str, key: object) -> str | None:
        if not isinstance(key, str):
            return f"{self.where(path)}: key {preview(key)} is not a string"
        problem = text_problem(key)
        if problem is not None:
            return f"{self.where(child_path(path, key))}: key {problem}"
        self.count_text(key, extra=1)
        return None

    def enter(self, item: object, path: str) -> str | None:
        if not isinstance(item, dict | list | tuple):
            return self.scalar(item, path)
        if id(item) in self.open:
            return f"{self.where(path)}: circular reference"
        if self.max_depth is not None and len(self.stack) >= self.max_depth:
            return f"{self.where(path)}: nested deeper than {self.max_depth} levels"
        self.count(2)
        if isinstance(item, dict):
            self.stack.append(_Frame(iter(item.items()), id(item), path, is_object=True))
        else:
            self.stack.append(_Frame(enumerate(item), id(item), path, is_object=False))
        self.open.add(id(item))
        return None

    def scalar(self, item: object, path: str) -> str | None:
        problem: str | None = None
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is None:
                self.count_text(item)
        elif item is None or isinstance(item, bool):
            self.count(json_size(item))
        elif isinstance(item, int):
            problem = int_problem(item)
            if problem is None and self.max_bytes is not None:
                self.count(json_size(int(item)))
        elif isinstance(item, float):
            problem = float_problem(item)
            if problem is None and self.max_bytes is not None:
                self.count(json_size(float(item)))
        else:
            problem = f"{type(item).__name__} is not JSON-serializable"
        return None if problem is None else f"{self.where(path)}: {problem}"

    def count(self, size: int) -> None:
        self.used += size

    def count_text(self, text: str, extra: int = 0) -> None:
        if self.max_bytes is None:
            return
        if len(text) + 2 + extra > self.max_bytes - self.used:
            self.used = self.max_bytes + 1  # too long whatever its encoding: not encoded
        else:
            self.used += json_size(text) + extra

    def size_problem(self) -> str | None:
        if self.max_bytes is None or self.used <= self.max_bytes:
            return None
        return f"{self.where(self.name)}: larger than {self.max_bytes} bytes as compact JSON"

    def where(self, path: str) -> str:
        return short_path(path) or "(root)"
