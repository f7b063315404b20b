"""The Notifier API: declaration checks, recipients and per-recipient planning (no database)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from chimeway.content import ContentSchemas
from chimeway.errors import InvalidContent, InvalidNotifier
from chimeway.notifiers import (
    Notifier,
    PlannedNotification,
    Recipient,
    plan_notification,
    resolve_notifier,
    resolve_recipients,
)

IN_APP = {
    "headline": "Ada mentioned you",
    "body": "in #general",
    "primary_action": {"label": "Open", "url": "https://example.com/m/1"},
}
EMAIL = {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"}
ADA = Recipient(id="ada")


class Mention(Notifier):
    """The smallest useful notifier: in-app only, render defaults to the assigns."""

    key = "mention"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=user) for user in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return dict(IN_APP)


class Configurable(Notifier):
    """A notifier whose every method returns what the test put in ``returns``."""

    key = "configurable"
    version = 2
    category = "tests"

    def __init__(self, **returns: Any) -> None:
        self.returns = returns
        self.calls: list[tuple[str, Any]] = []

    def recipients(self, params: dict[str, Any]) -> Any:
        self.calls.append(("recipients", params))
        return self.returns.get("recipients", [])

    def build(self, params: dict[str, Any], recipient: Recipient) -> Any:
        self.calls.append(("build", recipient.id))
        return self.returns.get("build", {"n": 1})

    def channels(self, params: dict[str, Any], recipient: Recipient) -> Any:
        self.calls.append(("channels", recipient.id))
        return self.returns.get("channels", ["in_app", "email"])

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> Any:
        self.calls.append(("render", channel))
        render = self.returns.get("render", {"in_app": IN_APP, "email": EMAIL})
        return render[channel] if isinstance(render, dict) else render

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Any:
        self.calls.append(("workflow", recipient.id))
        return self.returns.get("workflow")


@pytest.fixture
def schemas() -> ContentSchemas:
    return ContentSchemas.default()


# --- Recipient ---------------------------------------------------------------------------


def test_recipient_defaults_and_is_frozen() -> None:
    recipient = Recipient(id="ada")
    assert (recipient.id, recipient.type, recipient.data) == ("ada", "user", {})
    assert Recipient(id="b").data is not Recipient(id="c").data
    with pytest.raises(ValidationError):
        recipient.id = "bob"
    assert recipient.id == "ada"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"id": ""}, "must not be blank"),
        ({"id": "  \t"}, "must not be blank"),
        ({"id": 42}, "valid string"),
        ({"id": "a", "type": " "}, "must not be blank"),
        ({"id": "a", "mail": "a@x"}, "Extra inputs are not permitted"),
        ({"id": "a", "email": "not an address"}, "is not an email address"),
        ({"id": "a", "phone": "555 0100"}, "is not an E.164 phone number"),
        ({"id": "a", "locale": "english please"}, "is not a locale tag"),
        ({"id": "a", "timezone": "Mars/Olympus"}, "is not a known IANA time zone"),
        ({}, "Field required"),
        ({"id": "a\x00"}, "contains the control character U\\+0000 at index 1"),
        ({"id": "a\nb"}, "contains the control character U\\+000A at index 1"),
        ({"id": "\ud800"}, "contains a lone surrogate \\(U\\+D800\\) at index 0"),
        ({"id": "u" * 256}, "is 256 characters long; at most 255 allowed"),
        ({"id": "a", "type": "t\x7f"}, "contains the control character U\\+007F"),
    ],
)
def test_recipient_rejects_bad_fields(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Recipient(**fields)


def test_recipient_profile_fields_stay_out_of_errors_and_reprs() -> None:
    with pytest.raises(ValidationError) as caught:
        Recipient(id="a", email="secret person@example.com", phone="+1 987")
    assert "secret" not in str(caught.value)
    assert "987" not in str(caught.value)
    given = Recipient(id="a", email="ada@example.com", phone="+14155550100")
    assert "ada@" not in repr(given) and "4155550100" not in repr(given)
    assert given.has_profile
    assert not Recipient(id="b").has_profile


def test_recipient_keeps_its_id_as_given() -> None:
    assert Recipient(id=" ada ").id == " ada "
    assert Recipient(id="u" * 255, type="team").id == "u" * 255


def test_an_invalid_recipient_id_from_recipients_is_an_invalid_notifier() -> None:
    with pytest.raises(InvalidNotifier, match=r"index 1: id: contains the control character"):
        resolve_recipients(Configurable(recipients=({"id": "a"}, {"id": "b\x00"})), {})


# --- resolve_notifier --------------------------------------------------------------------


def test_resolve_notifier_instantiates_a_subclass() -> None:
    notifier = resolve_notifier(Mention)
    assert type(notifier) is Mention
    assert (notifier.key, notifier.version, notifier.category) == ("mention", 1, None)


def test_resolve_notifier_returns_an_instance_unchanged() -> None:
    instance = Configurable()
    assert resolve_notifier(instance) is instance
    assert instance.category == "tests"


def test_resolve_notifier_rejects_a_subclass_that_needs_arguments() -> None:
    class NeedsArgs(Mention):
        def __init__(self, client: object) -> None:
            self.client = client

    with pytest.raises(InvalidNotifier) as info:
        resolve_notifier(NeedsArgs)
    assert info.value.message == (
        "notifier NeedsArgs cannot be instantiated without arguments; pass an instance instead"
    )
    assert resolve_notifier(NeedsArgs(client=None)).key == "mention"


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (dict, "dict is not a Notifier subclass"),
        (Mention(), None),
        ("mention", "expected a Notifier subclass or instance, got str"),
        (None, "expected a Notifier subclass or instance, got NoneType"),
        (Mention.build, "expected a Notifier subclass or instance, got function"),
    ],
)
def test_resolve_notifier_rejects_non_notifiers(candidate: Any, message: str | None) -> None:
    if message is None:  # a control: a real instance passes
        assert resolve_notifier(candidate) is candidate
        return
    with pytest.raises(InvalidNotifier) as info:
        resolve_notifier(candidate)
    assert info.value.message == message


def _declare(attrs: dict[str, Any], base: type[Notifier] = Mention) -> type[Notifier]:
    return type("Broken", (base,), attrs)


@pytest.mark.parametrize(
    ("attrs", "problem"),
    [
        ({"key": ""}, "key must be a non-blank string, got ''"),
        ({"key": "   "}, "key must be a non-blank string, got '   '"),
        ({"key": None}, "key must be a non-blank string, got None"),
        ({"key": 7}, "key must be a non-blank string, got 7"),
        ({"version": 0}, "version must be an integer >= 1, got 0"),
        ({"version": -3}, "version must be an integer >= 1, got -3"),
        ({"version": True}, "version must be an integer >= 1, got True"),
        ({"version": 1.0}, "version must be an integer >= 1, got 1.0"),
        ({"version": "1"}, "version must be an integer >= 1, got '1'"),
        ({"category": ""}, "category must be None or a non-blank string, got ''"),
        ({"category": " "}, "category must be None or a non-blank string, got ' '"),
        ({"category": 5}, "category must be None or a non-blank string, got 5"),
    ],
)
def test_resolve_notifier_rejects_bad_declarations(attrs: dict[str, Any], problem: str) -> None:
    broken = _declare(attrs)
    with pytest.raises(InvalidNotifier) as info:
        resolve_notifier(broken)
    assert info.value.message == f"notifier Broken is invalid: {problem}"
    with pytest.raises(InvalidNotifier, match=problem.split(",", maxsplit=1)[0]):
        resolve_notifier(broken())  # an instance is checked the same way


@pytest.mark.parametrize(
    ("attrs", "problems"),
    [
        ({"version": 1}, ["key is not set", "recipients() must be overridden"]),
        ({"key": "k"}, ["version is not set", "build() must be overridden"]),
        (
            {"key": "k", "version": 1},
            ["recipients() must be overridden", "build() must be overridden"],
        ),
        ({}, ["key is not set", "version is not set", "recipients() must be overridden"]),
    ],
)
def test_resolve_notifier_reports_missing_parts(attrs: dict[str, Any], problems: list[str]) -> None:
    broken = _declare(attrs, base=Notifier)
    with pytest.raises(InvalidNotifier) as info:
        resolve_notifier(broken)
    assert info.value.message.startswith("notifier Broken is invalid: ")
    for problem in problems:
        assert problem in info.value.message


def test_instance_attributes_count_for_the_declaration() -> None:
    instance = Mention()
    instance.version = 0  # type: ignore[misc]
    with pytest.raises(InvalidNotifier, match="notifier Mention is invalid: version must be"):
        resolve_notifier(instance)


def test_base_methods_explain_what_to_override() -> None:
    class Bare(Notifier):
        key = "bare"
        version = 1

    with pytest.raises(NotImplementedError, match="Bare must override recipients"):
        Bare().recipients({})
    with pytest.raises(NotImplementedError, match="Bare must override build"):
        Bare().build({}, ADA)
    assert Bare().channels({}, ADA) == ["in_app"]
    assert Bare().workflow({}, ADA) is None


def test_default_render_returns_the_assigns() -> None:
    assert Mention().render({}, ADA, "in_app") == IN_APP


# --- resolve_recipients ------------------------------------------------------------------


def test_recipients_from_objects_and_dicts_are_deduplicated_in_order() -> None:
    notifier = Configurable(
        recipients=[
            {"id": "b", "data": {"email": "b@x"}},
            Recipient(id="a", type="team"),
            {"id": "b", "type": "bot"},
            {"id": "c"},
            Recipient(id="a"),
        ]
    )
    resolved = resolve_recipients(notifier, {"p": 1})
    assert resolved == [
        Recipient(id="b", data={"email": "b@x"}),
        Recipient(id="a", type="team"),
        Recipient(id="c"),
    ]
    assert notifier.calls == [("recipients", {"p": 1})]


def test_recipients_may_be_a_tuple_or_empty() -> None:
    assert resolve_recipients(Configurable(recipients=({"id": "a"},)), {}) == [Recipient(id="a")]
    assert resolve_recipients(Configurable(recipients=[]), {}) == []
    assert resolve_recipients(Mention(), {"users": ["x", "y"]}) == [
        Recipient(id="x"),
        Recipient(id="y"),
    ]


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "Configurable.recipients() must return a list of recipients, got NoneType"),
        ({"id": "a"}, "Configurable.recipients() must return a list of recipients, got dict"),
        (Recipient(id="a"), "must return a list of recipients, got Recipient"),
        ((r for r in ["a"]), "must return a list of recipients, got generator"),
        ("ada", "must return a list of recipients, got str"),
        (
            [{"id": "a"}, "b"],
            "Configurable.recipients() returned an invalid recipient at index 1: "
            "expected a Recipient or a dict, got str",
        ),
        ([None], "invalid recipient at index 0: expected a Recipient or a dict, got NoneType"),
        (
            [{"id": "a"}, {"id": "b"}, {"id": ""}],
            "Configurable.recipients() returned an invalid recipient at index 2: "
            "id: must not be blank",
        ),
        ([{"id": "   "}], "invalid recipient at index 0: id: must not be blank"),
        ([{"name": "ada"}], "at index 0: id: Field required; name: Extra inputs are not permitted"),
        ([{"id": 42}], "at index 0: id: Input should be a valid string"),
        ([{"id": "a", "data": "x"}], "at index 0: data: Input should be a valid dictionary"),
    ],
)
def test_recipients_of_the_wrong_shape_are_rejected(returned: Any, message: str) -> None:
    with pytest.raises(InvalidNotifier) as info:
        resolve_recipients(Configurable(recipients=returned), {})
    assert message in info.value.message
    assert info.value.message.startswith("Configurable.recipients() ")


def test_errors_raised_by_recipients_propagate_unchanged() -> None:
    class Failing(Mention):
        def recipients(self, params: dict[str, Any]) -> list[Recipient]:
            raise KeyError("users")

    with pytest.raises(KeyError, match="users"):
        resolve_recipients(Failing(), {})
    with pytest.raises(KeyError, match="users"):
        resolve_recipients(Mention(), {})  # params["users"] is missing


# --- plan_notification without a workflow ------------------------------------------------


def test_plan_with_default_channels_and_render(schemas: ContentSchemas) -> None:
    calls: list[str] = []

    class Counting(Mention):
        def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
            calls.append(recipient.id)
            return {**IN_APP, "body": f"for {recipient.id}"}

    plan = plan_notification(Counting(), {}, ADA, schemas)
    assert plan == PlannedNotification(
        recipient=ADA,
        assigns={**IN_APP, "body": "for ada"},
        channels=["in_app"],
        contents={"in_app": {**IN_APP, "body": "for ada"}},
        workflow=None,
    )
    assert calls == ["ada"]  # build() is called once, not again for the default render
    assert plan.contents["in_app"] is not plan.assigns
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.channels = []  # type: ignore[misc]


def test_plan_renders_each_channel_in_order(schemas: ContentSchemas) -> None:
    notifier = Configurable(
        channels=("email", "in_app", "webhook"),
        render={"in_app": IN_APP, "email": EMAIL, "webhook": {"event": "mention"}},
    )
    plan = plan_notification(notifier, {"p": 1}, ADA, schemas)
    assert plan.channels == ["email", "in_app", "webhook"]
    assert plan.contents == {"email": EMAIL, "in_app": IN_APP, "webhook": {"event": "mention"}}
    assert list(plan.contents) == plan.channels
    assert plan.assigns == {"n": 1}
    assert plan.workflow is None
    assert notifier.calls == [
        ("build", "ada"),
        ("workflow", "ada"),
        ("channels", "ada"),
        ("render", "email"),
        ("render", "in_app"),
        ("render", "webhook"),
    ]


def test_plan_uses_the_given_schemas(schemas: ContentSchemas) -> None:
    class Event(BaseModel):  # extra keys are ignored, not forbidden
        event: str

    schemas.register("webhook", Event)
    notifier = Configurable(channels=["webhook"], render={"webhook": {"event": "x", "extra": 1}})
    assert plan_notification(notifier, {}, ADA, schemas).contents == {"webhook": {"event": "x"}}


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "Configurable.build() must return a dict, got NoneType"),
        ([("a", 1)], "Configurable.build() must return a dict, got list"),
        ("assigns", "Configurable.build() must return a dict, got str"),
        (
            {"when": object()},
            "Configurable.build() returned assigns that are not JSON: "
            "when: object is not JSON-serializable",
        ),
        ({1: "a"}, "Configurable.build() returned assigns that are not JSON: (root): key 1"),
        ({"x": {"y": math.nan}}, "not JSON: x.y: nan is not a finite number"),
        ({"tags": {"a"}}, "not JSON: tags: set is not JSON-serializable"),
    ],
)
def test_plan_rejects_bad_assigns(schemas: ContentSchemas, returned: Any, message: str) -> None:
    notifier = Configurable(build=returned)
    with pytest.raises(InvalidNotifier) as info:
        plan_notification(notifier, {}, ADA, schemas)
    assert message in info.value.message
    assert [name for name, _ in notifier.calls] == ["build"]


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ([], "Configurable.channels() must return at least one channel"),
        ((), "Configurable.channels() must return at least one channel"),
        (None, "Configurable.channels() must return a list of channel names, got NoneType"),
        ("in_app", "Configurable.channels() must return a list of channel names, got str"),
        ({"in_app"}, "Configurable.channels() must return a list of channel names, got set"),
        (
            ["in_app", ""],
            "Configurable.channels() returned an invalid channel at index 1: "
            "expected a non-blank string, got ''",
        ),
        (["  "], "invalid channel at index 0: expected a non-blank string, got '  '"),
        (["in_app", None], "invalid channel at index 1: expected a non-blank string, got None"),
        ([3], "invalid channel at index 0: expected a non-blank string, got 3"),
        (
            ["in_app", "email", "in_app"],
            "Configurable.channels() returned channel 'in_app' twice",
        ),
    ],
)
def test_plan_rejects_bad_channels(schemas: ContentSchemas, returned: Any, message: str) -> None:
    notifier = Configurable(channels=returned)
    with pytest.raises(InvalidNotifier) as info:
        plan_notification(notifier, {}, ADA, schemas)
    assert message in info.value.message
    assert not any(name == "render" for name, _ in notifier.calls)


@pytest.mark.parametrize(
    ("returned", "type_name"),
    [(None, "NoneType"), ("text", "str"), ([IN_APP], "list"), (IN_APP.items(), "dict_items")],
)
def test_plan_rejects_render_that_is_not_a_dict(
    schemas: ContentSchemas, returned: Any, type_name: str
) -> None:
    notifier = Configurable(channels=["in_app"], render=returned)
    with pytest.raises(InvalidNotifier) as info:
        plan_notification(notifier, {}, ADA, schemas)
    assert info.value.message == (
        f"Configurable.render() must return a dict for channel 'in_app', got {type_name}"
    )


def test_plan_propagates_invalid_content(schemas: ContentSchemas) -> None:
    notifier = Configurable(render={"in_app": IN_APP, "email": {**EMAIL, "subjet": "x"}})
    with pytest.raises(InvalidContent) as info:
        plan_notification(notifier, {}, ADA, schemas)
    assert info.value.message.startswith("email content is invalid: ")
    assert "subjet: Extra inputs are not permitted" in info.value.message


def test_default_render_with_assigns_that_do_not_fit_the_channel(schemas: ContentSchemas) -> None:
    class TwoChannels(Mention):
        def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
            return ["in_app", "email"]

    with pytest.raises(InvalidContent, match=r"^email content is invalid: .*subject: Field"):
        plan_notification(TwoChannels(), {}, ADA, schemas)


@pytest.mark.parametrize("method", ["build", "workflow", "channels", "render"])
def test_errors_raised_by_user_methods_propagate_unchanged(
    schemas: ContentSchemas, method: str
) -> None:
    class Boom(Exception):
        pass

    def fail(*args: Any) -> Any:
        raise Boom(method)

    notifier = Configurable()
    setattr(notifier, method, fail)
    with pytest.raises(Boom, match=method):
        plan_notification(notifier, {}, ADA, schemas)


# --- plan_notification with a workflow (needs chimeway.dsl) ------------------------------


def _workflow(*channels: str) -> Any:
    from chimeway.dsl import Step, Workflow

    steps = [Step(f"step{index}", channel=channel) for index, channel in enumerate(channels)]
    return Workflow(key="configurable", version=1, steps=steps)


def test_plan_with_a_workflow_uses_its_distinct_step_channels(schemas: ContentSchemas) -> None:
    workflow = _workflow("in_app", "email", "in_app")
    notifier = Configurable(workflow=workflow, channels=["sms"])
    plan = plan_notification(notifier, {}, ADA, schemas)
    assert plan.workflow is workflow
    assert plan.channels == ["in_app", "email"]
    assert plan.contents == {"in_app": IN_APP, "email": EMAIL}
    assert ("channels", "ada") not in notifier.calls  # channels() is not consulted
    assert [name for name, _ in notifier.calls] == ["build", "workflow", "render", "render"]


def test_plan_with_a_workflow_validates_each_step_channel(schemas: ContentSchemas) -> None:
    notifier = Configurable(workflow=_workflow("email"), render={"email": {"subject": "x"}})
    with pytest.raises(InvalidContent, match=r"^email content is invalid: html_body: Field"):
        plan_notification(notifier, {}, ADA, schemas)


@pytest.mark.parametrize(
    ("returned", "type_name"),
    [("flow", "str"), ({"steps": []}, "dict"), ([], "list"), (False, "bool")],
)
def test_plan_rejects_workflow_that_is_not_a_workflow(
    schemas: ContentSchemas, returned: Any, type_name: str
) -> None:
    notifier = Configurable(workflow=returned)
    with pytest.raises(InvalidNotifier) as info:
        plan_notification(notifier, {}, ADA, schemas)
    assert info.value.message == (
        f"Configurable.workflow() must return a Workflow or None, got {type_name}"
    )
    assert not any(name in {"channels", "render"} for name, _ in notifier.calls)
