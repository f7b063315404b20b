"""Secrets never reach the database, and neither does data PostgreSQL cannot store (design §5).

The rule: a key is secret when its name, read as :func:`folded_key` reads it (compatibility
forms folded, case-folded, every character that is not a letter or a digit removed, so ``_``,
``-``, ``.``, spaces and camelCase boundaries do not matter), *contains* one of
:data:`SECRET_WORDS`. Its value, whatever it is, becomes :data:`REDACTED`. ``author`` is
redacted too (it contains ``auth``): when in doubt, the safe side.

:func:`redact` applies the rule at any depth. :func:`sanitize_json` and :func:`sanitize_text`
also make data from providers storable and bounded, and say what they changed. All three walk
iteratively: no input, however deep or self-referencing, raises ``RecursionError``.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, NamedTuple, TypeVar

from chimeway.errors import ConfigurationError
from chimeway.storable import (
    PLAIN_INT,
    child_path,
    float_problem,
    int_problem,
    json_size,
    plain_text,
    short_path,
    storable_text,
)

__all__ = [
    "CIRCULAR",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_TEXT_CHARS",
    "REDACTED",
    "SECRET_WORDS",
    "TOO_DEEP",
    "TRUNCATED",
    "Sanitized",
    "clean_text",
    "folded_key",
    "is_secret",
    "redact",
    "sanitize_json",
    "sanitize_text",
]

SECRET_WORDS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "auth",
    "apikey",
    "credential",
    "privatekey",
    "cookie",
    "signature",
)
REDACTED: Final = "[redacted]"

MAX_DEPTH: Final = 32
"""Default nesting kept by :func:`sanitize_json`: the top container is depth 1."""
MAX_BYTES: Final = 65_536
"""Default size kept by :func:`sanitize_json`, as compact UTF-8 JSON: a provider's answer is
kept for the operator, not archived."""
MAX_TEXT_CHARS: Final = 2_000
"""Default length kept by :func:`sanitize_text`."""

TRUNCATED: Final = "[truncated]"
TOO_DEEP: Final = "[nested too deep]"
CIRCULAR: Final = "[circular reference]"
TOO_LARGE: Final = "[integer too large]"
UNREADABLE: Final = "[unreadable]"
CUT_SUFFIX: Final = "…[truncated]"
# Room kept for the marker that ends a cut: `,"[truncated]":"[truncated]"` is 28 bytes.
_RESERVE: Final = 32


def folded_key(key: str) -> str:
    """``key`` as the secret rule reads it: ``"X-Hub-Signature"`` -> ``"xhubsignature"``."""
    folded = unicodedata.normalize("NFKC", key).casefold()
    return "".join(char for char in folded if char.isalnum())


def is_secret(key: str) -> bool:
    """Whether the value under ``key`` is a secret (see the module's rule)."""
    folded = folded_key(key)
    return any(word in folded for word in SECRET_WORDS)


def clean_text(text: str) -> str:
    """``text`` storable by PostgreSQL: NUL becomes the visible text ``\\u0000``, lone
    surrogates U+FFFD."""
    return storable_text(text)[0]


def redact(value: Any) -> Any:
    """A copy of ``value`` with the value of every secret key replaced by :data:`REDACTED`,
    at any depth (dicts inside lists too), and storable: text cleaned as :func:`clean_text`
    does, keys made strings, tuples and sets made lists, NaN and infinities ``None``, other
    objects their text, a circular reference :data:`CIRCULAR`. Nothing is cut; redacting
    twice changes nothing more."""
    plain = _plain_redacted(value, MAX_DEPTH)
    if plain is not _NOT_PLAIN:
        return plain
    return _Walk(max_depth=None, max_bytes=None, name="", notes=False).run(value)


_NOT_PLAIN: Final = object()


def _plain_redacted(value: object, depth: int) -> Any:
    """:func:`redact`'s copy of plain data, by a quick recursive read, or ``_NOT_PLAIN`` for
    the walk to make: a type other than exactly ``dict``, ``list``, ``tuple``, ``str``,
    ``int``, ``float``, ``bool`` or ``None``, a key that is not a ``str``, text with a
    problem, an int with more than 15 digits, a float that is not finite, or containers
    nested more than ``depth`` deep (a cycle is one). On such data the walk changes nothing
    but the secrets and the tuples, as here."""
    kind = type(value)
    if kind is dict:
        if depth <= 0:
            return _NOT_PLAIN
        copy: dict[str, Any] = {}
        for key, child in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not plain_text(key):
                return _NOT_PLAIN
            if _secret(key):
                copy[key] = REDACTED
                continue
            out = _plain_redacted(child, depth - 1)
            if out is _NOT_PLAIN:
                return _NOT_PLAIN
            copy[key] = out
        return copy
    if kind is list or kind is tuple:
        if depth <= 0:
            return _NOT_PLAIN
        items = []
        for child in value:  # type: ignore[attr-defined]
            out = _plain_redacted(child, depth - 1)
            if out is _NOT_PLAIN:
                return _NOT_PLAIN
            items.append(out)
        return items
    if kind is str:
        return value if plain_text(value) else _NOT_PLAIN  # type: ignore[arg-type]
    if kind is int:
        return value if -PLAIN_INT < value < PLAIN_INT else _NOT_PLAIN  # type: ignore[operator]
    if kind is float:
        return value if math.isfinite(value) else _NOT_PLAIN  # type: ignore[arg-type]
    if kind is bool or value is None:
        return value
    return _NOT_PLAIN


@functools.lru_cache(maxsize=4096)
def _secret(key: str) -> bool:
    """:func:`is_secret`, remembered: the same few keys come back with every trigger."""
    return is_secret(key)


T = TypeVar("T")


class Sanitized(NamedTuple, Generic[T]):
    """A sanitised value and what was changed to make it storable (empty when nothing was),
    e.g. ``["NUL escaped in meta.x", "nesting cut at depth 32 in meta.a.b"]``."""

    value: T
    notes: list[str]


def sanitize_text(
    text: object, max_chars: int = MAX_TEXT_CHARS, *, name: str = "text"
) -> Sanitized[str]:
    """``text`` (a provider's message id or error message) storable as PostgreSQL text: not a
    ``str`` -> its text; NUL -> ``\\u0000``; lone surrogates -> U+FFFD; longer than
    ``max_chars`` -> cut, ending with ``…[truncated]``."""
    if max_chars < len(CUT_SUFFIX) + 1:
        raise ConfigurationError(f"max_chars must be at least {len(CUT_SUFFIX) + 1}")
    notes = _Notes()
    if isinstance(text, str):
        raw = str.__str__(text)
    else:
        notes.add(f"{type(text).__name__} converted to text", name)
        raw = _as_text(text)
    cleaned, changes = storable_text(raw[: max_chars + 1])
    for change in changes:
        notes.add(change, name)
    if len(raw) > max_chars or len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - len(CUT_SUFFIX)] + CUT_SUFFIX
        notes.add(f"cut to {max_chars} characters", name)
    return Sanitized(cleaned, notes.render())


