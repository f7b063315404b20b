"""The public surface: ``chimeway.__all__`` is pinned, and everything a public method returns
or raises can be imported from ``chimeway`` itself."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from typing import Any

import chimeway
from chimeway import errors

PINNED = [
    "Adapter",
    "Advanced",
    "Attempt",
    "AttemptOutcome",
    "Batch",
    "Bounced",
    "CapSetting",
    "Chimeway",
    "ChimewayError",
    "ChimewaySettings",
    "Completed",
    "ConfigurationError",
    "Conflict",
    "ContentSchemas",
    "Daily",
    "DatabaseError",
    "DatabaseUnavailable",
    "DeliverAction",
    "DeliverResult",
    "Delivery",
    "DeliveryExplanation",
    "DeliveryFailure",
    "DeliveryReason",
    "DeliveryRedriven",
    "DeliveryRequest",
    "DeliveryStatus",
    "DeliverySummary",
    "DeliveryTransition",
    "DigestExplanation",
    "Duplicate",
    "ErrorClass",
    "FallbackAdapter",
    "FeedbackProcessed",
    "Forgotten",
    "InboxAction",
    "InboxAdapter",
    "InboxCounts",
    "InboxItem",
    "InboxMarked",
    "InboxPage",
    "InboxStatus",
    "InvalidArgument",
    "InvalidContent",
    "InvalidInput",
    "InvalidNotifier",
    "InvalidSignal",
    "InvalidToken",
    "InvalidTransition",
    "InvalidTrigger",
    "InvalidWorkflow",
    "LoggerAdapter",
    "Maintenance",
    "MigrationError",
    "Noop",
    "NotFound",
    "Notifier",
    "OnOutcome",
    "OnSignal",
    "OrchestrationState",
    "Outcome",
    "Permanent",
    "PreferenceRecord",
    "PreferenceScope",
    "PreferenceUpdate",
    "ProgressResult",
    "PruneReport",
    "QuietHoursSetting",
    "Recipient",
    "RecipientPreferences",
    "RecipientProfile",
    "RecipientRecord",
    "Retention",
    "RetryPolicy",
    "Routed",
    "RunCancelled",
    "RunExplanation",
    "RunState",
    "SchemaNotReady",
    "Sent",
    "Settings",
    "SignalTracked",
    "SlackAdapter",
    "SmtpAdapter",
    "Step",
    "Stop",
    "Stopped",
    "SweepReport",
    "Temporary",
    "Throttle",
    "TimelineEntry",
    "TokenExpired",
    "Transition",
    "Triggered",
    "TwilioSmsAdapter",
    "WaitUntil",
    "Waiting",
    "WebhookAdapter",
    "WebhookResult",
    "WebhookUnauthorized",
    "WebhookUnparseable",
    "Workflow",
    "WorkflowVersionConflict",
    "WrongConnection",
]


def test_all_is_pinned_sorted_and_importable() -> None:
    assert chimeway.__all__ == PINNED
    assert sorted(chimeway.__all__) == chimeway.__all__
    for name in chimeway.__all__:
        assert getattr(chimeway, name) is not None


def _public_methods(obj: Any) -> Iterator[tuple[str, Any]]:
    for name, member in inspect.getmembers(obj):
        if not name.startswith("_") and callable(member):
            yield name, member


def _named_types(annotation: Any) -> Iterator[type]:
    """Every class an annotation names (through unions, lists, dicts, Iterators ...)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _named_types(arg)


def _facades() -> list[Any]:
    cls = chimeway.Chimeway
    hints = typing.get_type_hints(cls.__init__)
    assert hints  # the constructor is annotated
    # The sub-façades, found through the methods' owners, are checked like Chimeway itself.
    return [
        cls,
        *(type(v) for v in vars(_bare_app()).values() if type(v).__module__ == cls.__module__),
    ]


def _bare_app() -> Any:
    """A Chimeway that never connects (nothing here opens the pool)."""
    return chimeway.Chimeway("postgresql://nobody@127.0.0.1:1/none")


def test_every_public_method_returns_types_importable_from_chimeway() -> None:
    missing = []
    checked = 0
    for facade in _facades():
        for name, method in _public_methods(facade):
            hints = typing.get_type_hints(method)
            for cls in _named_types(hints.get("return")):
                checked += 1
                if cls.__module__.startswith("chimeway") and cls.__name__ not in chimeway.__all__:
                    missing.append(f"{facade.__name__}.{name} -> {cls.__module__}.{cls.__name__}")
    assert checked > 10
    assert missing == []


def test_every_error_class_is_exported_and_in_one_tree() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, chimeway.ChimewayError)
        assert cls.__name__ in chimeway.__all__, cls.__name__


def test_input_errors_share_a_parent() -> None:
    for cls in (
        chimeway.InvalidArgument,
        chimeway.InvalidTrigger,
        chimeway.InvalidSignal,
        chimeway.InvalidNotifier,
        chimeway.InvalidWorkflow,
        chimeway.InvalidContent,
    ):
        assert issubclass(cls, chimeway.InvalidInput)
    for cls in (chimeway.DatabaseUnavailable, chimeway.SchemaNotReady, chimeway.MigrationError):
        assert issubclass(cls, chimeway.DatabaseError)
    for cls in (chimeway.WorkflowVersionConflict, chimeway.InvalidTransition):
        assert issubclass(cls, chimeway.Conflict)
