"""The checks of caller input: each rule, its message, and the caller's error type."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from chimeway.errors import InvalidArgument, InvalidSignal, InvalidTrigger
from chimeway.inputs import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_IDENTIFIER_CHARS,
    identifier,
    identifier_problem,
    json_object,
    json_problem,
    limit,
    non_blank,
)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


# -- identifier -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["org1", "a", "user@example.com", " padded ", "ünïcødé", "😀", "x" * 255]
)
def test_identifier_accepts_printable_text(value: str) -> None:
    assert identifier("tenant_id", value, InvalidTrigger) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "tenant_id must be a non-blank string, got ''"),
        ("  \t", "tenant_id must be a non-blank string, got '  \\t'"),
        (None, "tenant_id must be a non-blank string, got None"),
        (5, "tenant_id must be a non-blank string, got 5"),
        (b"org1", "tenant_id must be a non-blank string, got bytes"),
        ("x" * 3000, "tenant_id is 3000 characters long; at most 255 allowed"),
        (
            "org\x00",
            "tenant_id contains the control character U+0000 at index 3; "
            "control characters are not allowed",
        ),
        ("a\nb", "tenant_id contains the control character U+000A at index 1"),
        ("a\x7f", "tenant_id contains the control character U+007F at index 1"),
        ("a\x85", "tenant_id contains the control character U+0085 at index 1"),
        (
            "a\ud800",
            "tenant_id contains a lone surrogate (U+D800) at index 1, "
            "which is not valid Unicode text",
        ),
    ],
)
def test_identifier_rejects_with_a_message_naming_the_field_and_the_rule(
    value: Any, message: str
) -> None:
    with pytest.raises(InvalidTrigger) as info:
        identifier("tenant_id", value, InvalidTrigger)
    assert info.value.message.startswith(message)


def test_identifier_raises_the_callers_error_type() -> None:
    with pytest.raises(InvalidSignal, match="actor_id"):
        identifier("actor_id", "", InvalidSignal)


def test_identifier_max_chars_is_the_callers() -> None:
    assert MAX_IDENTIFIER_CHARS == 255
    assert identifier("event_name", "e" * 200, InvalidSignal, max_chars=200) == "e" * 200
    with pytest.raises(InvalidSignal, match="event_name is 201 characters long; at most 200"):
        identifier("event_name", "e" * 201, InvalidSignal, max_chars=200)


def test_identifier_messages_never_echo_a_long_value() -> None:
    with pytest.raises(InvalidTrigger) as info:
        identifier("idempotency_key", "\x00" * 100 + "k" * 10_000, InvalidTrigger)
    assert len(info.value.message) < 100
    with pytest.raises(InvalidTrigger) as info:
        identifier("idempotency_key", " " * 10_000, InvalidTrigger)
    assert len(info.value.message) < 200
    assert "\x00" not in info.value.message


def test_identifier_problem_names_the_rule_or_none() -> None:
    assert identifier_problem("ok") is None
    assert identifier_problem(" ") == "must not be blank"
    assert identifier_problem("abc", 2) == "is 3 characters long; at most 2 allowed"
    assert identifier_problem("a\tb") == (
        "contains the control character U+0009 at index 1; control characters are not allowed"
    )


# -- non_blank --------------------------------------------------------------------------------


def test_non_blank_accepts_free_text_with_newlines() -> None:
    assert non_blank("reason", "line 1\nline 2", InvalidArgument) == "line 1\nline 2"


@pytest.mark.parametrize(
    ("value", "options", "message"),
    [
        ("", {}, "reason must be a non-blank string, got ''"),
        (1.5, {}, "reason must be a non-blank string, got 1.5"),
        ("a\x00", {}, "reason contains a NUL character (U+0000) at index 1"),
        ("a\udfff", {}, "reason contains a lone surrogate (U+DFFF) at index 1"),
        ("abcd", {"max_chars": 3}, "reason is 4 characters long; at most 3 allowed"),
    ],
)
def test_non_blank_rejects(value: Any, options: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        non_blank("reason", value, InvalidArgument, **options)
    assert info.value.message.startswith(message)


# -- limit ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 50, 1000])
def test_limit_accepts_ints_in_range(value: int) -> None:
    assert limit("limit", value, InvalidArgument, maximum=1000) == value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-1, "-1"),
        (1001, "1001"),
        (10**20, "100000000000000000000"),
        pytest.param(10**5000, "int", id="5001 digits"),
        (True, "True"),
        (2.0, "2.0"),
        ("5", "'5'"),
        (None, "None"),
    ],
)
def test_limit_rejects(value: Any, shown: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        limit("limit", value, InvalidArgument, maximum=1000)
    assert info.value.message == f"limit must be an int from 1 to 1000, got {shown}"


# -- json_object ------------------------------------------------------------------------------


def test_json_object_returns_a_dict_copy() -> None:
    params = {"users": ["u1"], "n": 1, "f": 0.5, "ok": True, "none": None, "t": (1, "a")}
    result = json_object("params", params, InvalidTrigger)
    assert result == params
    assert result is not params
    assert json_object("params", MappingProxyType({"a": 1}), InvalidTrigger) == {"a": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["not", "an", "object"], "payload must be a JSON object, got list"),
        (None, "payload must be a JSON object, got NoneType"),
        (
            {"when": object()},
            "payload must be JSON-serializable: payload.when: object is not JSON-serializable",
        ),
        ({1: "a"}, "payload must be JSON-serializable: payload: key 1 is not a string"),
        (
            {"a": {"b": [1, float("nan")]}},
            "payload must be JSON-serializable: payload.a.b.1: nan is not a finite number",
        ),
        (
            {"note": "a\x00b"},
            "payload must be JSON-serializable: payload.note: contains a NUL character (U+0000) "
            "at index 1, which PostgreSQL cannot store",
        ),
        (
            {"a\x00": 1},
            "payload must be JSON-serializable: payload.'a\\x00': key contains a NUL character",
        ),
        (
            {"list": ["\ud800"]},
            "payload must be JSON-serializable: payload.list.0: contains a lone surrogate (U+D800)",
        ),
        (
            {"\udc00": 1},
            "payload must be JSON-serializable: payload.'\\udc00': key contains a lone surrogate",
        ),
        (
            {"n": 10**1000},
            "payload must be JSON-serializable: payload.n: integer has more than 1000 digits",
        ),
        (
            {"nested": MappingProxyType({})},
            "payload must be JSON-serializable: payload.nested: mappingproxy is not JSON",
        ),
        (
            {"tags": {"a"}},
            "payload must be JSON-serializable: payload.tags: set is not JSON-serializable",
        ),
    ],
)
def test_json_object_rejects_with_the_path(value: Any, message: str) -> None:
    with pytest.raises(InvalidSignal) as info:
        json_object("payload", value, InvalidSignal)
    assert info.value.message.startswith(message)


def test_json_object_rejects_circular_references() -> None:
    loop: dict[str, Any] = {}
    loop["a"] = [loop]
    with pytest.raises(InvalidTrigger, match=r"params\.a\.0: circular reference"):
        json_object("params", loop, InvalidTrigger)


def test_json_object_bounds_depth() -> None:
    assert MAX_DEPTH == 32
    assert json_object("params", nested(32), InvalidTrigger) == nested(32)
    with pytest.raises(InvalidTrigger, match=r"nested deeper than 32 levels") as info:
        json_object("params", nested(33), InvalidTrigger)
    assert info.value.message.startswith("params must be JSON-serializable: params.x.x.x")


def test_json_object_rejects_nesting_5000_deep_without_recursion_errors() -> None:
    with pytest.raises(InvalidTrigger, match="nested deeper than 32 levels"):
        json_object("params", nested(5000), InvalidTrigger)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidTrigger, match="nested deeper than 4 levels"):
        json_object("params", {"d": deep}, InvalidTrigger, max_depth=4)


def test_json_object_bounds_the_compact_utf8_size_exactly() -> None:
    assert MAX_BYTES == 1_000_000
    params = {"a": [1, 2.5, None, True, False, 'é\n"x'], "b": {}, "ü": "ß" * 10}
    size = compact_size(params)
    assert json_object("params", params, InvalidTrigger, max_bytes=size) == params
    with pytest.raises(InvalidTrigger) as info:
        json_object("params", params, InvalidTrigger, max_bytes=size - 1)
    assert info.value.message == (
        f"params must be JSON-serializable: params: larger than {size - 1} bytes as compact JSON"
    )


def test_json_object_rejects_a_huge_string_without_encoding_it() -> None:
    with pytest.raises(InvalidTrigger, match="larger than 1000000 bytes"):
        json_object("params", {"blob": "x" * 5_000_000}, InvalidTrigger)


def test_json_object_rejects_many_small_values_past_the_size() -> None:
    with pytest.raises(InvalidTrigger, match="larger than 1000 bytes"):
        json_object("params", {"ids": list(range(10_000))}, InvalidTrigger, max_bytes=1000)


def test_json_object_message_never_echoes_a_long_key() -> None:
    with pytest.raises(InvalidTrigger) as info:
        json_object("params", {"k" * 10_000 + "\x00": 1}, InvalidTrigger)
    assert len(info.value.message) < 400


# -- json_problem -----------------------------------------------------------------------------


def test_json_problem_without_a_name_starts_at_root() -> None:
    assert json_problem({"ok": [1]}) is None
    assert json_problem({1: 2}) == "(root): key 1 is not a string"
    assert json_problem("a\x00") == (
        "(root): contains a NUL character (U+0000) at index 1, which PostgreSQL cannot store"
    )
    assert json_problem([[[]]], max_depth=2) == "0.0: nested deeper than 2 levels"
    assert json_problem(nested(100), max_depth=None) is None
