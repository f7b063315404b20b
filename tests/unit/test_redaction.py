"""Which keys are secrets, and what redaction keeps."""

from __future__ import annotations

import pytest

from chimeway.redaction import REDACTED, is_secret, redact


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "db_password",
        "token",
        "Auth-Token",
        "access_token",
        "secret",
        "clientSecret",
        "api_key",
        "apiKey",
        "API_KEY",
        "auth",
        "Authorization",
        "credentials",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key",
    [
        "author",
        "authored_at",
        "tokens_used_total",
        "keyboard",
        "passage",
        "user",
        "document",
        "api_version",
    ],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret(key)


def test_redact_nested_values_and_unstorable_text() -> None:
    value = {"author": "Ada", "nested": [{"apiKey": "k", "n": float("inf")}], "t": "a\x00b"}
    assert redact(value) == {
        "author": "Ada",
        "nested": [{"apiKey": REDACTED, "n": None}],
        "t": "a\\u0000b",
    }
