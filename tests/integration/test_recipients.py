"""The recipient directory (design §12): upsert, get, forget, inline profiles at trigger time,
profiles handed to adapters, and no_address suppression with a workflow that falls back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chimeway import (
    Chimeway,
    DeliveryReason,
    DeliveryStatus,
    InvalidArgument,
    NotFound,
    OnOutcome,
    Recipient,
    SmtpAdapter,
    Step,
    Triggered,
    Workflow,
)
from chimeway.testing import RecordingAdapter, drain
from tests.adapters.conftest import SmtpServer
from tests.integration.conftest import count
from tests.integration.notifiers import Welcome, WithWorkflow

Conn = psycopg.Connection[Any]
ADA = "ada@example.com"
PHONE = "+14155550100"


class EmailRecorder(RecordingAdapter):
    """Records email sends and, like SmtpAdapter, needs the profile's email."""

    address = "email"


class SmsRecorder(RecordingAdapter):
    address = "phone"


class Profiled(Welcome):
    """Recipients given whole in params: ``people`` is a list of Recipient dicts."""

    key = "profiled"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return list(params["people"])

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return (
            {"text_body": "Hi"} if channel == "sms" else super().render(params, recipient, channel)
        )


class ProfiledFlow(WithWorkflow):
    key = "profiled_flow"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return list(params["people"])


@pytest.fixture
def recorders() -> dict[str, RecordingAdapter]:
    return {"email": EmailRecorder(), "sms": SmsRecorder(), "in_app": RecordingAdapter()}


@pytest.fixture
def cw(make_tx_cw: Callable[..., Chimeway], recorders: dict[str, RecordingAdapter]) -> Chimeway:
    return make_tx_cw(adapters=recorders)


def trigger(cw: Chimeway, db: Conn, notifier: Any, key: str, **params: Any) -> Triggered:
    result = cw.trigger(notifier, params, tenant_id="t1", idempotency_key=key, conn=db)
    assert isinstance(result, Triggered)
    return result


def test_upsert_sets_keeps_merges_and_clears(cw: Chimeway, db: Conn) -> None:
    first = cw.recipients.upsert(
        "t1", "ada", email=ADA, locale="en-GB", data={"slack_channel": "C1", "team": "a"}, conn=db
    )
    assert (first.email, first.phone, first.locale) == (ADA, None, "en-GB")
    second = cw.recipients.upsert(
        "t1", "ada", phone=PHONE, timezone="Europe/London", data={"team": "b"}, conn=db
    )
    assert (second.email, second.phone, second.timezone) == (ADA, PHONE, "Europe/London")
    assert second.data == {"slack_channel": "C1", "team": "b"}
    assert second.created_at == first.created_at
    cleared = cw.recipients.upsert("t1", "ada", clear=["email", "data"], conn=db)
    assert (cleared.email, cleared.phone, cleared.data) == (None, PHONE, {})
    assert cw.recipients.get("t1", "ada", conn=db) == cleared
    assert ADA not in repr(first)


