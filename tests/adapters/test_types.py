"""What adapters receive and return, and the settings every built-in adapter shares."""

from __future__ import annotations

import uuid

import pytest

from chimeway.adapters import (
    Bounced,
    DeliveryFailure,
    DeliveryRequest,
    LoggerAdapter,
    Permanent,
    ProviderAdapter,
    RecipientProfile,
    Sent,
    Temporary,
)
from chimeway.errors import ConfigurationError, InvalidArgument
from chimeway.types import ErrorClass


def test_a_recipient_profile_keeps_a_read_only_copy_of_its_data() -> None:
    data = {"slack_channel": "C1"}
    profile = RecipientProfile(id="ada", email="ada@example.test", data=data)
    data["slack_channel"] = "C2"

    assert profile.data == {"slack_channel": "C1"}
    assert (profile.phone, profile.locale, profile.timezone) == (None, None, None)
    with pytest.raises(TypeError):
        profile.data["slack_channel"] = "C3"  # type: ignore[index]
    assert RecipientProfile(id="bob").data == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": " "}, "recipient id must be a non-blank string"),
        ({"id": "ada", "data": ["x"]}, "recipient data must be a mapping, got list"),
    ],
)
def test_a_bad_recipient_profile_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        RecipientProfile(**kwargs)  # type: ignore[arg-type]


def test_a_request_has_no_recipient_or_unsubscribe_url_unless_given() -> None:
    delivery_id = uuid.uuid4()
    request = DeliveryRequest(delivery_id, "acme", "ada", "email", {}, 2)

    assert (request.recipient, request.unsubscribe_url) == (None, None)
    assert request.idempotency_key == str(delivery_id)


def test_failures_keep_their_class_meta_and_retry_after() -> None:
    failure = Temporary("slow down", meta={"provider": "x"}, retry_after=3)

    assert failure.retry_after == 3.0
    assert isinstance(failure.retry_after, float)
    assert failure.meta == {"provider": "x"}
    assert failure.error_class == ErrorClass.TEMPORARY
    assert Permanent().retry_after is None
    assert str(Bounced()) == "Bounced"
    assert DeliveryFailure().error_class == ErrorClass.UNKNOWN


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True])
def test_retry_after_must_be_seconds(value: object) -> None:
    with pytest.raises(InvalidArgument, match="retry_after must be a finite number"):
        Temporary("x", retry_after=value)  # type: ignore[arg-type]


def test_the_logger_adapter_names_its_provider() -> None:
    adapter = LoggerAdapter(name="log", capacity=2)
    request = DeliveryRequest(uuid.uuid4(), "acme", "ada", "email", {}, 1)

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity) == ("log", 1.0, 2)
    assert adapter.deliver(request) == Sent(
        provider_message_id=f"log-{request.delivery_id}",
        meta={"adapter": "logger", "provider": "log"},
    )
    assert LoggerAdapter().name == "logger"
    with pytest.raises(ConfigurationError, match="LoggerAdapter capacity must be an integer"):
        LoggerAdapter(capacity=0)
