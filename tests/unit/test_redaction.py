"""Which keys are secrets (design §5), and what redaction keeps."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from chimeway.redaction import CIRCULAR, REDACTED, clean_text, folded_key, is_secret, redact


@pytest.mark.parametrize(
    "key",
    [
        # the keys the probe found unredacted
        "dbpassword",
        "refreshtoken",
        "clientsecret",
        "oauth_state",
        "x_mytoken_id",
        # one per word of the rule, in the spellings providers use
        "password",
        "Password",
        "db_password",
        "dbPassword",
        "passwd",
        "token",
        "Auth-Token",
        "access_token",
        "secret",
        "clientSecret",
        "client.secret",
        "api_key",
        "api-key",
        "apiKey",
        "API_KEY",
        "Api Key",
        "auth",
        "Authorization",
        "credentials",
        "aws_credential_id",
        "private_key",
        "privateKey",
        "Set-Cookie",
        "cookie",
        "X-Hub-Signature",
        "x-hub-signature-256",
        "signature",
        # contains, not equals: the safe side
        "author",
        "authored_at",
        "tokens_used_total",
        # separators are anything that is not a letter or a digit; width and case forms fold
        "pass/word",
        "pass\u200bword",
        "\uff34\uff2f\uff2b\uff25\uff2e",  # fullwidth TOKEN
        "SECRET",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key",
    [
        "user",
        "document",
        "api_version",
        "keyboard",
        "passage",
        "email",
        "id",
        "message_id",
        "status",
        "created_at",
        "sign",
        "key",
        "pass",
        "word",
        "",
    ],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret(key)


def test_folded_key_is_what_the_rule_reads() -> None:
    assert folded_key("X-Hub-Signature") == "xhubsignature"
    assert folded_key("dbPassword") == "dbpassword"
    assert folded_key("private_key.v2 (old)") == "privatekeyv2old"


def test_redact_replaces_secret_values_at_any_depth_and_keeps_the_rest() -> None:
    value = {
        "author": "Ada",
        "user": "ada",
        "nested": [{"apiKey": "k", "n": 1}, ({"Set-Cookie": "c", "ok": True},)],
        "level1": {"level2": {"level3": {"client_secret": {"whole": ["subtree"]}}}},
        "count": 3,
        "ratio": 0.5,
        "none": None,
    }
    before = copy.deepcopy(value)
    assert redact(value) == {
        "author": REDACTED,
        "user": "ada",
        "nested": [{"apiKey": REDACTED, "n": 1}, [{"Set-Cookie": REDACTED, "ok": True}]],
        "level1": {"level2": {"level3": {"client_secret": REDACTED}}},
        "count": 3,
        "ratio": 0.5,
        "none": None,
    }
    assert value == before  # a copy: the input is untouched


def test_redact_keeps_ordinary_data_equal() -> None:
    value = {"to": ["a@example.com"], "id": "m-1", "meta": {"attempts": 2, "ok": False}}
    assert redact(value) == value
    assert redact([1, "a", None]) == [1, "a", None]
    assert redact("text") == "text"


def test_redact_makes_values_storable() -> None:
    value = {
        "n": float("inf"),
        "t": "a\x00b",
        "s": "x\ud800",
        1: "one",
        "when": dt.date(2024, 1, 2),
    }
    assert redact(value) == {
        "n": None,
        "t": "a\\u0000b",
        "s": "x\ufffd",
        "1": "one",
        "when": "2024-01-02",
    }


def test_redact_cuts_circular_references_and_survives_any_depth() -> None:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    assert redact(loop) == {"name": "loop", "self": CIRCULAR}

    deep: list[Any] = []
    current = deep
    for _ in range(10_000):
        current.append([])
        current = current[0]
    result = redact({"meta": deep})
    depth = 0
    node = result["meta"]
    while node:
        node, depth = node[0], depth + 1
    assert depth == 10_000  # redact cuts nothing


def test_redact_is_idempotent_on_an_example() -> None:
    value = {"token": "t", "t": "a\x00b", "deep": [{"password": 1}], 2: float("nan")}
    once = redact(value)
    assert redact(once) == once


def test_clean_text_escapes_nul_and_replaces_lone_surrogates() -> None:
    assert clean_text("a\x00b") == "a\\u0000b"
    assert clean_text("\ud800x\udfff") == "\ufffdx\ufffd"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a surrogate pair is the character
    assert clean_text("plain") == "plain"
