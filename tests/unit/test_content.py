"""Channel content schemas (no database needed)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from chimeway.content import BUILTIN_SCHEMAS, ContentSchemas, find_json_problem
from chimeway.errors import ChimewayError, ConfigurationError, InvalidContent

IN_APP = {
    "headline": "Ada mentioned you",
    "body": "in #general",
    "primary_action": {"label": "Open", "url": "https://example.com/m/1"},
}
EMAIL = {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"}
SMS = {"text_body": "Hi"}
PUSH = {"title": "Hi", "body": "there"}
CHAT = {"text": "Hi"}
VALID = {"in_app": IN_APP, "email": EMAIL, "sms": SMS, "push": PUSH, "chat": CHAT}


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    retries: int = 3

    @field_validator("url")
    @classmethod
    def https_only(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must use https")
        return value


@pytest.fixture
def schemas() -> ContentSchemas:
    return ContentSchemas.default()


def test_default_registry_has_the_builtin_channels(schemas: ContentSchemas) -> None:
    assert schemas.channels == {"in_app", "email", "sms", "push", "chat"}
    assert all(schemas.get(channel) is model for channel, model in BUILTIN_SCHEMAS.items())
    assert "in_app" in schemas
    assert "webhook" not in schemas


@pytest.mark.parametrize("channel", sorted(VALID))
def test_valid_builtin_content_is_returned_as_json(schemas: ContentSchemas, channel: str) -> None:
    content = VALID[channel]
    result = schemas.validate(channel, content)
    assert result == content
    assert result is not content


def test_optional_fields_are_kept_when_set_and_dropped_when_none(schemas: ContentSchemas) -> None:
    data = {"thread": 7, "nested": {"keep": None}}
    assert schemas.validate("push", {**PUSH, "data": data}) == {**PUSH, "data": data}
    assert schemas.validate("push", {**PUSH, "data": None}) == PUSH
    assert schemas.validate("chat", {**CHAT, "rich_payload": {"blocks": []}}) == {
        **CHAT,
        "rich_payload": {"blocks": []},
    }
    assert schemas.validate("chat", {**CHAT, "rich_payload": None}) == CHAT


@pytest.mark.parametrize(
    ("channel", "content", "fields"),
    [
        (
            "in_app",
            {"headline": "h", "body": "b", "primary_action": {"label": "l"}},
            ["primary_action.url: Field required"],
        ),
        ("in_app", {**IN_APP, "headline": "  "}, ["headline: must not be blank"]),
        ("in_app", {**IN_APP, "primary_action": "https://x"}, ["primary_action:"]),
        (
            "in_app",
            {**IN_APP, "primary_action": {"label": "", "url": "u", "target": "_blank"}},
            ["primary_action.label: must not be blank", "primary_action.target: Extra inputs"],
        ),
        ("in_app", {"body": "b", "primary_action": IN_APP["primary_action"]}, ["headline:"]),
        ("email", {**EMAIL, "subjet": "Hi"}, ["subjet: Extra inputs are not permitted"]),
        ("email", {"subject": "Hi"}, ["html_body: Field required", "text_body: Field required"]),
        ("email", {**EMAIL, "subject": 42}, ["subject: Input should be a valid string"]),
        ("email", {**EMAIL, "text_body": b"bytes"}, ["text_body: Input should be a valid string"]),
        ("sms", {"text_body": "\n\t"}, ["text_body: must not be blank"]),
        ("sms", {}, ["text_body: Field required"]),
        ("push", {"title": "t"}, ["body: Field required"]),
        ("push", {**PUSH, "data": ["a"]}, ["data:"]),
        ("push", {**PUSH, "data": {1: "a"}}, ["data.1.[key]:"]),
        ("chat", {"text": ""}, ["text: must not be blank"]),
        ("chat", {**CHAT, "rich_payload": "x"}, ["rich_payload:"]),
        ("chat", {**CHAT, "blocks": []}, ["blocks: Extra inputs are not permitted"]),
    ],
)
def test_invalid_builtin_content_names_channel_and_fields(
    schemas: ContentSchemas, channel: str, content: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(InvalidContent) as info:
        schemas.validate(channel, content)
    message = info.value.message
    assert message.startswith(f"{channel} content is invalid: ")
    assert "\n" not in message
    for field in fields:
        assert field in message


def test_the_example_message_from_the_brief(schemas: ContentSchemas) -> None:
    content = {"headline": "h", "body": "b", "primary_action": {"label": "l"}}
    with pytest.raises(InvalidContent) as info:
        schemas.validate("in_app", content)
    assert info.value.message == "in_app content is invalid: primary_action.url: Field required"
    assert isinstance(info.value, ChimewayError)


@pytest.mark.parametrize(
    ("content", "type_name"),
    [(None, "NoneType"), ("text", "str"), ([IN_APP], "list"), (42, "int"), ((), "tuple")],
)
@pytest.mark.parametrize("channel", ["in_app", "webhook"])
def test_non_dict_content_names_channel_and_type(
    schemas: ContentSchemas, channel: str, content: object, type_name: str
) -> None:
    with pytest.raises(InvalidContent) as info:
        schemas.validate(channel, content)
    assert info.value.message == (
        f"{channel} content must be a JSON object (dict), got {type_name}"
    )


def test_unregistered_channel_returns_a_json_object_unchanged(schemas: ContentSchemas) -> None:
    content = {"anything": [1, 2.5, True, None, {"nested": "ok"}], "tuple": ("a", "b")}
    assert schemas.validate("webhook", content) is content
    assert schemas.validate("webhook", {}) == {}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({1: "a"}, "(root): key 1 is not a string"),
        ({"meta": {"when": dt.date(2024, 1, 1)}}, "meta.when: date is not JSON-serializable"),
        ({"items": [1, {2, 3}]}, "items.1: set is not JSON-serializable"),
        ({"score": math.nan}, "score: nan is not a finite number"),
        ({"score": math.inf}, "score: inf is not a finite number"),
        ({"raw": b"x"}, "raw: bytes is not JSON-serializable"),
        (
            {"body": "a\x00"},
            "body: contains a NUL character (U+0000) at index 1, which PostgreSQL cannot store",
        ),
        (
            {"x": {"a\x00": 1}},
            "x.'a\\x00': key contains a NUL character (U+0000) at index 1, "
            "which PostgreSQL cannot store",
        ),
        (
            {"items": ["ok", "\ud800"]},
            "items.1: contains a lone surrogate (U+D800) at index 0, "
            "which is not valid Unicode text",
        ),
        (
            {"\udfff": 1},
            "'\\udfff': key contains a lone surrogate (U+DFFF) at index 0, "
            "which is not valid Unicode text",
        ),
    ],
)
def test_unregistered_channel_rejects_non_json(
    schemas: ContentSchemas, content: dict[Any, Any], problem: str
) -> None:
    with pytest.raises(InvalidContent) as info:
        schemas.validate("webhook", content)
    assert info.value.message == f"webhook content is not JSON-serializable: {problem}"


def test_circular_content_is_rejected(schemas: ContentSchemas) -> None:
    content: dict[str, Any] = {"a": {}}
    content["a"]["self"] = content
    with pytest.raises(InvalidContent, match=r"webhook content .* a\.self: circular reference"):
        schemas.validate("webhook", content)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def test_content_nested_deeper_than_32_levels_is_rejected_without_recursion_errors(
    schemas: ContentSchemas,
) -> None:
    assert find_json_problem(_nested(32)) is None
    assert find_json_problem(_nested(33)) == "x" + ".x" * 31 + ": nested deeper than 32 levels"
    with pytest.raises(InvalidContent, match="nested deeper than 32 levels"):
        schemas.validate("webhook", _nested(10_000))
    assert find_json_problem(_nested(40), max_depth=40) is None


def test_builtin_schema_content_with_a_nul_is_rejected(schemas: ContentSchemas) -> None:
    content = {**IN_APP, "headline": "Hi\x00"}
    with pytest.raises(InvalidContent) as info:
        schemas.validate("in_app", content)
    assert info.value.message.startswith(
        "in_app content is not JSON-serializable: headline: contains a NUL character"
    )


def test_repeated_but_not_circular_values_are_fine() -> None:
    shared = {"x": 1}
    assert find_json_problem({"a": shared, "b": [shared, shared]}) is None


def test_builtin_schema_with_unserializable_free_form_data(schemas: ContentSchemas) -> None:
    with pytest.raises(InvalidContent) as info:
        schemas.validate("push", {**PUSH, "data": {"obj": object()}})
    assert info.value.message.startswith("push content is not JSON-serializable: ")
    assert "object" in info.value.message


def test_register_a_custom_channel(schemas: ContentSchemas) -> None:
    schemas.register("webhook", Webhook)
    assert schemas.get("webhook") is Webhook
    assert schemas.validate("webhook", {"url": "https://h"}) == {"url": "https://h", "retries": 3}
    with pytest.raises(InvalidContent) as info:
        schemas.validate("webhook", {"url": "http://h", "retries": "many"})
    message = info.value.message
    assert message.startswith("webhook content is invalid: ")
    assert "url: Value error, must use https" in message
    assert "retries: Input should be a valid integer" in message


def test_register_replaces_a_builtin_channel(schemas: ContentSchemas) -> None:
    class LooseSms(BaseModel):
        text_body: str
        sender: str | None = None

    schemas.register("sms", LooseSms)
    assert schemas.validate("sms", {"text_body": "", "sender": "ACME"}) == {
        "text_body": "",
        "sender": "ACME",
    }


def test_registries_are_independent() -> None:
    first = ContentSchemas.default()
    first.register("webhook", Webhook)
    first.register("sms", Webhook)
    second = ContentSchemas.default()
    assert "webhook" not in second
    assert second.get("sms") is BUILTIN_SCHEMAS["sms"]
    assert ContentSchemas().channels == frozenset()


@pytest.mark.parametrize("channel", ["", "   ", None, 3])
def test_register_rejects_a_blank_or_non_string_channel(
    schemas: ContentSchemas, channel: Any
) -> None:
    with pytest.raises(ConfigurationError, match="channel must be a non-blank string"):
        schemas.register(channel, Webhook)
    assert schemas.channels == frozenset(BUILTIN_SCHEMAS)


@pytest.mark.parametrize("model", [Webhook(url="https://h"), dict, "Webhook", None])
def test_register_rejects_a_non_model(schemas: ContentSchemas, model: Any) -> None:
    with pytest.raises(ConfigurationError, match="'webhook' must be a pydantic model class"):
        schemas.register("webhook", model)
    assert "webhook" not in schemas


def test_constructor_takes_a_mapping_and_checks_it() -> None:
    schemas = ContentSchemas({"webhook": Webhook})
    assert schemas.channels == {"webhook"}
    with pytest.raises(ConfigurationError):
        ContentSchemas({"": Webhook})
