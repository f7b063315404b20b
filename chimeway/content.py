"""Per-channel content validation.

A notifier renders one content dict per channel; before it is stored it goes through the
channel's schema (a pydantic model). Chimeway ships schemas for its built-in channels
(:data:`BUILTIN_SCHEMAS`); applications register their own with :meth:`ContentSchemas.register`.
Content for a channel without a schema only has to be a JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Strict, ValidationError
from pydantic_core import PydanticCustomError, PydanticSerializationError

from chimeway.errors import ConfigurationError, InvalidContent
from chimeway.inputs import MAX_DEPTH, json_problem

__all__ = [
    "BUILTIN_SCHEMAS",
    "ChatContent",
    "ContentSchemas",
    "EmailContent",
    "InAppContent",
    "PrimaryAction",
    "PushContent",
    "SmsContent",
    "describe_validation_error",
    "find_json_problem",
]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank_string", "must not be blank")
    return value


NonBlankStr = Annotated[str, Strict(), AfterValidator(_not_blank)]
"""A string that is not empty or whitespace only (no coercion from other types)."""


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrimaryAction(_Content):
    label: NonBlankStr
    url: NonBlankStr


class InAppContent(_Content):
    headline: NonBlankStr
    body: NonBlankStr
    primary_action: PrimaryAction


class EmailContent(_Content):
    subject: NonBlankStr
    html_body: NonBlankStr
    text_body: NonBlankStr


class SmsContent(_Content):
    text_body: NonBlankStr


class PushContent(_Content):
    title: NonBlankStr
    body: NonBlankStr
    data: dict[str, Any] | None = None


class ChatContent(_Content):
    text: NonBlankStr
    rich_payload: dict[str, Any] | None = None


BUILTIN_SCHEMAS: Mapping[str, type[BaseModel]] = MappingProxyType(
    {
        "in_app": InAppContent,
        "email": EmailContent,
        "sms": SmsContent,
        "push": PushContent,
        "chat": ChatContent,
    }
)


def find_json_problem(value: object, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Describe why ``value`` cannot be stored as ``jsonb`` as it is, or return ``None``.

    Accepts dicts with string keys, lists, tuples, strings, ints, finite floats, bools and
    ``None``; no NUL character or lone surrogate in any key or string, and at most
    ``max_depth`` levels of nesting. The description names the path of the offending value
    (``meta.when: ...``). Never raises ``RecursionError``, however deep ``value`` is.
    """
    return json_problem(value, max_depth=max_depth)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing field path and what is wrong with it."""
    parts = []
    for error in exc.errors():
        path = ".".join(str(item) for item in error["loc"]) or "(root)"
        parts.append(f"{path}: {error['msg']}")
    return " ".join("; ".join(parts).split())  # one line, whatever the messages contain


class ContentSchemas:
    """Channel name -> pydantic model that the channel's rendered content must satisfy."""

    def __init__(self, schemas: Mapping[str, type[BaseModel]] | None = None) -> None:
        self._schemas: dict[str, type[BaseModel]] = {}
        for channel, model in (schemas or {}).items():
            self.register(channel, model)

    @classmethod
    def default(cls) -> ContentSchemas:
        """A new registry holding the built-in channel schemas."""
        return cls(BUILTIN_SCHEMAS)

    def register(self, channel: str, model: type[BaseModel]) -> None:
        """Use ``model`` for ``channel``, replacing any schema it had (built-in or not)."""
        if not isinstance(channel, str) or not channel.strip():
            raise ConfigurationError(
                f"content schema channel must be a non-blank string, got {channel!r}"
            )
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigurationError(
                f"content schema for channel {channel!r} must be a pydantic model class, "
                f"got {model!r}"
            )
        self._schemas[channel] = model

    def get(self, channel: str) -> type[BaseModel] | None:
        """The schema registered for ``channel``, if any."""
        return self._schemas.get(channel)

    def __contains__(self, channel: object) -> bool:
        return channel in self._schemas

    @property
    def channels(self) -> frozenset[str]:
        """Channels with a registered schema."""
        return frozenset(self._schemas)

    def validate(self, channel: str, content: Any) -> dict[str, Any]:
        """Return ``content`` validated for ``channel``, ready to store as JSON.

        With a schema, the result is the model's JSON dump without ``None`` fields; without
        one, ``content`` is returned unchanged once it is known to be a JSON object.
        Raises :class:`~chimeway.errors.InvalidContent` naming the channel and each bad field.
        """
        if not isinstance(content, dict):
            raise InvalidContent(
                f"{channel} content must be a JSON object (dict), got {type(content).__name__}"
            )
        model = self._schemas.get(channel)
        if model is None:
            result = content
        else:
            try:
                validated = model.model_validate(content)
            except ValidationError as exc:
                raise InvalidContent(
                    f"{channel} content is invalid: {describe_validation_error(exc)}"
                ) from exc
            try:
                result = validated.model_dump(mode="json", exclude_none=True)
            except PydanticSerializationError as exc:
                raise InvalidContent(
                    f"{channel} content is not JSON-serializable: {' '.join(str(exc).split())}"
                ) from exc
        problem = find_json_problem(result)
        if problem is not None:
            raise InvalidContent(f"{channel} content is not JSON-serializable: {problem}")
        return result
