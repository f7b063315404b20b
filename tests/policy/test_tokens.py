"""Unsubscribe and inbox tokens: signed, expiring, scoped, rotatable (design §13, §14)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from chimeway.errors import ChimewayError, ConfigurationError, InvalidArgument
from chimeway.policy.errors import InvalidToken, TokenExpired
from chimeway.policy.preferences import PreferenceScope
from chimeway.policy.tokens import InboxClaims, TokenSigner, UnsubscribeClaims

OLD = "old-secret-0123456789abcdef0123456789"
NEW = b"new-secret-\x00\xff-0123456789abcdef0123456789"
OTHER = "some-other-app-secret-0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=90)

UNSUBSCRIBE = UnsubscribeClaims(
    "acme", "user-42", PreferenceScope("email", category="marketing"), LATER
)
INBOX = InboxClaims("acme", "user-42", LATER)
EXP = int(LATER.timestamp())


def signer(*secrets: str | bytes) -> TokenSigner:
    return TokenSigner(list(secrets))


@pytest.mark.parametrize(
    "scope",
    [
        PreferenceScope("email"),
        PreferenceScope(category="marketing"),
        PreferenceScope("sms", workflow="weekly-digest"),
        PreferenceScope(workflow="weekly-digest"),
    ],
)
def test_unsubscribe_round_trip(scope: PreferenceScope) -> None:
    claims = UnsubscribeClaims("acme", "user-42", scope, LATER)
    token = signer(NEW).sign_unsubscribe(claims)
    assert re.fullmatch(r"v1\.[A-Za-z0-9_.\-]+", token)
    assert signer(NEW).verify_unsubscribe(token, now=NOW) == claims


def test_inbox_round_trip() -> None:
    token = signer(NEW).sign_inbox(INBOX)
    assert re.fullmatch(r"v1\.[A-Za-z0-9_.\-]+", token)
    assert signer(NEW).verify_inbox(token, now=NOW) == INBOX


def test_expiry_is_kept_to_the_second_rounded_down_in_utc() -> None:
    expires = datetime(2026, 9, 1, 14, 0, 0, 999_999, tzinfo=UTC).astimezone(
        ZoneInfo("Asia/Kolkata")
    )
    token = signer(NEW).sign_inbox(InboxClaims("acme", "user-42", expires))
    claims = signer(NEW).verify_inbox(token, now=NOW)
    assert claims.expires_at == datetime(2026, 9, 1, 14, tzinfo=UTC)
    assert claims.expires_at.tzinfo is UTC


def test_a_token_expires_at_its_expiry_instant() -> None:
    token = signer(NEW).sign_inbox(INBOX)
    assert signer(NEW).verify_inbox(token, now=LATER - timedelta(seconds=1)) == INBOX
    with pytest.raises(TokenExpired, match="inbox token: expired at 2026-08-30T12:00:00"):
        signer(NEW).verify_inbox(token, now=LATER)
    unsubscribe = signer(NEW).sign_unsubscribe(UNSUBSCRIBE)
    with pytest.raises(TokenExpired, match="unsubscribe token: expired"):
        signer(NEW).verify_unsubscribe(unsubscribe, now=LATER + timedelta(days=1))


def test_expired_is_an_invalid_token_and_a_chimeway_error() -> None:
    assert issubclass(TokenExpired, InvalidToken)
    assert issubclass(InvalidToken, ChimewayError)


def test_forged_signature_is_rejected() -> None:
    forged = signer(OTHER).sign_unsubscribe(UNSUBSCRIBE)
    with pytest.raises(InvalidToken, match="signature does not match") as caught:
        signer(NEW).verify_unsubscribe(forged, now=NOW)
    assert not isinstance(caught.value, TokenExpired)


def test_a_forged_expired_token_is_invalid_not_expired() -> None:
    forged = signer(OTHER).sign_inbox(INBOX)
    with pytest.raises(InvalidToken, match="signature does not match"):
        signer(NEW).verify_inbox(forged, now=LATER + timedelta(days=1))


def _encode(claims: dict[str, object]) -> str:
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_tampered_claims_are_rejected() -> None:
    token = signer(NEW).sign_inbox(INBOX)
    version, _payload, signature = token.split(".")
    for claims in (
        {"t": "acme", "r": "user-43", "x": int(LATER.timestamp())},  # another recipient
        {"t": "evil", "r": "user-42", "x": int(LATER.timestamp())},  # another tenant
        {"t": "acme", "r": "user-42", "x": int(LATER.timestamp()) + 10**6},  # longer life
    ):
        tampered = f"{version}.{_encode(claims)}.{signature}"
        with pytest.raises(InvalidToken, match="signature does not match"):
            signer(NEW).verify_inbox(tampered, now=NOW)


def test_a_flipped_signature_character_is_rejected() -> None:
    token = signer(NEW).sign_unsubscribe(UNSUBSCRIBE)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        signer(NEW).verify_unsubscribe(flipped, now=NOW)


def test_rotation_signs_with_the_first_secret_and_verifies_with_all() -> None:
    old_token = signer(OLD).sign_unsubscribe(UNSUBSCRIBE)
    rotated = signer(NEW, OLD)
    assert rotated.verify_unsubscribe(old_token, now=NOW) == UNSUBSCRIBE
    new_token = rotated.sign_unsubscribe(UNSUBSCRIBE)
    assert signer(NEW).verify_unsubscribe(new_token, now=NOW) == UNSUBSCRIBE
    with pytest.raises(InvalidToken):
        signer(OLD).verify_unsubscribe(new_token, now=NOW)
    with pytest.raises(InvalidToken):  # the old secret was dropped
        signer(NEW).verify_unsubscribe(old_token, now=NOW)


def test_tokens_are_not_interchangeable_between_purposes() -> None:
    both = signer(NEW)
    unsubscribe = both.sign_unsubscribe(UNSUBSCRIBE)
    inbox = both.sign_inbox(INBOX)
    with pytest.raises(InvalidToken, match="inbox token: signature does not match"):
        both.verify_inbox(unsubscribe, now=NOW)
    with pytest.raises(InvalidToken, match="unsubscribe token: signature does not match"):
        both.verify_unsubscribe(inbox, now=NOW)


def _documented(secret: bytes, purpose: str) -> URLSafeSerializer:
    """The wire format, from the docs: itsdangerous, HMAC key derivation, SHA-256."""
    return URLSafeSerializer(
        [secret],
        salt=f"chimeway.{purpose}.v1",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )


def test_the_wire_format_is_the_documented_one() -> None:
    claims = {"t": "acme", "r": "user-42", "x": int(LATER.timestamp()), "c": "email"}
    token = "v1." + _documented(NEW, "unsubscribe").dumps(claims)
    assert signer(NEW).verify_unsubscribe(token, now=NOW) == UnsubscribeClaims(
        "acme", "user-42", PreferenceScope("email"), LATER
    )


@pytest.mark.parametrize(
    "claims",
    [
        [1, 2, 3],
        "acme",
        {"t": "acme", "r": "user-42", "c": "email"},
        {"t": "", "r": "user-42", "x": EXP, "c": "email"},
        {"t": "acme", "r": 42, "x": EXP, "c": "email"},
        {"t": "acme", "r": "user-42", "x": "soon", "c": "email"},
        {"t": "acme", "r": "user-42", "x": True, "c": "email"},
        {"t": "acme", "r": "user-42", "x": 10**30, "c": "email"},
        {"t": "acme", "r": "user-42", "x": EXP, "c": "email", "admin": True},
        {"t": "acme", "r": "user-42", "x": EXP, "c": ""},
        {"t": "acme", "r": "user-42", "x": EXP, "c": ["email"]},
        {"t": "acme", "r": "user-42", "x": EXP, "g": "a", "w": "b"},
        {"t": "acme", "r": "user-42", "x": EXP},  # unsubscribe without a scope
    ],
)
def test_signed_but_malformed_claims_are_invalid(claims: object) -> None:
    token = "v1." + _documented(NEW, "unsubscribe").dumps(claims)
    with pytest.raises(InvalidToken, match="unsubscribe token: malformed claims"):
        signer(NEW).verify_unsubscribe(token, now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.", "v2.abc.def", "abc.def", "v1.abc def", "v1.é.x", "v1." + "a" * 5000],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        signer(NEW).verify_inbox(token, now=NOW)
    with pytest.raises(InvalidToken):
        signer(NEW).verify_unsubscribe(token, now=NOW)


def _results(token: str) -> list[object]:
    """What each verification gives: its claims or its InvalidToken; anything else escapes."""
    tokens = signer(NEW, OLD)
    results: list[object] = []
    for verify in (tokens.verify_inbox, tokens.verify_unsubscribe):
        try:
            results.append(verify(token, now=NOW))
        except InvalidToken as exc:
            results.append(exc)
    return results


@given(st.text())
def test_arbitrary_text_raises_nothing_but_invalid_token(token: str) -> None:
    assert all(isinstance(result, InvalidToken) for result in _results(token))


@given(st.text(alphabet="ABCabc019_-.=", max_size=200))
def test_arbitrary_token_shaped_text_raises_nothing_but_invalid_token(body: str) -> None:
    assert all(isinstance(result, InvalidToken) for result in _results("v1." + body))


VALID = signer(NEW).sign_unsubscribe(UNSUBSCRIBE)


@given(st.integers(0, len(VALID) - 1), st.characters(codec="ascii"))
def test_no_one_character_change_yields_other_claims(position: int, char: str) -> None:
    changed = VALID[:position] + char + VALID[position + 1 :]
    try:
        claims = signer(NEW).verify_unsubscribe(changed, now=NOW)
    except InvalidToken:
        return
    # Unchanged, or the signature's last base64 character differing only in its unused bits.
    assert claims == UNSUBSCRIBE
    assert changed == VALID or position == len(VALID) - 1


@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_signed_payloads_raise_nothing_but_invalid_token(
    raw: bytes, compressed: bool
) -> None:
    # Even bytes that carry a good signature must not break claim parsing.
    payload = (b"." if compressed else b"") + base64.urlsafe_b64encode(raw).rstrip(b"=")
    for purpose, claims_type in (("inbox", InboxClaims), ("unsubscribe", UnsubscribeClaims)):
        signed = _documented(NEW, purpose).make_signer().sign(payload).decode("ascii")
        for result in _results("v1." + signed):
            assert isinstance(result, InvalidToken | claims_type)


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ([], "secrets: expected a non-empty list"),
        ("x" * 64, "secrets: expected a non-empty list"),
        ([b"short"], r"secrets\[0\]: must be at least 32 bytes, got 5"),
        ([NEW, "x" * 31], r"secrets\[1\]: must be at least 32 bytes, got 31"),
        (["é" * 15], r"secrets\[0\]: must be at least 32 bytes, got 30"),
        ([NEW, 42], r"secrets\[1\]: expected str or bytes"),
    ],
)
def test_secrets_are_checked(secrets: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        TokenSigner(secrets)  # type: ignore[arg-type]
    assert "x" * 31 not in str(caught.value)


def test_a_str_secret_counts_in_utf8_bytes() -> None:
    tokens = TokenSigner(["é" * 16])  # 32 bytes
    assert tokens.verify_inbox(tokens.sign_inbox(INBOX), now=NOW) == INBOX


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (InboxClaims("", "user-42", LATER), "tenant_id: expected a non-empty string"),
        (InboxClaims("acme", None, LATER), "recipient_id: expected a non-empty string"),  # type: ignore[arg-type]
        (InboxClaims("acme", "user-42", datetime(2026, 1, 1)), "expires_at: must be"),
    ],
)
def test_signing_checks_the_claims(claims: InboxClaims, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        signer(NEW).sign_inbox(claims)


def test_signing_an_unsubscribe_needs_a_scope() -> None:
    claims = UnsubscribeClaims("acme", "user-42", None, LATER)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="scope: expected a PreferenceScope"):
        signer(NEW).sign_unsubscribe(claims)


def test_now_must_be_aware() -> None:
    token = signer(NEW).sign_inbox(INBOX)
    with pytest.raises(InvalidArgument, match="now: must be a timezone-aware"):
        signer(NEW).verify_inbox(token, now=datetime(2026, 6, 1))
    with pytest.raises(InvalidArgument, match="now: must be a timezone-aware"):
        signer(NEW).verify_unsubscribe(token, now=datetime(2026, 6, 1))


def test_a_signed_payload_that_is_not_our_json_is_malformed() -> None:
    signed = _documented(NEW, "inbox").make_signer().sign(b".bm90LXpsaWI").decode("ascii")
    with pytest.raises(InvalidToken, match="inbox token: malformed claims"):
        signer(NEW).verify_inbox("v1." + signed, now=NOW)
