"""Policy end to end (design §13): preferences, the address check, caps and quiet hours
decided through planning (a trigger, a run's next step) and again at the claim (a change
made after planning wins), each decision explained in one sentence. Rolled-back
transactions (``tx_cw``, ``db``); throttles and deferrals that must come due need committed
rows and real time: tests/integration/test_throttles.py and tests/acceptance."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chimeway import (
    Chimeway,
    DeliveryReason,
    DeliveryStatus,
    InvalidArgument,
    OnOutcome,
    OrchestrationState,
    PreferenceScope,
    PreferenceUpdate,
    Step,
    Temporary,
    Triggered,
    Workflow,
)
from chimeway.engine import deliver, planning
from chimeway.testing import RecordingAdapter, drain
from tests.integration.conftest import Recorders
from tests.integration.notifiers import EMAIL, Welcome, WithWorkflow

Conn = Any
UTC = dt.UTC


class EmailRecorder(RecordingAdapter):
    """Sends to the profile's email address: a recipient without one is ``no_address``."""

    address = "email"


class SecurityAlert(Welcome):
    key = "security_alert"
    category = "security"
    critical = True


class SignInCode(Welcome):
    key = "sign_in_code"
    category = "security"
    critical = True
    bypass_quiet_hours = True


@pytest.fixture
def cw(make_tx_cw: Callable[..., Chimeway], adapters: Recorders) -> Chimeway:
    adapters["email"] = EmailRecorder()
    return make_tx_cw(adapters={c: adapters[c] for c in ("in_app", "email", "sms")})


def now_of(db: Conn) -> dt.datetime:
    value: dt.datetime = db.execute("SELECT now()").fetchone()[0]
    return value


def trigger(cw: Chimeway, db: Conn, key: str, notifier: Any = Welcome, **params: Any) -> Triggered:
    params.setdefault("users", ["ana"])
    params.setdefault("channels", ["email"])
    result = cw.trigger(notifier, params, tenant_id="t", idempotency_key=key, conn=db)
    assert isinstance(result, Triggered)
    return result


