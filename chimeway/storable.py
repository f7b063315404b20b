"""What PostgreSQL can store: the text facts shared by the input checks and the sanitiser.

PostgreSQL ``text`` and ``jsonb`` cannot hold NUL (U+0000), and a Python ``str`` can hold
surrogate code points (U+D800-U+DFFF, "lone surrogates") that UTF-8 cannot encode. Sizes are
counted as compact UTF-8 JSON (``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``),
the same measure for every limit. Nothing here echoes a long or binary value: :func:`preview`
shows a short, escaped rendering at most.
"""

from __future__ import annotations

import json
import math
import re
from typing import Final

NUL: Final = "\x00"
NUL_ESCAPE: Final = "\\u0000"  # the visible text a NUL becomes when data is sanitised
MAX_INT: Final = 10**1000  # larger integers are not stored (their text would be absurd)
PREVIEW_CHARS: Final = 40
MAX_PATH_CHARS: Final = 200

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,40}")


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` as it is (NUL, a surrogate), or ``None``."""
    index = text.find(NUL)
    if index >= 0:
        return f"contains a NUL character (U+0000) at index {index}, which PostgreSQL cannot store"
    found = _SURROGATE.search(text)
    if found:
        return (
            f"contains a lone surrogate (U+{ord(found.group()):04X}) at index {found.start()}, "
            "which is not valid Unicode text"
        )
    return None


def plain_text(text: str) -> bool:
    """Whether ``text`` (a ``str`` itself, not a subclass) has no :func:`text_problem`: the
    quick test of the fast paths (:func:`chimeway.inputs.json_problem`,
    :func:`chimeway.redaction.redact`)."""
    return NUL not in text and (text.isascii() or _SURROGATE.search(text) is None)


#: Ints whose compact JSON is at most :data:`PLAIN_INT_CHARS` characters: the fast paths
#: take these and leave larger ones to the exact walks.
PLAIN_INT: Final = 10**15
PLAIN_INT_CHARS: Final = 16
#: The longest compact JSON of a finite float (``-2.2250738585072014e-308``).
PLAIN_FLOAT_CHARS: Final = 24
#: Compact UTF-8 JSON bytes a character can take at most (``\u001f``).
PLAIN_CHAR_BYTES: Final = 6


def control_problem(text: str) -> str | None:
    """Why ``text`` is not printable identifier text (a C0/C1 control character, DEL), or
    ``None``."""
    found = _CONTROL.search(text)
    if found:
        return (
            f"contains the control character U+{ord(found.group()):04X} at index "
            f"{found.start()}; control characters are not allowed"
        )
    return None


def storable_text(text: str) -> tuple[str, list[str]]:
    """``text`` made storable, and what was changed: each NUL becomes the visible text
    ``\\u0000``, surrogate pairs are joined into the character they encode and lone
    surrogates become U+FFFD."""
    changes = []
    if NUL in text:
        text = text.replace(NUL, NUL_ESCAPE)
        changes.append("NUL escaped")
    surrogates = len(_SURROGATE.findall(text))
    if surrogates:
        before = text.count("\ufffd")
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        lone = text.count("\ufffd") - before
        if lone:
            changes.append("lone surrogate replaced with U+FFFD")
        if surrogates > lone:
            changes.append("surrogate pair joined")
    return text, changes


def json_size(leaf: str | int | float | bool | None) -> int:
    """Bytes of a storable JSON leaf as compact UTF-8 JSON (finite floats, no surrogates)."""
    if leaf is None or isinstance(leaf, bool):
        return 4 if leaf is None or leaf else 5
    return len(json.dumps(leaf, ensure_ascii=False).encode())


def int_problem(value: int) -> str | None:
    """Why an integer is not stored as JSON (too large), or ``None``."""
    if -MAX_INT < value < MAX_INT:
        return None
    return "integer has more than 1000 digits"


def float_problem(value: float) -> str | None:
    return None if math.isfinite(value) else f"{value!r} is not a finite number"


def preview(value: object) -> str:
    """A short, printable rendering of ``value`` for a message: short strings and small
    scalars as ``repr`` (escaped, at most :data:`PREVIEW_CHARS` characters), anything else by
    its type (and a string's length)."""
    if isinstance(value, str):
        if len(value) > PREVIEW_CHARS:
            return f"a str of {len(value)} characters starting {value[:PREVIEW_CHARS]!r}"
        return repr(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int) and -(10**PREVIEW_CHARS) < value < 10**PREVIEW_CHARS:
        return repr(int(value))
    if isinstance(value, float):
        return repr(float(value))
    return type(value).__name__


def child_path(path: str, key: str | int) -> str:
    """``path`` extended by a dict key or list index (``meta.items.0.id``); keys that are not
    short plain names are shown escaped (``meta.'a\\x00b'``)."""
    if isinstance(key, int) or _PLAIN_KEY.fullmatch(key):
        part = str(key)
    else:
        part = repr(key[:PREVIEW_CHARS]) + ("…" if len(key) > PREVIEW_CHARS else "")
    return f"{path}.{part}" if path else part


def short_path(path: str) -> str:
    """``path`` shortened to at most :data:`MAX_PATH_CHARS` characters, keeping both ends."""
    if len(path) <= MAX_PATH_CHARS:
        return path
    half = (MAX_PATH_CHARS - 1) // 2
    return f"{path[:half]}…{path[-half:]}"
