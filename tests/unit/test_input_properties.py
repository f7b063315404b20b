"""Properties of the input checks and the sanitiser, over arbitrary JSON-like values: any text
(NUL, lone surrogates, control characters), non-string keys, NaN, huge integers, objects JSON
does not know, any depth, and self-references."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chimeway.content import find_json_problem
from chimeway.errors import InvalidArgument, InvalidTrigger
from chimeway.inputs import MAX_DEPTH, _Check, identifier, json_object, json_problem, limit
from chimeway.redaction import (
    REDACTED,
    TRUNCATED,
    _Walk,
    is_secret,
    redact,
    sanitize_json,
    sanitize_text,
)

# No example database on disk, and no deadline on a shared, slow machine.
PROPERTY = settings(database=None, deadline=None)

SPECIAL = st.sampled_from(
    ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\x7f", "\x85", "\n", " ", "é", "😀"]
)
CHARS = st.characters(exclude_categories=()) | SPECIAL  # surrogates included
TEXT = st.text(CHARS, max_size=12)
SECRET_KEYS = st.sampled_from(["password", "api-key", "Set-Cookie", "author", "x_mytoken_id"])
KEYS = TEXT | SECRET_KEYS | st.integers() | st.none() | st.booleans() | st.floats()
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**1000, -(10**1000), 2**64])
    | st.floats()
    | TEXT
)
OTHERS = st.sampled_from([b"raw\xff\x00", dt.date(2024, 1, 2), object(), frozenset({1}), {2}])


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(KEYS, children, max_size=5)
    )


JSONISH = st.recursive(SCALARS | OTHERS, _containers, max_leaves=25)


@st.composite
def _deep(draw: st.DrawFn, max_depth: int = 3000) -> Any:
    """A value wrapped in up to ``max_depth`` lists and dicts."""
    value = draw(JSONISH)
    for level in range(draw(st.integers(0, max_depth))):
        value = [value] if level % 3 else {"k": value}
    return value


@st.composite
def _cyclic(draw: st.DrawFn) -> Any:
    """A dict that holds itself somewhere below."""
    value: dict[Any, Any] = draw(st.dictionaries(KEYS, JSONISH, max_size=3))
    value[draw(TEXT)] = [value] if draw(st.booleans()) else value
    return value


VALUES = JSONISH | _deep() | _cyclic()
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)

# Data the quick reads take (mostly): plain types, text keys, nesting around the limit, and
# the odd subclass or problem among them, which sends the whole value to the exact walk.
PLAIN_TEXT = st.text(st.characters(exclude_categories=("Cs",)) | st.sampled_from(' \n"é😀'))
PLAIN_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**16), 10**16)
    | st.floats(allow_nan=False, allow_infinity=False)
    | PLAIN_TEXT
)
PLAIN = st.recursive(
    PLAIN_SCALARS | st.sampled_from([True, 2**64, math.nan, "\x00", "\udc00", (1, "a")]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(PLAIN_TEXT | SECRET_KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def _nested(draw: st.DrawFn) -> Any:
    """Plain data wrapped in 25 to 40 lists and dicts: around :data:`MAX_DEPTH`."""
    value = draw(PLAIN)
    for level in range(draw(st.integers(25, 40))):
        value = [value] if level % 2 else {"k": value}
    return value


def _nodes(value: Any) -> Iterator[tuple[Any, int]]:
    """Every key and value in ``value`` with its depth (containers count), iteratively."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if isinstance(node, dict):
            stack.extend((key, depth + 1) for key in node)
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((child, depth + 1) for child in node)


def _assert_storable(value: Any, max_depth: int, *, tuples: bool = False) -> None:
    """What PostgreSQL jsonb takes: JSON types only (tuples too, when json.dumps is left to
    turn them into lists), finite numbers, text without NUL or surrogates, all keys strings,
    within the depth."""
    for node, depth in _nodes(value):
        if isinstance(node, dict | list) or (tuples and isinstance(node, tuple)):
            assert depth < max_depth
            if isinstance(node, dict):
                assert all(isinstance(key, str) for key in node)
        elif isinstance(node, str):
            assert "\x00" not in node
            node.encode("utf-8")  # raises on any surrogate
        elif isinstance(node, float):
            assert math.isfinite(node)
        else:
            assert node is None or isinstance(node, bool | int)
    json.dumps(value, allow_nan=False)


def _compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _acceptable(value: Any, depth: int = 1) -> bool:
    """The JSON object rule restated plainly (recursively: for shallow values only)."""
    if isinstance(value, dict | list | tuple):
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, dict):
            if not all(isinstance(key, str) and _acceptable(key) for key in value):
                return False
            value = list(value.values())
        return all(_acceptable(child, depth + 1) for child in value)
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 10**1000
    if isinstance(value, float):
        return math.isfinite(value)
    return False


# -- json_object ------------------------------------------------------------------------------


@PROPERTY
@given(st.one_of(OBJECTS, VALUES))
def test_json_object_returns_or_raises_the_given_error_only(value: Any) -> None:
    try:
        result = json_object("params", value, InvalidTrigger)
    except InvalidTrigger as error:
        assert error.message.startswith("params must be ")
        assert len(error.message) < 600
        return
    assert isinstance(result, dict)
    _assert_storable(result, MAX_DEPTH, tuples=True)


@PROPERTY
@given(st.dictionaries(KEYS, JSONISH, max_size=5))
def test_json_object_accepts_exactly_what_the_rule_allows(value: dict[Any, Any]) -> None:
    try:
        json_object("params", value, InvalidTrigger)
    except InvalidTrigger:
        accepted = False
    else:
        accepted = True
    assert accepted == _acceptable(value)


