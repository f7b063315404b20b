"""The Notifier API (design §3): what a notification is, who gets it, and what each channel shows.

Users subclass :class:`Notifier`. The engine calls :func:`resolve_notifier` once to check the
declaration, then per trigger :func:`resolve_recipients` and, per recipient,
:func:`plan_notification`. Exceptions raised inside the user's methods propagate unchanged;
only a method that returns the wrong shape is reported as :class:`InvalidNotifier`.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from chimeway.content import (
    ContentSchemas,
    NonBlankStr,
    describe_validation_error,
    find_json_problem,
)
from chimeway.errors import InvalidNotifier, InvalidTrigger
from chimeway.inputs import identifier_problem
from chimeway.profiles import email_problem, locale_problem, phone_problem, timezone_problem

if TYPE_CHECKING:
    from chimeway.dsl import Workflow

__all__ = [
    "Notifier",
    "PlannedNotification",
    "Recipient",
    "plan_notification",
    "resolve_notifier",
    "resolve_recipients",
]


def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        raise PydanticCustomError("identifier", problem)
    return value


_Identifier = Annotated[NonBlankStr, AfterValidator(_identifier)]


def _profile_rule(check: Callable[[object], str | None]) -> AfterValidator:
    def validate(value: str) -> str:
        problem = check(value)
        if problem is not None:  # the message names the rule, never the address
            raise PydanticCustomError("profile", problem)
        return value

    return AfterValidator(validate)


class Recipient(BaseModel):
    """Who a notification is for. ``id`` and ``type`` follow the identifier rule of
    :mod:`chimeway.inputs` (printable, at most 255 characters).

    The profile fields (``email``, ``phone``, ``locale``, ``timezone``, ``data``; see
    :mod:`chimeway.profiles`) are optional: those given are merged into the recipient
    directory when the notification is triggered (``data`` key by key), and the adapters
    read the directory at send time. ``data`` is also passed to the notifier as is."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    id: _Identifier
    type: _Identifier = "user"
    email: Annotated[str, _profile_rule(email_problem)] | None = None
    phone: Annotated[str, _profile_rule(phone_problem)] | None = None
    locale: Annotated[str, _profile_rule(locale_problem)] | None = None
    timezone: Annotated[str, _profile_rule(timezone_problem)] | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def __repr_args__(self) -> Any:  # a stray print or log line shows no address
        return [("id", self.id), ("type", self.type)]

    @property
    def has_profile(self) -> bool:
        """Whether it carries any profile field to store."""
        return bool(self.email or self.phone or self.locale or self.timezone or self.data)


class Notifier:
    """Base class of the user's notifiers; override ``recipients`` and ``build`` at least."""

    key: ClassVar[str]
    version: ClassVar[int]
    category: ClassVar[str | None] = None
    #: Must reach people whatever their opt-outs and caps (password resets, security
    #: alerts); quiet hours still apply unless ``bypass_quiet_hours`` says otherwise.
    critical: ClassVar[bool] = False
    #: Sent at any hour, whatever the recipient's quiet hours (a sign-in code).
    bypass_quiet_hours: ClassVar[bool] = False

    def recipients(self, params: dict[str, Any]) -> Sequence[Recipient | dict[str, Any]]:
        """Who gets the notification: :class:`Recipient` objects or dicts with at least ``id``."""
        raise NotImplementedError(f"{type(self).__name__} must override recipients()")

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        """The notification's assigns (a JSON object) for one recipient."""
        raise NotImplementedError(f"{type(self).__name__} must override build()")

    def channels(self, params: dict[str, Any], recipient: Recipient) -> Sequence[str]:
        """Channels to deliver on when there is no workflow."""
        return ["in_app"]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        """The content for one channel; by default the assigns from :meth:`build`."""
        return self.build(params, recipient)

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        """A workflow to run for each recipient, or ``None`` for plain deliveries."""
        return None

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        """The content of a digest for one channel (design §15): ``items`` are the assigns
        (from :meth:`build`) of every notification the batch collected, in the order they
        joined. Needed by a notifier whose workflow starts with a ``Batch``."""
        raise NotImplementedError(f"{type(self).__name__} must override render_batch()")


@dataclass(frozen=True)
class PlannedNotification:
    """Everything a trigger stores for one recipient, validated and JSON-ready."""

    recipient: Recipient
    assigns: dict[str, Any]
    channels: list[str]
    contents: dict[str, dict[str, Any]]  # channel -> validated content
    workflow: Workflow | None
    #: The batch this notification goes into, for a workflow that starts with a Batch.
    batch_key: str | None = None


_MISSING = object()


def resolve_notifier(notifier: type[Notifier] | Notifier) -> Notifier:
    """Return a checked :class:`Notifier` instance for a subclass (instantiated without
    arguments) or an instance; raise :class:`InvalidNotifier` saying what is wrong."""
    candidate: object = notifier
    if isinstance(candidate, type):
        if not issubclass(candidate, Notifier):
            raise InvalidNotifier(f"{candidate.__name__} is not a Notifier subclass")
        if not _takes_no_arguments(candidate):
            raise InvalidNotifier(
                f"notifier {candidate.__name__} cannot be instantiated without arguments; "
                "pass an instance instead"
            )
        instance = candidate()
    elif isinstance(candidate, Notifier):
        instance = candidate
    else:
        raise InvalidNotifier(
            f"expected a Notifier subclass or instance, got {type(candidate).__name__}"
        )

    cls = type(instance)
    problems = []
    key = getattr(instance, "key", _MISSING)
    if key is _MISSING:
        problems.append("key is not set")
    elif not isinstance(key, str) or not key.strip():
        problems.append(f"key must be a non-blank string, got {key!r}")
    version = getattr(instance, "version", _MISSING)
    if version is _MISSING:
        problems.append("version is not set")
    elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"version must be an integer >= 1, got {version!r}")
    category = getattr(instance, "category", None)
    if category is not None and (not isinstance(category, str) or not category.strip()):
        problems.append(f"category must be None or a non-blank string, got {category!r}")
    for flag in ("critical", "bypass_quiet_hours"):
        value = getattr(instance, flag, False)
        if not isinstance(value, bool):
            problems.append(f"{flag} must be True or False, got {value!r}")
    for method in ("recipients", "build"):
        if getattr(cls, method) is getattr(Notifier, method):
            problems.append(f"{method}() must be overridden")
    if problems:
        raise InvalidNotifier(f"notifier {cls.__name__} is invalid: {'; '.join(problems)}")
    return instance