def sanitize_json(
    value: object, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES, name: str = "meta"
) -> Sanitized[Any]:
    """``value`` (a provider's answer) redacted and always storable as ``jsonb``.

    Like :func:`redact`, and also: containers nested deeper than ``max_depth`` become
    :data:`TOO_DEEP`; past ``max_bytes`` (compact UTF-8 JSON) the rest is dropped where the
    limit is hit, which is marked by :data:`TRUNCATED` or, in a string, a ``…[truncated]``
    ending. The notes name each kind of change and where it first happened (paths start at
    ``name``). The work done is bounded by ``max_bytes``, whatever the input.
    """
    if max_depth < 1:
        raise ConfigurationError("max_depth must be at least 1")
    if max_bytes < 2 * _RESERVE:
        raise ConfigurationError(f"max_bytes must be at least {2 * _RESERVE}")
    walk = _Walk(max_depth=max_depth, max_bytes=max_bytes, name=name, notes=True)
    result = walk.run(value)
    return Sanitized(result, walk.notes.render())


# -- the walk ---------------------------------------------------------------------------------


class _Notes:
    """Changes by kind, each with the path where it first happened and how often it did."""

    def __init__(self) -> None:
        self._seen: dict[str, list[Any]] = {}

    def add(self, change: str, path: str) -> None:
        if change in self._seen:
            self._seen[change][1] += 1
        else:
            self._seen[change] = [path, 0]

    def render(self) -> list[str]:
        notes = []
        for change, (path, more) in self._seen.items():
            also = f" and {more} more place{'s' if more > 1 else ''}" if more else ""
            notes.append(f"{change} in {short_path(path) or '(root)'}{also}")
        return notes