@PROPERTY
@given(VALUES)
def test_find_json_problem_always_answers(value: Any) -> None:
    problem = find_json_problem(value)
    assert problem is None or isinstance(problem, str)


# -- sanitize_json / sanitize_text ------------------------------------------------------------


@PROPERTY
@given(VALUES, st.integers(1, 40), st.integers(64, 5000))
def test_sanitize_json_is_always_storable_and_bounded(
    value: Any, max_depth: int, max_bytes: int
) -> None:
    result, notes = sanitize_json(value, max_depth=max_depth, max_bytes=max_bytes)
    _assert_storable(result, max_depth)
    assert _compact_size(result) <= max_bytes
    for note in notes:
        _assert_storable(note, 1)
        assert len(note) < 300
    for node, _ in _nodes(result):
        if isinstance(node, dict):
            assert all(node[key] in (REDACTED, TRUNCATED) for key in node if is_secret(key))


@PROPERTY
@given(st.one_of(TEXT, st.text(CHARS, min_size=200, max_size=400), SCALARS, OTHERS))
def test_sanitize_text_is_always_storable_and_bounded(text: Any) -> None:
    result, notes = sanitize_text(text, 100)
    assert len(result) <= 100
    _assert_storable(result, 1)
    assert all(isinstance(note, str) for note in notes)


def _depth(value: Any) -> int:
    """Containers nested in ``value`` (a plain, acyclic one)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max(map(_depth, value), default=0)
    return 0


# Where the quick read's size bound is tightest: numbers, and keys that must be escaped.
TIGHT = st.lists(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**16), 10**16) | st.none(),
    min_size=1,
    max_size=20,
) | st.dictionaries(st.text(st.sampled_from('"\\\n\x01\x1fa\x7f'), max_size=6), st.booleans())
TIGHT |= st.lists(
    st.sampled_from([None, True, False, 10**15 - 1, -(10**15) + 1, -2.2250738585072014e-308]),
    min_size=1,
    max_size=20,
)


@PROPERTY
@given(PLAIN | _nested() | TIGHT, st.integers(-1, 1), st.integers(-3, 3) | st.none())
def test_json_problem_quick_read_agrees_with_the_exact_walk_at_the_limits(
    value: Any, depth_shift: int, bytes_shift: int | None
) -> None:
    # The limits are drawn around the value's own depth and size: off by one either way.
    max_depth = max(1, min(MAX_DEPTH, _depth(value) + depth_shift))
    max_bytes = None
    if bytes_shift is not None:
        try:
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        except (ValueError, UnicodeEncodeError):
            size = 100
        max_bytes = max(1, size + bytes_shift)
    # The quick read only ever says "no problem"; the walk must say the same there.
    exact = _Check("p", max_depth, max_bytes).run(value)
    assert json_problem(value, name="p", max_depth=max_depth, max_bytes=max_bytes) == exact


@PROPERTY
@given(VALUES, st.integers(1, 40), st.integers(2, 300) | st.none())
def test_json_problem_quick_read_agrees_with_the_exact_walk(
    value: Any, max_depth: int, max_bytes: int | None
) -> None:
    exact = _Check("p", max_depth, max_bytes).run(value)
    assert json_problem(value, name="p", max_depth=max_depth, max_bytes=max_bytes) == exact


# -- redact -----------------------------------------------------------------------------------


@PROPERTY
@given(PLAIN | _nested() | JSONISH | _deep(max_depth=300) | _cyclic())
def test_redact_quick_copy_agrees_with_the_exact_walk(value: Any) -> None:
    exact = _Walk(max_depth=None, max_bytes=None, name="", notes=False).run(value)
    assert redact(value) == exact


@PROPERTY
@given(JSONISH | _deep(max_depth=300) | _cyclic())
def test_redact_is_idempotent(value: Any) -> None:
    once = redact(value)
    assert redact(once) == once


@PROPERTY
@given(VALUES)
def test_redact_leaves_no_secret_value(value: Any) -> None:
    for node, _ in _nodes(redact(value)):
        if isinstance(node, dict):
            assert all(node[key] in (REDACTED, TRUNCATED) for key in node if is_secret(key))


# -- identifier and limit ---------------------------------------------------------------------


def _identifier_allowed(text: str, max_chars: int) -> bool:
    def printable(char: str) -> bool:
        code = ord(char)
        return not (code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF)

    return bool(text.strip()) and len(text) <= max_chars and all(map(printable, text))


@PROPERTY
@given(st.text(CHARS, max_size=10) | st.text(st.sampled_from(" a\t"), max_size=10))
def test_identifier_accepts_exactly_the_strings_the_rule_allows(text: str) -> None:
    try:
        accepted = identifier("tenant_id", text, InvalidTrigger, max_chars=8) == text
    except InvalidTrigger as error:
        assert error.message.startswith("tenant_id ")
        accepted = False
    assert accepted == _identifier_allowed(text, 8)


@PROPERTY
@given(st.one_of(st.integers(), st.none(), st.binary(), st.floats(), st.lists(TEXT)))
def test_identifier_rejects_anything_but_a_string(value: Any) -> None:
    try:
        identifier("tenant_id", value, InvalidTrigger)
    except InvalidTrigger as error:
        assert error.message.startswith("tenant_id must be a non-blank string, got ")
    else:
        raise AssertionError("accepted a value that is not a string")


@PROPERTY
@given(st.one_of(st.integers(), st.booleans(), st.floats(), TEXT, st.none()))
def test_limit_accepts_exactly_ints_in_range(value: Any) -> None:
    try:
        accepted = limit("limit", value, InvalidArgument, maximum=500) == value
    except InvalidArgument:
        accepted = False
    in_range = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 500
    assert accepted == in_range