_INSTANTIABLE: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _takes_no_arguments(cls: type) -> bool:
    """Whether ``cls()`` binds (read once per class: building the signature of an inherited
    ``__init__`` was a tenth of a one-recipient trigger)."""
    known = _INSTANTIABLE.get(cls)
    if known is None:
        try:
            inspect.signature(cls).bind()
            known = True
        except TypeError:
            known = False
        except ValueError:  # no signature to inspect: let the call decide
            known = True
        _INSTANTIABLE[cls] = known
    return known


def resolve_recipients(notifier: Notifier, params: dict[str, Any]) -> list[Recipient]:
    """Call ``recipients()`` and return its recipients, de-duplicated by id (first wins)."""
    name = type(notifier).__name__
    returned: object = notifier.recipients(params)
    if not isinstance(returned, list | tuple):
        raise InvalidNotifier(
            f"{name}.recipients() must return a list of recipients, got {type(returned).__name__}"
        )
    recipients: dict[str, Recipient] = {}
    for index, item in enumerate(returned):
        if isinstance(item, Recipient):
            recipient = item
        elif isinstance(item, dict):
            try:
                recipient = Recipient.model_validate(item)
            except ValidationError as exc:
                raise InvalidNotifier(
                    f"{name}.recipients() returned an invalid recipient at index {index}: "
                    f"{describe_validation_error(exc)}"
                ) from exc
        else:
            raise InvalidNotifier(
                f"{name}.recipients() returned an invalid recipient at index {index}: "
                f"expected a Recipient or a dict, got {type(item).__name__}"
            )
        recipients.setdefault(recipient.id, recipient)
    return list(recipients.values())


def _checked_channels(name: str, returned: object) -> list[str]:
    if not isinstance(returned, list | tuple):
        raise InvalidNotifier(
            f"{name}.channels() must return a list of channel names, got {type(returned).__name__}"
        )
    if not returned:
        raise InvalidNotifier(f"{name}.channels() must return at least one channel")
    channels: list[str] = []
    for index, channel in enumerate(returned):
        if not isinstance(channel, str) or not channel.strip():
            raise InvalidNotifier(
                f"{name}.channels() returned an invalid channel at index {index}: "
                f"expected a non-blank string, got {channel!r}"
            )
        if channel in channels:
            raise InvalidNotifier(f"{name}.channels() returned channel {channel!r} twice")
        channels.append(channel)
    return channels


def plan_notification(
    notifier: Notifier,
    params: dict[str, Any],
    recipient: Recipient,
    schemas: ContentSchemas,
) -> PlannedNotification:
    """Build, route and render one recipient's notification, validating every return value.

    With a workflow, the channels are the workflow's distinct step channels in step order and
    ``channels()`` is not called. Content that fails its channel schema raises
    :class:`~chimeway.errors.InvalidContent`.
    """
    name = type(notifier).__name__
    assigns: object = notifier.build(params, recipient)
    if not isinstance(assigns, dict):
        raise InvalidNotifier(f"{name}.build() must return a dict, got {type(assigns).__name__}")
    problem = find_json_problem(assigns)
    if problem is not None:
        raise InvalidNotifier(f"{name}.build() returned assigns that are not JSON: {problem}")

    workflow: object = notifier.workflow(params, recipient)
    batch_key: str | None = None
    if workflow is None:
        channels = _checked_channels(name, notifier.channels(params, recipient))
    else:
        from chimeway.dsl import Workflow

        if not isinstance(workflow, Workflow):
            raise InvalidNotifier(
                f"{name}.workflow() must return a Workflow or None, got {type(workflow).__name__}"
            )
        channels = list(dict.fromkeys(step.channel for step in workflow.steps))
        if workflow.batch is not None:
            if type(notifier).render_batch is Notifier.render_batch:
                raise InvalidNotifier(
                    f"{name}.render_batch() must be overridden: workflow {workflow.key!r} "
                    "starts with a Batch"
                )
            batch_key = workflow.batch.key_of(params)
            if batch_key is None:
                raise InvalidTrigger(
                    f"params: the Batch key {workflow.batch.key!r} of workflow "
                    f"{workflow.key!r} names no string, integer or boolean field"
                )

    default_render = type(notifier).render is Notifier.render  # skip a second build() call
    contents: dict[str, dict[str, Any]] = {}
    for channel in channels:
        content: object = (
            dict(assigns) if default_render else notifier.render(params, recipient, channel)
        )
        if not isinstance(content, dict):
            raise InvalidNotifier(
                f"{name}.render() must return a dict for channel {channel!r}, "
                f"got {type(content).__name__}"
            )
        contents[channel] = schemas.validate(channel, content)

    return PlannedNotification(
        recipient=recipient,
        assigns=assigns,
        channels=channels,
        contents=contents,
        workflow=workflow,
        batch_key=batch_key,
    )