def test_get_is_tenant_scoped(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t1", "ada", email=ADA, conn=db)
    with pytest.raises(NotFound, match="recipient 'ada' has no profile"):
        cw.recipients.get("t2", "ada", conn=db)
    with pytest.raises(NotFound):
        cw.recipients.get("t1", "nobody", conn=db)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "ada at example"}, "email is not an email address"),
        ({"phone": "0044 20 7946 0000"}, "phone is not an E.164 phone number"),
        ({"locale": "en GB"}, "locale is not a locale tag"),
        ({"timezone": "Europe/Atlantis"}, "timezone is not a known IANA time zone"),
        ({"data": ["not", "an", "object"]}, "data must be a JSON object"),
        ({"clear": ["email", "address"]}, "clear names unknown field 'address'"),
        ({"clear": "email"}, "clear must be a list of field names"),
        ({"email": ADA, "clear": ["email"]}, "email is both given and in clear"),
    ],
)
def test_upsert_refuses_bad_fields_without_echoing_them(
    cw: Chimeway, db: Conn, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        cw.recipients.upsert("t1", "ada", conn=db, **fields)
    for value in fields.values():
        if isinstance(value, str) and value != "email":
            assert value not in str(caught.value)
    assert count(db, "SELECT count(*) FROM chimeway_recipients") == 0


def test_inline_profile_is_upserted_by_the_trigger_and_kept_by_later_ones(
    cw: Chimeway, db: Conn
) -> None:
    trigger(cw, db, Profiled, "k1", people=[{"id": "ada", "email": ADA, "data": {"a": 1}}])
    trigger(cw, db, Profiled, "k2", people=[{"id": "ada", "locale": "fr", "data": {"b": 2}}])
    trigger(cw, db, Profiled, "k3", people=[{"id": "bob"}])  # no profile field: no row
    record = cw.recipients.get("t1", "ada", conn=db)
    assert (record.email, record.locale, record.data) == (ADA, "fr", {"a": 1, "b": 2})
    with pytest.raises(NotFound):
        cw.recipients.get("t1", "bob", conn=db)


def test_a_trigger_that_fails_stores_no_profile(cw: Chimeway, db: Conn) -> None:
    with pytest.raises(Exception, match="invalid recipient"):
        trigger(cw, db, Profiled, "k1", people=[{"id": "ada", "email": ADA}, {"id": ""}])
    assert count(db, "SELECT count(*) FROM chimeway_recipients") == 0


def test_adapters_get_the_profile_as_it_is_at_send_time(
    cw: Chimeway, db: Conn, recorders: dict[str, RecordingAdapter]
) -> None:
    trigger(
        cw, db, Profiled, "k1", people=[{"id": "ada", "email": ADA}], channels=["email", "in_app"]
    )
    cw.recipients.upsert("t1", "ada", email="ada@new.example", locale="de", conn=db)
    drain(cw, conn=db)
    [email] = recorders["email"].sent
    assert email.recipient is not None
    assert (email.recipient.id, email.recipient.email, email.recipient.locale) == (
        "ada",
        "ada@new.example",
        "de",
    )
    [notice] = recorders["in_app"].sent
    assert notice.recipient is not None and notice.recipient.email == "ada@new.example"


def test_a_recipient_without_a_profile_gets_no_profile(
    cw: Chimeway, db: Conn, recorders: dict[str, RecordingAdapter]
) -> None:
    trigger(cw, db, Profiled, "k1", people=[{"id": "bob"}])
    drain(cw, conn=db)
    [notice] = recorders["in_app"].sent
    assert notice.recipient is None


def test_no_address_suppresses_the_channel_and_explains_why(
    cw: Chimeway, db: Conn, recorders: dict[str, RecordingAdapter]
) -> None:
    result = trigger(
        cw, db, Profiled, "k1", people=[{"id": "bob", "phone": PHONE}], channels=["email", "sms"]
    )
    email_id, sms_id = result.delivery_ids
    email = cw.delivery("t1", email_id, conn=db)
    assert (email.status, email.suppression_reason) == (
        DeliveryStatus.SUPPRESSED,
        DeliveryReason.NO_ADDRESS,
    )
    assert email.planning_context == {"needs": "email"}
    explained = cw.explain_delivery("t1", email_id, conn=db)
    assert explained.why == (
        "Not sent: suppressed (no_address): the email adapter needs the recipient's "
        "address, which their profile lacks."
    )
    moves = [(e.event, e.detail.get("reason")) for e in explained.timeline]
    assert ("delivery_suppressed", "no_address") in moves
    drain(cw, conn=db)
    assert recorders["email"].requests == []
    assert [r.delivery_id for r in recorders["sms"].sent] == [sms_id]


def test_a_suppressed_step_falls_back_through_on_outcome(
    make_tx_cw: Callable[..., Chimeway], db: Conn, recorders: dict[str, RecordingAdapter]
) -> None:
    flow = Workflow(
        key="reach",
        version=1,
        steps=[
            Step(
                "email", channel="email", progress=[OnOutcome(outcome="suppressed", to_step="sms")]
            ),
            Step("sms", channel="sms"),
        ],
    )
    cw = make_tx_cw(adapters=recorders, notifiers=[])
    notifier = ProfiledFlow(flow)
    result = trigger(cw, db, notifier, "k1", people=[{"id": "bob", "phone": PHONE}])
    [run_id] = result.run_ids
    explained = cw.workflows.explain("t1", run_id, conn=db)
    assert explained.current_step_name == "sms"
    assert len(result.delivery_ids) == 2  # the suppressed email and the sms it fell back to
    reasons = [t.reason for t in cw.workflows.list_traces("t1", run_id, conn=db)]
    assert "progressed_on_delivery_outcome" in reasons
    drain(cw, conn=db)
    [sms] = recorders["sms"].sent
    assert sms.recipient is not None and sms.recipient.phone == PHONE
    assert str(cw.workflows.explain("t1", run_id, conn=db).state) == "completed"


def test_a_later_step_suppressed_completes_the_run(
    make_tx_cw: Callable[..., Chimeway], db: Conn, recorders: dict[str, RecordingAdapter]
) -> None:
    flow = Workflow(
        key="notice_then_email",
        version=1,
        steps=[
            Step(
                "notice",
                channel="in_app",
                progress=[OnOutcome(outcome="delivered", to_step="email")],
            ),
            Step("email", channel="email"),
        ],
    )
    cw = make_tx_cw(adapters=recorders)
    result = trigger(cw, db, ProfiledFlow(flow), "k1", people=[{"id": "bob"}])
    drain(cw, conn=db)
    [run_id] = result.run_ids
    explained = cw.workflows.explain("t1", run_id, conn=db)
    assert (str(explained.state), explained.terminal_reason) == ("completed", "implicit_completion")
    [_, email_id] = cw.workflows.run_deliveries("t1", run_id, conn=db)
    assert cw.delivery("t1", email_id, conn=db).suppression_reason == DeliveryReason.NO_ADDRESS


def test_forget_erases_the_profile_and_rendered_content_but_keeps_the_story(
    cw: Chimeway, db: Conn
) -> None:
    result = trigger(
        cw, db, Profiled, "k1", people=[{"id": "ada", "email": ADA}], channels=["email", "in_app"]
    )
    trigger(cw, db, Profiled, "k2", people=[{"id": "bob", "email": "bob@example.com"}])
    drain(cw, conn=db)
    forgotten = cw.recipients.forget("t1", "ada", conn=db)
    assert (forgotten.profile_deleted, forgotten.notifications_erased) == (True, 1)
    assert forgotten.deliveries_erased == 2
    with pytest.raises(NotFound):
        cw.recipients.get("t1", "ada", conn=db)
    for delivery_id in result.delivery_ids:
        delivery = cw.delivery("t1", delivery_id, conn=db)
        assert delivery.render_data == {}
        assert delivery.status == DeliveryStatus.SUCCEEDED
        assert cw.explain_delivery("t1", delivery_id, conn=db).why.startswith("Sent:")
    rows = db.execute(
        "SELECT assigns, contents FROM chimeway_notifications WHERE recipient_id = 'ada'"
    ).fetchall()
    assert rows == [({}, {})]
    assert cw.recipients.get("t1", "bob", conn=db).email == "bob@example.com"
    kept = db.execute(
        "SELECT contents FROM chimeway_notifications WHERE recipient_id = 'bob'"
    ).fetchone()
    assert kept is not None and kept[0] != {}
    again = cw.recipients.forget("t1", "ada", conn=db)
    assert again.profile_deleted is False


def test_addresses_stay_out_of_logs_jobs_and_traces(
    make_tx_cw: Callable[..., Chimeway],
    db: Conn,
    recorders: dict[str, RecordingAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = Workflow(
        key="reach_logs",
        version=1,
        steps=[
            Step(
                "email", channel="email", progress=[OnOutcome(outcome="delivered", to_step="sms")]
            ),
            Step("sms", channel="sms"),
        ],
    )
    cw = make_tx_cw(adapters=recorders)
    caplog.set_level(logging.DEBUG, logger="chimeway")
    result = trigger(
        cw, db, ProfiledFlow(flow), "k1", people=[{"id": "ada", "email": ADA, "phone": PHONE}]
    )
    jobs = db.execute("SELECT args::text FROM procrastinate_jobs").fetchall()
    cw.recipients.upsert("t1", "ada", email="ada@other.example", conn=db)
    drain(cw, conn=db)
    assert len(recorders["sms"].sent) == 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    traces = db.execute("SELECT context::text FROM chimeway_workflow_transitions").fetchall()
    history = db.execute("SELECT context::text FROM chimeway_delivery_transitions").fetchall()
    for secret in (ADA, "ada@other.example", PHONE):
        assert secret not in logged
        assert secret not in str(jobs)
        assert secret not in str(traces) + str(history)
    assert result.run_ids


def test_a_real_smtp_server_receives_the_mail_at_the_profiles_address(
    make_tx_cw: Callable[..., Chimeway], db: Conn, smtp_server: SmtpServer
) -> None:
    smtp = SmtpAdapter(
        smtp_server.host, smtp_server.port, security="none", sender="App <noreply@app.test>"
    )
    cw = make_tx_cw(adapters={"email": smtp})
    try:
        result = trigger(
            cw, db, Profiled, "k1", people=[{"id": "ada", "email": ADA}], channels=["email"]
        )
        cw.recipients.upsert("t1", "ada", email="ada@moved.example", conn=db)
        drain(cw, conn=db)
    finally:
        smtp.close()
    [received] = smtp_server.mailbox.received
    assert received.rcpt_tos == ["ada@moved.example"]
    assert received.message["To"] == "ada@moved.example"
    assert received.message["Message-ID"] == f"<{result.delivery_ids[0]}@app.test>"
    assert cw.delivery("t1", result.delivery_ids[0], conn=db).status == DeliveryStatus.SUCCEEDED