@dataclass
class _Frame:
    """A container being copied: its copy, what is left to read, and its key in its parent."""

    target: dict[str, Any] | list[Any]
    items: Iterator[tuple[Any, Any]]
    source_id: int
    key: str | int | None
    first: bool = True


class _Cut:
    """The size limit was hit before this value could be kept."""


_CUT = _Cut()


class _Walk:
    """An iterative, depth-first copy in document order, so that a size cut keeps a prefix."""

    def __init__(
        self, *, max_depth: int | None, max_bytes: int | None, name: str, notes: bool
    ) -> None:
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.budget = None if max_bytes is None else max_bytes - _RESERVE
        self.used = 0
        self.name = name
        self.notes = _Notes()
        self.noting = notes
        self.stack: list[_Frame] = []
        self.open: set[int] = set()  # ids of the containers on the stack (cycle detection)
        self.cut = False

    def run(self, value: object) -> Any:
        result = self.value(value, None)
        while self.stack and not self.cut:
            frame = self.stack[-1]
            try:
                item = next(frame.items, None)
            except Exception:  # a Mapping or a container that fails while being read
                self.note(f"unreadable {type(frame.target).__name__} cut short", None)
                item = None
            if item is None:
                self.stack.pop()
                self.open.discard(frame.source_id)
                continue
            self.item(frame, *item)
        return TRUNCATED if result is _CUT else result

    def item(self, frame: _Frame, raw_key: Any, child: Any) -> None:
        cost = 0 if frame.first else 1
        frame.first = False
        key: str | int = raw_key
        secret = False
        if isinstance(frame.target, dict):
            # A key takes its length + 2 bytes at least: one that cannot fit is not cleaned.
            if isinstance(raw_key, str) and not self.fits(len(raw_key) + 3 + cost):
                self.stop(None)
            else:
                key = self.key(raw_key)
                secret = is_secret(key)
                if self.budget is not None:
                    cost += json_size(key) + 1
        if self.cut or not self.charge(cost, key):
            if isinstance(frame.target, dict):
                frame.target[TRUNCATED] = TRUNCATED
            else:
                frame.target.append(TRUNCATED)
            return
        # A redacted value is all or nothing: the marker is never cut like text.
        out = self.leaf(REDACTED, key) if secret else self.value(child, key)
        out = TRUNCATED if out is _CUT else out
        if isinstance(frame.target, dict):
            frame.target[str(key)] = out
        else:
            frame.target.append(out)

    def key(self, raw: object) -> str:
        if isinstance(raw, str):
            text = str.__str__(raw)
        else:
            self.note("non-string key converted to text", None)
            if raw is None or isinstance(raw, bool):
                text = {None: "null", True: "true", False: "false"}[raw]
            else:
                text = _as_text(raw)
        cleaned, changes = storable_text(text)
        for change in changes:
            self.note(f"{change} (in a key)", cleaned)
        return cleaned

    def value(self, value: object, key: str | int | None) -> Any:
        if value is None or isinstance(value, bool):
            return self.leaf(value, key)
        if isinstance(value, int):
            if int_problem(value):
                self.note("integer too large replaced", key)
                return self.leaf(TOO_LARGE, key)
            return self.leaf(int(value), key)
        if isinstance(value, float):
            if float_problem(value):
                self.note("NaN or infinity replaced with null", key)
                return self.leaf(None, key)
            return self.leaf(float(value), key)
        if isinstance(value, str):
            return self.text(str.__str__(value), key)
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            return self.container(value, key)
        if isinstance(value, bytes | bytearray):
            self.note("bytes decoded as UTF-8", key)
            data = value if self.budget is None else value[: self.room()]
            return self.text(data.decode("utf-8", "replace"), key)
        self.note(f"{type(value).__name__} converted to text", key)
        return self.text(_as_text(value), key)

    def container(self, value: Any, key: str | int | None) -> Any:
        if id(value) in self.open:
            self.note("circular reference cut", key)
            return self.leaf(CIRCULAR, key)
        if self.max_depth is not None and len(self.stack) >= self.max_depth:
            self.note(f"nesting cut at depth {self.max_depth}", key)
            return self.leaf(TOO_DEEP, key)
        if not self.charge(2, key):
            return _CUT
        target: dict[str, Any] | list[Any]
        try:
            if isinstance(value, Mapping):
                target, items = {}, iter(value.items())
            else:
                target, items = [], enumerate(value)
        except Exception:
            self.note("unreadable value replaced", key)
            return self.leaf(UNREADABLE, key)
        if isinstance(value, set | frozenset):
            self.note("set converted to a list", key)
        self.stack.append(_Frame(target, items, id(value), key))
        self.open.add(id(value))
        return target

    def text(self, text: str, key: str | int | None) -> Any:
        if self.budget is not None and len(text) + 2 > self.room():
            text = text[: self.room()]  # cannot fit whole (a character is a byte at least)
        cleaned, changes = storable_text(text)
        for change in changes:
            self.note(change, key)
        if self.budget is None or self.charge(json_size(cleaned), key):
            return cleaned
        # The limit is hit inside this string: keep the longest prefix that fits.
        room, low, high = self.room(), 0, len(cleaned)
        while low < high:
            middle = (low + high + 1) // 2
            if json_size(cleaned[:middle] + CUT_SUFFIX) <= room:
                low = middle
            else:
                high = middle - 1
        return cleaned[:low] + CUT_SUFFIX

    def leaf(self, leaf: str | int | float | bool | None, key: str | int | None) -> Any:
        if self.budget is None or self.charge(json_size(leaf), key):
            return leaf
        return _CUT

    def room(self) -> int:
        """Bytes a last value may take: what is left plus the reserve (nothing follows it)."""
        assert self.budget is not None
        return self.budget - self.used + _RESERVE

    def fits(self, size: int) -> bool:
        return self.budget is None or self.used + size <= self.budget

    def charge(self, size: int, key: str | int | None) -> bool:
        """Count ``size`` more bytes, or stop the walk when they do not fit."""
        if self.fits(size):
            self.used += size
            return True
        self.stop(key)
        return False

    def stop(self, key: str | int | None) -> None:
        self.note(f"truncated at {self.max_bytes} bytes", key)
        self.cut = True

    def note(self, change: str, key: str | int | None) -> None:
        if not self.noting:
            return
        path = self.name
        for frame in self.stack[1:]:
            assert frame.key is not None
            path = child_path(path, frame.key)
        if key is not None:
            path = child_path(path, key)
        self.notes.add(change, path)


def _as_text(value: object) -> str:
    """``str(value)`` (ISO 8601 for dates and times), or a placeholder when that fails."""
    try:
        text = value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    return str.__str__(text) if isinstance(text, str) else f"<unprintable {type(value).__name__}>"