def quiet_now(cw: Chimeway, db: Conn, recipient: str | None = "ana") -> dt.datetime:
    """Quiet hours (in UTC) from an hour ago to an hour from now; the end instant."""
    now = now_of(db).astimezone(UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    cw.preferences.set_quiet_hours(
        "t", recipient, start.time(), end.time(), timezone="UTC", conn=db
    )
    return end


# -- the evaluation order, and every reason, at both checkpoints ---------------------------

Setup = Callable[[Chimeway, Conn], None]


def off(**scope: str) -> Setup:
    return lambda cw, db: cw.preferences.set("t", "ana", enabled=False, conn=db, **scope) and None


def default_off(**scope: str) -> Setup:
    return lambda cw, db: cw.preferences.set("t", None, enabled=False, conn=db, **scope) and None


def on(**scope: str) -> Setup:
    return lambda cw, db: cw.preferences.set("t", "ana", enabled=True, conn=db, **scope) and None


def capped(cw: Chimeway, db: Conn) -> None:
    cw.preferences.set_cap("t", "ana", 1, dt.timedelta(hours=1), conn=db)


def quiet(cw: Chimeway, db: Conn) -> None:
    quiet_now(cw, db)


def no_email(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", clear=["email"], conn=db)


@dataclass(frozen=True)
class Case:
    name: str
    setups: tuple[Setup, ...]
    expected: str  # a suppression reason, "deferred", or "sent"
    notifier: Any = Welcome
    #: The sentence explain_delivery starts its decision with.
    says: str = ""


CASES = [
    Case("nothing set", (), "sent"),
    Case(
        "channel off",
        (off(channel="email"),),
        "channel_disabled",
        says="Not sent: ana turned email off at",
    ),
    Case(
        "category off",
        (off(category="account"),),
        "category_disabled",
        says="Not sent: ana turned 'account' on every channel off at",
    ),
    Case(
        "category off on this channel",
        (off(category="account", channel="email"),),
        "category_disabled",
        says="Not sent: ana turned email for 'account' off at",
    ),
    Case(
        "workflow off",
        (off(workflow="welcome"),),
        "workflow_disabled",
        says="Not sent: ana turned the 'welcome' workflow on every channel off at",
    ),
    Case("no address", (no_email,), "no_address", says="Not sent: the email adapter needs"),
    Case("cap reached", (capped,), "delivery_cap_reached", says="Not sent: the cap of 1"),
    Case("quiet hours", (quiet,), "deferred", says="Held by quiet hours"),
    # The order: the first check that stops the delivery decides.
    Case(
        "channel before category",
        (off(category="account"), off(channel="email")),
        "channel_disabled",
    ),
    Case(
        "category before workflow",
        (off(workflow="welcome"), off(category="account")),
        "category_disabled",
    ),
    Case("workflow before address", (no_email, off(workflow="welcome")), "workflow_disabled"),
    Case("address before cap", (capped, no_email), "no_address"),
    Case("cap before quiet hours", (quiet, capped), "delivery_cap_reached"),
    # An on never lifts another kind's off; the recipient's own rule beats the default.
    Case(
        "on does not lift another kind",
        (off(category="account"), on(workflow="welcome")),
        "category_disabled",
    ),
    Case(
        "tenant default",
        (default_off(channel="email"),),
        "channel_disabled",
        says="Not sent: the tenant's default turns email off (set at",
    ),
    Case("recipient beats default", (default_off(channel="email"), on(channel="email")), "sent"),
    # Critical notifiers pass opt-outs and caps, not quiet hours unless they say so.
    Case(
        "critical passes opt-outs and caps",
        (off(channel="email"), capped),
        "sent",
        SecurityAlert,
        says="Sent although ana turned email off at",
    ),
    Case(
        "critical still waits for quiet hours",
        (off(channel="email"), quiet),
        "deferred",
        SecurityAlert,
    ),
    Case(
        "critical bypassing quiet hours", (off(channel="email"), capped, quiet), "sent", SignInCode
    ),
]


def outcome(cw: Chimeway, db: Conn, delivery_id: uuid.UUID) -> str:
    row = cw.delivery("t", delivery_id, conn=db)
    if row.status == DeliveryStatus.SUPPRESSED:
        return str(row.suppression_reason)
    if row.status == DeliveryStatus.PENDING and row.orchestration_state == "deferred":
        return "deferred"
    return "sent" if row.status == DeliveryStatus.SUCCEEDED else str(row.status)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_at_planning(cw: Chimeway, db: Conn, case: Case) -> None:
    cw.recipients.upsert("t", "ana", email="ana@example.test", conn=db)
    trigger(cw, db, "earlier", channels=["in_app"])  # fills the cap's window where there is one
    for setup in case.setups:
        setup(cw, db)
    [delivery_id] = trigger(cw, db, "k", case.notifier).delivery_ids
    drain(cw, conn=db)
    assert outcome(cw, db, delivery_id) == case.expected
    explained = cw.explain_delivery("t", delivery_id, conn=db)
    if case.says:
        assert any(d.startswith(case.says) for d in explained.decisions), explained.decisions
    if case.expected not in ("sent", "deferred"):
        assert explained.why.startswith("Not sent")
        assert len(explained.decisions) == 1


CLAIM_CASES = [c for c in CASES if c.name != "no address" and "address" not in c.name]


@pytest.mark.parametrize("case", CLAIM_CASES, ids=[c.name for c in CLAIM_CASES])
def test_at_the_claim_the_later_change_wins(cw: Chimeway, db: Conn, case: Case) -> None:
    cw.recipients.upsert("t", "ana", email="ana@example.test", conn=db)
    trigger(cw, db, "earlier", channels=["in_app"])
    drain(cw, conn=db)  # sent: in the cap's window where there is one
    [delivery_id] = trigger(cw, db, "k", case.notifier).delivery_ids
    assert cw.delivery("t", delivery_id, conn=db).orchestration_state == "ready"
    for setup in case.setups:  # after planning, before the claim
        setup(cw, db)
    drain(cw, conn=db)
    assert outcome(cw, db, delivery_id) == case.expected
    explained = cw.explain_delivery("t", delivery_id, conn=db)
    if case.says:
        [said] = [d for d in explained.decisions if d.startswith(case.says)]
        if case.expected != "sent":
            assert said.endswith("(checked again when it was about to be sent).")
    email = cw.engine.adapters["email"]
    assert isinstance(email, RecordingAdapter)
    assert [r.delivery_id for r in email.sent] == ([delivery_id] if case.expected == "sent" else [])


# -- details of each rule --------------------------------------------------------------------


def test_the_opt_out_sentence_names_the_rule_and_its_time(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", email="ana@example.test", conn=db)
    rule = cw.preferences.set(
        "t", "ana", enabled=False, channel="email", category="account", conn=db
    )
    [delivery_id] = trigger(cw, db, "k").delivery_ids
    explained = cw.explain_delivery("t", delivery_id, conn=db)
    at = rule.set_at.astimezone(UTC)
    assert explained.why == (
        f"Not sent: ana turned email for 'account' off at {at:%Y-%m-%d %H:%M}Z."
    )
    assert explained.decisions == [explained.why]
    [suppressed] = [e for e in explained.timeline if e.event == "delivery_suppressed"]
    assert suppressed.detail["owner"] == "recipient"
    assert suppressed.detail["source"] == "api"
    assert suppressed.detail["checkpoint"] == "planning"


def test_quiet_hours_hold_until_the_window_ends_with_a_job_then(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", email="ana@example.test", timezone="Europe/Paris", conn=db)
    end = quiet_now(cw, db)
    [delivery_id] = trigger(cw, db, "k").delivery_ids
    row = cw.delivery("t", delivery_id, conn=db)
    assert (row.status, row.orchestration_state) == ("pending", OrchestrationState.DEFERRED)
    assert row.next_eligible_at == end
    assert row.planning_reason == "quiet_hours"
    assert row.planning_context["timezone"] == "UTC"  # the window's own zone beats the profile
    scheduled = db.execute(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE args->>'delivery_id' = %s",
        [str(delivery_id)],
    ).fetchall()
    assert scheduled == [(end,)]
    drain(cw, conn=db)  # not due yet: nothing is sent
    assert cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.PENDING
    why = cw.explain_delivery("t", delivery_id, conn=db).why
    assert why.startswith("Not sent yet: Held by quiet hours ")
    assert f"({end:%H:%M}Z)" in why


def test_quiet_hours_are_read_in_the_recipients_zone(cw: Chimeway, db: Conn) -> None:
    """A tenant default without a zone: each recipient's own (UTC for one without)."""
    now = now_of(db).astimezone(UTC)
    ends = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=31)
    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))  # Asia/Kolkata has no DST
    start = (ends - dt.timedelta(hours=1)).astimezone(kolkata).time()
    end = ends.astimezone(kolkata).time()
    cw.preferences.set_quiet_hours("t", None, start, end, conn=db)
    cw.recipients.upsert("t", "ana", email="a@example.test", timezone="Asia/Kolkata", conn=db)
    cw.recipients.upsert("t", "bob", email="b@example.test", conn=db)
    ana, bob = trigger(cw, db, "k", users=["ana", "bob"]).delivery_ids
    held = cw.delivery("t", ana, conn=db)
    assert held.orchestration_state == OrchestrationState.DEFERRED
    assert held.next_eligible_at == ends
    assert held.planning_context["owner"] == "tenant"
    assert cw.delivery("t", bob, conn=db).orchestration_state == OrchestrationState.READY
    said = cw.explain_delivery("t", ana, conn=db).decisions
    assert said == [
        f"Held by the tenant's default quiet hours {start:%H:%M}\N{EN DASH}{end:%H:%M} "
        f"Asia/Kolkata until {ends.astimezone(kolkata):%Y-%m-%d %H:%M} local ({ends:%H:%M}Z)."
    ]


def test_a_recipient_can_have_no_quiet_hours_whatever_the_default(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", conn=db)
    quiet_now(cw, db, recipient=None)
    cw.preferences.set_quiet_hours("t", "ana", None, None, conn=db)
    [delivery_id] = trigger(cw, db, "k").delivery_ids
    assert cw.delivery("t", delivery_id, conn=db).orchestration_state == "ready"
    assert cw.preferences.reset_quiet_hours("t", "ana", conn=db)
    [later] = trigger(cw, db, "k2").delivery_ids
    assert cw.delivery("t", later, conn=db).orchestration_state == "deferred"


def test_caps_count_the_batch_itself_and_only_what_was_not_suppressed(
    cw: Chimeway, db: Conn
) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", conn=db)
    cw.preferences.set_cap("t", None, 2, dt.timedelta(hours=1), channel="email", conn=db)
    cw.preferences.set("t", "ana", enabled=False, workflow="first", conn=db)

    class First(Welcome):
        key = "first"

    [opted_out] = trigger(cw, db, "k0", First).delivery_ids  # suppressed: not counted
    in_app, email_1 = trigger(cw, db, "k1", channels=["in_app", "email"]).delivery_ids
    [email_2] = trigger(cw, db, "k2").delivery_ids
    [email_3] = trigger(cw, db, "k3").delivery_ids
    assert [outcome(cw, db, d) for d in (opted_out, in_app, email_1, email_2, email_3)] == [
        "workflow_disabled",
        "pending",  # another channel: not capped
        "pending",
        "pending",
        "delivery_cap_reached",
    ]
    explained = cw.explain_delivery("t", email_3, conn=db)
    assert explained.why == (
        "Not sent: the tenant's default cap of 2 deliveries per 1 hour on email for ana "
        "was reached (2 already in the window)."
    )
    # A fan-out to one recipient on many channels counts in order, within the batch.
    cw.preferences.set_cap("t", "bob", 2, dt.timedelta(hours=1), conn=db)

    class Fan(Welcome):
        def render(self, params: Any, recipient: Any, channel: str) -> dict[str, Any]:
            return (
                {"text_body": "Hi"}
                if channel == "sms"
                else super().render(params, recipient, channel)
            )

    cw.recipients.upsert("t", "bob", email="b@example.test", conn=db)
    fanned = trigger(cw, db, "k4", Fan, users=["bob"], channels=["in_app", "sms", "email"])
    assert [outcome(cw, db, d) for d in fanned.delivery_ids][2] == "delivery_cap_reached"


def test_a_lowered_cap_suppresses_at_the_claim(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", conn=db)
    first = trigger(cw, db, "k1").delivery_ids[0]
    second = trigger(cw, db, "k2").delivery_ids[0]
    cw.preferences.set_cap("t", "ana", 1, dt.timedelta(hours=1), conn=db)
    drain(cw, conn=db)  # the first job first: of the two, the first claimed goes
    assert (outcome(cw, db, first), outcome(cw, db, second)) == ("sent", "delivery_cap_reached")


def test_a_retry_stops_when_the_recipient_opts_out_after_the_first_attempt(
    cw: Chimeway, db: Conn, adapters: Recorders
) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", conn=db)
    adapters["email"].then(Temporary("try later"))
    [delivery_id] = trigger(cw, db, "k").delivery_ids
    [first] = deliver.deliver_in(cw.engine, db, [delivery_id])  # the first attempt only
    assert first.action == "retry_scheduled"
    cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    drain(cw, conn=db)  # the retry's job: policy stops it at the claim
    row = cw.delivery("t", delivery_id, conn=db)
    assert (row.status, row.suppression_reason) == (
        DeliveryStatus.SUPPRESSED,
        DeliveryReason.CHANNEL_DISABLED,
    )
    assert len(adapters["email"].requests) == 1
    moves = [
        (m.event, m.detail["from"])
        for m in cw.explain_delivery("t", delivery_id, conn=db).timeline
        if m.event == "delivery_suppressed"
    ]
    assert moves == [("delivery_suppressed", "failed")]


# -- workflows: the outcome `suppressed` --------------------------------------------------------

FALLBACK = Workflow(
    key="reach_ana",
    version=1,
    steps=[
        Step("email", channel="email", progress=[OnOutcome(outcome="suppressed", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


@pytest.mark.parametrize("when", ["planning", "claim"])
def test_an_email_opt_out_falls_back_to_sms(
    cw: Chimeway, db: Conn, adapters: Recorders, when: str
) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", phone="+15005550006", conn=db)
    if when == "planning":
        cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    result = trigger(cw, db, "k", WithWorkflow(FALLBACK))
    if when == "claim":
        cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    drain(cw, conn=db)
    [run_id] = result.run_ids
    run = cw.workflows.explain("t", run_id, conn=db)
    assert (str(run.state), run.current_step_name) == ("completed", "sms")
    assert adapters["email"].requests == []
    assert [r.channel for r in adapters["sms"].sent] == ["sms"]
    email_id, sms_id = cw.workflows.run_deliveries("t", run_id, conn=db)
    assert outcome(cw, db, email_id) == "channel_disabled"
    assert outcome(cw, db, sms_id) == "sent"
    # The later step inherits the policy facts of the first: its workflow rule applies.
    sms = cw.delivery("t", sms_id, conn=db)
    assert (sms.workflow_key, sms.category) == ("reach_ana", "account")


def test_a_later_step_is_decided_by_its_workflow_rules(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", email="a@example.test", conn=db)
    cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    cw.preferences.set("t", "ana", enabled=False, workflow="reach_ana", channel="sms", conn=db)
    result = trigger(cw, db, "k", WithWorkflow(FALLBACK))
    drain(cw, conn=db)
    _, sms_id = cw.workflows.run_deliveries("t", result.run_ids[0], conn=db)
    assert outcome(cw, db, sms_id) == "workflow_disabled"
    run = cw.workflows.explain("t", result.run_ids[0], conn=db)
    assert str(run.state) == "completed"


# -- the API -------------------------------------------------------------------------------------


def test_set_get_reset_and_the_bulk_form(cw: Chimeway, db: Conn) -> None:
    rule = cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    assert (rule.recipient_id, rule.channel, rule.enabled, rule.source) == (
        "ana",
        "email",
        False,
        "api",
    )
    rows = cw.preferences.set_many(
        "t",
        [
            PreferenceUpdate("ana", PreferenceScope(category="marketing"), False),
            PreferenceUpdate("bob", PreferenceScope("sms", workflow="digest"), False),
            PreferenceUpdate(None, PreferenceScope("push"), False),
            PreferenceUpdate("ana", PreferenceScope("email"), True),  # replaces the rule above
        ],
        conn=db,
    )
    assert len(rows) == 4
    quiet = cw.preferences.set_quiet_hours("t", "ana", dt.time(22), dt.time(7), conn=db)
    assert (quiet.start, quiet.end, quiet.timezone) == (dt.time(22), dt.time(7), None)
    cap = cw.preferences.set_cap("t", None, 10, dt.timedelta(days=1), conn=db)
    assert (cap.recipient_id, cap.max_count, cap.per) == (None, 10, dt.timedelta(days=1))

    got = cw.preferences.get("t", "ana", conn=db)
    assert {(r.channel, r.category, r.enabled) for r in got.rules} == {
        ("email", None, True),
        (None, "marketing", False),
    }
    assert [(r.channel, r.enabled) for r in got.default_rules] == [("push", False)]
    assert got.quiet_hours == quiet and got.default_quiet_hours is None
    assert got.caps == [] and got.default_caps == [cap]
    tenant = cw.preferences.get("t", None, conn=db)
    assert tenant.rules == [] and tenant.default_rules == got.default_rules

    assert cw.preferences.reset("t", "ana", category="marketing", conn=db)
    assert not cw.preferences.reset("t", "ana", category="marketing", conn=db)
    assert cw.preferences.reset_cap("t", None, conn=db)
    assert [r.category for r in cw.preferences.get("t", "ana", conn=db).rules] == [None]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda cw, db: cw.preferences.set("t", "ana", enabled=False, conn=db),
            "PreferenceScope: give a channel, a category or a workflow",
        ),
        (
            lambda cw, db: cw.preferences.set("", "ana", enabled=False, channel="e", conn=db),
            "tenant_id must be a non-blank string",
        ),
        (
            lambda cw, db: cw.preferences.set("t", "ana", enabled="no", channel="email", conn=db),  # type: ignore[arg-type]
            "enabled must be True or False",
        ),
        (
            lambda cw, db: cw.preferences.set(
                "t", "ana", enabled=False, category="a", workflow="b", conn=db
            ),
            "a rule is about a category or a workflow, not both",
        ),
        (
            lambda cw, db: cw.preferences.set_many(
                "t", [PreferenceUpdate("a", PreferenceScope("email"), False)] * 2, conn=db
            ),
            "updates[1]: the same recipient and scope appear twice",
        ),
        (
            lambda cw, db: cw.preferences.set_quiet_hours("t", "a", dt.time(7), None, conn=db),
            "start and end: give both",
        ),
        (
            lambda cw, db: cw.preferences.set_quiet_hours(
                "t", "a", dt.time(7), dt.time(7), conn=db
            ),
            "a window needs two different times",
        ),
        (
            lambda cw, db: cw.preferences.set_quiet_hours(
                "t", "a", dt.time(22), dt.time(7), timezone="Mars/Olympus", conn=db
            ),
            "timezone: 'Mars/Olympus' is not a known IANA time zone",
        ),
        (
            lambda cw, db: cw.preferences.set_cap("t", "a", 0, dt.timedelta(hours=1), conn=db),
            "CapRule.max_count: must be at least 1",
        ),
        (
            lambda cw, db: cw.preferences.set_cap("t", "a", 3, None, conn=db),
            "per: a cap needs its window",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    cw: Chimeway, db: Conn, call: Callable[[Chimeway, Conn], object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        call(cw, db)
    assert message in raised.value.message


# -- quiet hours across real DST transitions, through planning -------------------------------

Z = UTC


@pytest.mark.parametrize(
    ("zone", "start", "end", "planned_at", "held_until", "local_end"),
    [
        # New York springs forward on 8 March 2026 (02:00 EST -> 03:00 EDT): a 23-hour day.
        (
            "America/New_York",
            "22:00",
            "07:00",
            dt.datetime(2026, 3, 8, 6, 30, tzinfo=Z),
            dt.datetime(2026, 3, 8, 11, 0, tzinfo=Z),
            "2026-03-08 07:00",
        ),
        # ... and 02:30 does not exist that night: the first valid instant after the gap.
        (
            "America/New_York",
            "01:00",
            "02:30",
            dt.datetime(2026, 3, 8, 6, 45, tzinfo=Z),
            dt.datetime(2026, 3, 8, 7, 0, tzinfo=Z),
            "2026-03-08 03:00",
        ),
        # New York falls back on 1 November 2026: 01:30 occurs twice; the end takes the later.
        (
            "America/New_York",
            "22:00",
            "01:30",
            dt.datetime(2026, 11, 1, 5, 45, tzinfo=Z),
            dt.datetime(2026, 11, 1, 6, 30, tzinfo=Z),
            "2026-11-01 01:30",
        ),
        # ... and a window that began at the first 01:30 (EDT) holds at 01:15 EST.
        (
            "America/New_York",
            "01:30",
            "05:00",
            dt.datetime(2026, 11, 1, 6, 15, tzinfo=Z),
            dt.datetime(2026, 11, 1, 10, 0, tzinfo=Z),
            "2026-11-01 05:00",
        ),
        # London springs forward on 29 March 2026 (01:00 GMT -> 02:00 BST): 01:30 is skipped.
        (
            "Europe/London",
            "23:00",
            "01:30",
            dt.datetime(2026, 3, 29, 0, 30, tzinfo=Z),
            dt.datetime(2026, 3, 29, 1, 0, tzinfo=Z),
            "2026-03-29 02:00",
        ),
        # London falls back on 25 October 2026: the later 01:30, in GMT.
        (
            "Europe/London",
            "00:00",
            "01:30",
            dt.datetime(2026, 10, 24, 23, 45, tzinfo=Z),
            dt.datetime(2026, 10, 25, 1, 30, tzinfo=Z),
            "2026-10-25 01:30",
        ),
        # Lord Howe Island moves by 30 minutes: back on 5 April 2026 (02:00 -> 01:30) ...
        (
            "Australia/Lord_Howe",
            "22:00",
            "07:00",
            dt.datetime(2026, 4, 4, 20, 15, tzinfo=Z),
            dt.datetime(2026, 4, 4, 20, 30, tzinfo=Z),
            "2026-04-05 07:00",
        ),
        # ... and forward on 4 October 2026 (02:00 -> 02:30): 02:15 does not exist.
        (
            "Australia/Lord_Howe",
            "01:00",
            "02:15",
            dt.datetime(2026, 10, 3, 15, 0, tzinfo=Z),
            dt.datetime(2026, 10, 3, 15, 30, tzinfo=Z),
            "2026-10-04 02:30",
        ),
        # A zone without DST, overnight, planned exactly at the window's start (inclusive).
        (
            "Asia/Kolkata",
            "22:00",
            "07:00",
            dt.datetime(2026, 3, 7, 16, 30, tzinfo=Z),
            dt.datetime(2026, 3, 8, 1, 30, tzinfo=Z),
            "2026-03-08 07:00",
        ),
        # Overnight in summer; outside the window; exactly at its (exclusive) end.
        (
            "Europe/Paris",
            "22:00",
            "07:00",
            dt.datetime(2026, 6, 1, 21, 10, tzinfo=Z),
            dt.datetime(2026, 6, 2, 5, 0, tzinfo=Z),
            "2026-06-02 07:00",
        ),
        ("Europe/Paris", "22:00", "07:00", dt.datetime(2026, 6, 1, 19, 59, tzinfo=Z), None, None),
        ("Europe/Paris", "22:00", "07:00", dt.datetime(2026, 6, 2, 5, 0, tzinfo=Z), None, None),
    ],
)
def test_quiet_hours_across_dst_through_planning(
    cw: Chimeway,
    db: Conn,
    zone: str,
    start: str,
    end: str,
    planned_at: dt.datetime,
    held_until: dt.datetime | None,
    local_end: str | None,
) -> None:
    """The window is read in the recipient's profile zone; planning runs at ``planned_at``
    (standing for the database's clock) and holds the delivery, with a job, until the end."""
    cw.recipients.upsert("t", "ana", email="a@example.test", timezone=zone, conn=db)
    cw.preferences.set_quiet_hours(
        "t", "ana", dt.time.fromisoformat(start), dt.time.fromisoformat(end), conn=db
    )
    [notification_id] = trigger(cw, db, "k", channels=["in_app"]).notification_ids
    [row] = planning.plan(
        cw.engine,
        db,
        [
            planning.DeliveryPlan(
                notification_id, "t", "ana", "email", EMAIL, workflow_key="welcome"
            )
        ],
        now=planned_at,
    )
    assert row.next_eligible_at == held_until
    jobs = db.execute(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE args->>'delivery_id' = %s",
        [str(row.id)],
    ).fetchall()
    if held_until is None:
        assert row.orchestration_state == OrchestrationState.READY
        assert jobs == [(None,)]
        return
    assert row.orchestration_state == OrchestrationState.DEFERRED
    assert jobs == [(held_until,)]
    why = cw.explain_delivery("t", row.id, conn=db).why
    assert why == (
        f"Not sent yet: Held by quiet hours {start}\N{EN DASH}{end} {zone} until "
        f"{local_end} local ({held_until:%H:%M}Z)."
    )
