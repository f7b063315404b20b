"""Provider answers are sanitised into something PostgreSQL can always store, and the notes
say what was changed (design §5)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from chimeway.errors import ConfigurationError
from chimeway.redaction import (
    CIRCULAR,
    CUT_SUFFIX,
    MAX_BYTES,
    REDACTED,
    TOO_DEEP,
    TOO_LARGE,
    TRUNCATED,
    sanitize_json,
    sanitize_text,
)


def compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def nested(depth: int, leaf: Any = "bottom") -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"x": value}
    return value  # type: ignore[no-any-return]


# -- sanitize_text ----------------------------------------------------------------------------


def test_text_without_problems_is_unchanged() -> None:
    assert sanitize_text("msg-123", 255) == ("msg-123", [])


def test_nul_in_a_provider_message_id_becomes_visible_text() -> None:
    text, notes = sanitize_text("id\x00x", 255, name="provider_message_id")
    assert text == "id\\u0000x"
    assert notes == ["NUL escaped in provider_message_id"]


def test_lone_surrogate_in_a_temporary_message_becomes_a_replacement_character() -> None:
    text, notes = sanitize_text("timeout \ud800 again \udfff", name="message")
    assert text == "timeout \ufffd again \ufffd"
    assert notes == ["lone surrogate replaced with U+FFFD in message"]
    text.encode()  # storable: valid UTF-8


def test_surrogate_pairs_are_joined_into_their_character() -> None:
    assert sanitize_text("\ud83d\ude00") == ("\U0001f600", ["surrogate pair joined in text"])


def test_long_text_is_cut_with_a_marker_within_max_chars() -> None:
    text, notes = sanitize_text("a" * 3000, 255, name="provider_message_id")
    assert len(text) == 255
    assert text.endswith(CUT_SUFFIX)
    assert text.startswith("a" * 200)
    assert notes == ["cut to 255 characters in provider_message_id"]


def test_escaping_that_makes_text_too_long_cuts_it_too() -> None:
    text, notes = sanitize_text("\x00" * 100, 50)
    assert len(text) == 50
    assert text.endswith(CUT_SUFFIX)
    assert notes == ["NUL escaped in text", "cut to 50 characters in text"]


def test_text_of_exactly_max_chars_is_kept() -> None:
    assert sanitize_text("b" * 50, 50) == ("b" * 50, [])


def test_not_a_string_is_converted_to_text() -> None:
    assert sanitize_text(12345, 255, name="id") == ("12345", ["int converted to text in id"])


def test_unprintable_objects_get_a_placeholder() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert sanitize_text(Broken()).value == "<unprintable Broken>"


def test_a_max_chars_shorter_than_the_marker_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="max_chars must be at least"):
        sanitize_text("x", 5)


# -- sanitize_json: what is changed -----------------------------------------------------------


def test_clean_json_is_kept_and_equal() -> None:
    meta = {"id": "m1", "accepted": ["a@example.com"], "cost": 0.01, "queued": True, "n": None}
    assert sanitize_json(meta) == (meta, [])


def test_secrets_are_redacted() -> None:
    value, notes = sanitize_json({"headers": {"Set-Cookie": "s=1", "X-Hub-Signature": "sha1=x"}})
    assert value == {"headers": {"Set-Cookie": REDACTED, "X-Hub-Signature": REDACTED}}
    assert notes == []


@pytest.mark.parametrize(
    ("meta", "expected", "note"),
    [
        ({"x": "a\x00"}, {"x": "a\\u0000"}, "NUL escaped in meta.x"),
        ({"a\x00b": 1}, {"a\\u0000b": 1}, "NUL escaped (in a key) in meta.'a\\\\u0000b'"),
        ({"x": "\udc00"}, {"x": "\ufffd"}, "lone surrogate replaced with U+FFFD in meta.x"),
        ({1: "a"}, {"1": "a"}, "non-string key converted to text in meta"),
        (
            {None: 1, True: 2},
            {"null": 1, "true": 2},
            "non-string key converted to text in meta and 1 more place",
        ),
        ({"n": float("nan")}, {"n": None}, "NaN or infinity replaced with null in meta.n"),
        ({"n": float("-inf")}, {"n": None}, "NaN or infinity replaced with null in meta.n"),
        ({"big": 10**1000}, {"big": TOO_LARGE}, "integer too large replaced in meta.big"),
        ({"raw": b"ok\xff"}, {"raw": "ok\ufffd"}, "bytes decoded as UTF-8 in meta.raw"),
        (
            {"at": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)},
            {"at": "2024-05-01T12:00:00+00:00"},
            "datetime converted to text in meta.at",
        ),
        ({"tags": frozenset(["a"])}, {"tags": ["a"]}, "set converted to a list in meta.tags"),
        ({"o": object}, {"o": "<class 'object'>"}, "type converted to text in meta.o"),
    ],
)
def test_each_change_is_made_and_noted(meta: Any, expected: Any, note: str) -> None:
    assert sanitize_json(meta) == (expected, [note])


def test_tuples_become_lists_without_a_note() -> None:
    assert sanitize_json({"pair": (1, 2)}) == ({"pair": [1, 2]}, [])


def test_a_note_counts_the_other_places_of_the_same_change() -> None:
    _, notes = sanitize_json({"a": "\x00", "b": ["\x00", "\x00"], "c": "\x00"})
    assert notes == ["NUL escaped in meta.a and 3 more places"]


def test_paths_start_at_the_given_name() -> None:
    _, notes = sanitize_json({"items": [{"id": "\x00"}]}, name="response")
    assert notes == ["NUL escaped in response.items.0.id"]


def test_a_root_that_is_not_an_object_is_sanitised_too() -> None:
    assert sanitize_json("a\x00") == ("a\\u0000", ["NUL escaped in meta"])
    assert sanitize_json([float("inf")]) == (
        [None],
        ["NaN or infinity replaced with null in meta.0"],
    )


def test_a_circular_reference_is_cut() -> None:
    meta: dict[str, Any] = {"a": 1}
    meta["again"] = meta
    assert sanitize_json(meta) == (
        {"a": 1, "again": CIRCULAR},
        ["circular reference cut in meta.again"],
    )


def test_shared_but_not_circular_values_are_kept() -> None:
    shared = {"k": 1}
    assert sanitize_json({"a": shared, "b": [shared, shared]}) == (
        {"a": {"k": 1}, "b": [{"k": 1}, {"k": 1}]},
        [],
    )


def test_a_mapping_that_fails_while_read_is_cut_short() -> None:
    class Flaky(Mapping[str, int]):
        def __getitem__(self, key: str) -> int:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(["a", "b"])

        def __len__(self) -> int:
            return 2

    value, notes = sanitize_json({"m": Flaky(), "after": 1})
    assert value == {"m": {}, "after": 1}
    assert notes == ["unreadable dict cut short in meta.m"]


# -- sanitize_json: nesting and size ----------------------------------------------------------


def test_sent_meta_nested_10000_deep_is_cut_at_max_depth() -> None:
    value, notes = sanitize_json(nested(10_000), max_depth=32)
    assert value == nested(32, TOO_DEEP)  # the top object is depth 1, the 33rd is cut
    assert notes == ["nesting cut at depth 32 in meta" + ".x" * 32]
    json.dumps(value)


def test_nesting_of_exactly_max_depth_is_kept() -> None:
    assert sanitize_json(nested(32), max_depth=32) == (nested(32), [])


def test_long_paths_in_notes_are_shortened() -> None:
    _, notes = sanitize_json(nested(200, "\x00"), max_depth=300)
    assert len(notes) == 1
    assert notes[0].startswith("NUL escaped in meta.x.x")
    assert "…" in notes[0]
    assert len(notes[0]) < 250


def test_a_long_string_is_cut_to_fit_exactly_within_max_bytes() -> None:
    value, notes = sanitize_json({"body": "é" * 100_000}, max_bytes=1000)
    assert compact_size(value) <= 1000
    assert compact_size(value) > 990  # the prefix kept is as long as fits
    assert value["body"].endswith(CUT_SUFFIX)
    assert notes == ["truncated at 1000 bytes in meta.body"]


def test_items_past_the_limit_are_dropped_with_a_marker() -> None:
    value, notes = sanitize_json(list(range(10_000)), max_bytes=200)
    assert compact_size(value) <= 200
    assert value[-1] == TRUNCATED
    assert value[:-1] == list(range(len(value) - 1))  # a prefix, in order
    assert notes[0].startswith("truncated at 200 bytes in meta.")


def test_keys_past_the_limit_are_dropped_with_a_marker() -> None:
    value, _ = sanitize_json({f"key{i}": i for i in range(1000)}, max_bytes=200)
    assert compact_size(value) <= 200
    assert value[TRUNCATED] == TRUNCATED
    assert value["key0"] == 0


def test_a_huge_key_is_dropped_without_being_cleaned() -> None:
    value, notes = sanitize_json({"k" * 10_000_000: 1}, max_bytes=100)
    assert value == {TRUNCATED: TRUNCATED}
    assert notes == ["truncated at 100 bytes in meta"]


def test_the_size_is_exact_when_nothing_is_cut() -> None:
    meta = {"a": [1, 2.5, None, True, False, "é\n"], "b": {}, "c": []}
    size = compact_size(meta)
    assert sanitize_json(meta, max_bytes=size + 32).value == meta


def test_default_bound_holds() -> None:
    value, _ = sanitize_json({"x": ["y" * 1000] * 1000})
    assert compact_size(value) <= MAX_BYTES


def test_work_is_bounded_by_max_bytes_even_for_exponentially_shared_structures() -> None:
    bomb: list[Any] = []
    for _ in range(60):
        bomb = [bomb, bomb]  # 2**60 paths through 60 lists
    started = time.monotonic()
    value, notes = sanitize_json(bomb, max_depth=64, max_bytes=10_000)
    assert time.monotonic() - started < 10
    assert compact_size(value) <= 10_000
    assert notes[0].startswith("truncated at 10000 bytes")


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_depth": 0}, "max_depth must be at least 1"), ({"max_bytes": 10}, "max_bytes must")],
)
def test_limits_too_small_are_configuration_errors(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        sanitize_json({}, **options)


def test_a_redacted_value_is_never_cut_like_text() -> None:
    """Found by the property test: at the byte limit the marker itself was cut."""
    value = {None: [None, None, -(10**17), -100000032, None], "password": None, "": {}}
    result, _ = sanitize_json(value, max_depth=2, max_bytes=111)
    assert result["password"] in ("[redacted]", "[truncated]")
