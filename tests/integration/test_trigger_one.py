"""The one-statement trigger (chimeway/store/triggers.py): a trigger that plans one delivery
no policy can apply to writes exactly the rows, history and job the planning path writes;
every kind of policy (and a missing address, and a batch) sends it down the planning path
with nothing written twice; idempotency keys behave as on the planning path."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import pq

from chimeway import (
    Batch,
    Chimeway,
    DeliveryStatus,
    Duplicate,
    OnOutcome,
    Step,
    Triggered,
    Workflow,
)
from chimeway import db as db_module
from chimeway.engine import connections
from chimeway.engine import trigger as trigger_module
from chimeway.store import policy, triggers
from chimeway.testing import RecordingAdapter
from tests.integration.conftest import Recorders, concurrently, count, waited_round_trips
from tests.integration.notifiers import Welcome, WithWorkflow, in_app

Conn = psycopg.Connection[Any]

TWO_STEP = Workflow(
    "two_step",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="mail")]),
        Step("mail", "email"),
    ],
)
EMAIL_FIRST = Workflow("email_first", 1, [Step("mail", "email")])
BATCHED = Workflow("batched", 1, [Batch(window=dt.timedelta(minutes=5)), Step("notice", "in_app")])


class EmailRecorder(RecordingAdapter):
    """Sends to the profile's email address."""

    address = "email"


class WithProfile(Welcome):
    """One recipient per user, each with an inline email."""

    key = "with_profile"

    def recipients(self, params: dict[str, Any]) -> list[Any]:
        return [{"id": u, "email": f"{u}@example.test", "locale": "fr"} for u in params["users"]]


class Batched(WithWorkflow):
    key = "batched"

    def __init__(self) -> None:
        super().__init__(BATCHED)

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Any, channel: str
    ) -> dict[str, Any]:
        return in_app(f"{len(items)} new")


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[triggers.Written]:
    """What each one-statement write returned (the real function that reads its row, on
    every path, observed)."""
    results: list[triggers.Written] = []
    real = triggers.read

    def observed(cur: Any) -> triggers.Written:
        written = real(cur)
        results.append(written)
        return written

    monkeypatch.setattr(triggers, "read", observed)
    return results


@pytest.fixture
def cw(make_tx_cw: Callable[..., Chimeway], adapters: Recorders) -> Chimeway:
    adapters["email"] = EmailRecorder()
    return make_tx_cw(adapters={c: adapters[c] for c in ("in_app", "email", "sms")})


@pytest.fixture
def planning_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """Switch the one-statement form off (the planning path) or on again."""
    real = trigger_module._one

    def switch(off: bool) -> None:
        monkeypatch.setattr(trigger_module, "_one", (lambda *a, **k: None) if off else real)

    yield switch


# -- the rows of both paths -----------------------------------------------------------------


def _normal(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            # A trace id is new per trigger when a tracer provider is set (an earlier test
            # may have set the global one): whether it is there is what must match.
            k: (
                v is None
                if k.endswith("_at")
                else (v is not None if k == "traceparent" else _normal(v, names))
            )
            for k, v in value.items()
            if k not in ("idempotency_key", "id") or (isinstance(v, str) and v in names)
        }
    if isinstance(value, list):
        return [_normal(v, names) for v in value]
    if isinstance(value, str):
        for raw, name in names.items():
            value = value.replace(raw, name)
    return value


def rows_of(db: Conn, result: Triggered) -> dict[str, Any]:
    """Every row the trigger wrote (jobs included), with its ids named and its instants
    reduced to whether they are set."""
    [notification_id] = result.notification_ids
    [delivery_id] = result.delivery_ids
    names = {str(result.event_id): "<event>", str(notification_id): "<notification>"}
    names[str(delivery_id)] = "<delivery>"
    for run_id in result.run_ids:
        names[str(run_id)] = "<run>"
    queries = {
        "event": ("SELECT to_jsonb(t) FROM chimeway_events t WHERE id = %s", result.event_id),
        "notification": (
            "SELECT to_jsonb(t) FROM chimeway_notifications t WHERE event_id = %s",
            result.event_id,
        ),
        "runs": (
            "SELECT to_jsonb(t) FROM chimeway_workflow_runs t WHERE notification_id = %s",
            notification_id,
        ),
        "run_history": (
            "SELECT to_jsonb(t) - 'id' FROM chimeway_workflow_transitions t "
            "JOIN chimeway_workflow_runs r ON r.id = t.run_id WHERE r.notification_id = %s "
            "ORDER BY t.id",
            notification_id,
        ),
        "deliveries": (
            "SELECT to_jsonb(t) FROM chimeway_deliveries t WHERE notification_id = %s",
            notification_id,
        ),
        "delivery_history": (
            "SELECT to_jsonb(t) - 'id' FROM chimeway_delivery_transitions t "
            "WHERE delivery_id = %s ORDER BY t.id",
            delivery_id,
        ),
        "jobs": (
            "SELECT to_jsonb(t) - 'id' FROM procrastinate_jobs t WHERE args::text LIKE %s",
            f"%{delivery_id}%",
        ),
    }
    found = {
        what: [_normal(r[0], names) for r in db.execute(sql.encode(), [arg]).fetchall()]
        for what, (sql, arg) in queries.items()
    }
    found["profile"] = [
        _normal(r[0], names)
        for r in db.execute(
            "SELECT to_jsonb(t) FROM chimeway_recipients t WHERE recipient_id = 'ana'"
        )
    ]
    return found


#: name, notifier, params, and the parts of the statement each leaves out: the read of the
#: address (the channel needs none), the profile's upsert (no profile field given), the run
#: (no workflow).
CASES: list[tuple[str, Any, dict[str, Any], tuple[str, ...]]] = [
    ("plain", Welcome, {"users": ["ana"]}, ("address", "profile", "workflow")),
    ("plain email", Welcome, {"users": ["ana"], "channels": ["email"]}, ("profile", "workflow")),
    ("workflow", WithWorkflow(TWO_STEP), {"users": ["ana"]}, ("address", "profile")),
    ("workflow by email", WithWorkflow(EMAIL_FIRST), {"users": ["ana"]}, ("profile",)),
    ("inline profile", WithProfile, {"users": ["ana"], "channels": ["email"]}, ("workflow",)),
    ("inline profile in-app", WithProfile, {"users": ["ana"]}, ("address", "workflow")),
    # Rules that turn things on never change a verdict: not a policy that can apply.
    ("opt-ins", Welcome, {"users": ["ana"], "channels": ["email"]}, ("profile", "workflow")),
]


def _opt_in(cw: Chimeway, db: Conn) -> None:
    """Every kind of opt-in the recipient and the tenant can set for ana's email."""
    cw.preferences.set("t", "ana", enabled=True, channel="email", conn=db)
    cw.preferences.set("t", "ana", enabled=True, category="account", conn=db)
    cw.preferences.set("t", None, enabled=True, channel="email", conn=db)
    cw.preferences.set("t", None, enabled=True, workflow="welcome", conn=db)


@pytest.mark.parametrize("caller", [True, False], ids=["caller's transaction", "autocommit"])
@pytest.mark.parametrize(
    ("name", "notifier", "params", "left_out"), CASES, ids=[c[0] for c in CASES]
)
def test_one_statement_writes_what_planning_writes(
    make_cw: Callable[..., Chimeway],
    adapters: Recorders,
    committed_db: str,
    seen: list[triggers.Written],
    planning_only: Callable[[bool], None],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    notifier: Any,
    params: dict[str, Any],
    left_out: tuple[str, ...],
    caller: bool,
) -> None:
    adapters["email"] = EmailRecorder()
    cw = make_cw(adapters={c: adapters[c] for c in ("in_app", "email", "sms")})
    # A first trigger stores the workflow's definition (the one-statement form needs it
    # known committed).
    cw.trigger(notifier, params, tenant_id="t", idempotency_key="warm")

    with psycopg.connect(committed_db) as db:

        def fire(key: str) -> Triggered:
            db.execute("DELETE FROM chimeway_recipients")
            if not name.startswith("inline profile"):
                cw.recipients.upsert("t", "ana", email="ana@example.test", conn=db)
            if name == "opt-ins":
                _opt_in(cw, db)
            db.commit()
            result = cw.trigger(
                notifier, params, tenant_id="t", idempotency_key=key, conn=db if caller else None
            )
            db.commit()
            assert isinstance(result, Triggered)
            return result

        seen.clear()
        planning_only(True)
        planned = fire("planned")
        assert seen == []
        before = rows_of(db, planned)
        planning_only(False)
        sent: list[str] = []
        real_query = db_module.query

        def query(name: str, without: Any = ()) -> Any:
            sql = real_query(name, without)
            if name == "trigger_write_one":
                sent.append(sql)
            return sql

        monkeypatch.setattr(db_module, "query", query)
        one = fire("one")
        assert [(w.free, w.event_id, w.jobs) for w in seen] == [(True, one.event_id, 1)]
        assert sent == [real_query("trigger_write_one", left_out)]
        after = rows_of(db, one)
    assert after == before
    assert len(after["deliveries"]) == len(after["jobs"]) == 1
    assert after["deliveries"][0]["status"] == "pending"
    assert len(after["runs"]) == (0 if "workflow" in left_out else 1)
    assert len(after["run_history"]) == (0 if "workflow" in left_out else 2)
    assert len(after["profile"]) == 1


def test_autocommit_write_commits_alone_and_returns_its_connection(
    make_cw: Callable[..., Chimeway], committed_db: str, seen: list[triggers.Written]
) -> None:
    cw = make_cw()
    result = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    assert [w.free for w in seen] == [True]
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 1
    with cw.engine.pool.connection() as conn:
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    again = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="k")
    assert again == Duplicate(result.event_id)
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries") == 1
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 1


# -- every kind of policy takes the planning path ----------------------------------------

Setup = Callable[[Chimeway, Conn], None]


def _quiet(recipient: str | None) -> Setup:
    def setup(cw: Chimeway, db: Conn) -> None:
        now: dt.datetime = db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        now = now.astimezone(dt.UTC)
        start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
        cw.preferences.set_quiet_hours(
            "t", recipient, start.time(), end.time(), timezone="UTC", conn=db
        )

    return setup


def _pref(recipient: str | None, enabled: bool, **scope: str) -> Setup:
    return lambda cw, db: (
        cw.preferences.set("t", recipient, enabled=enabled, conn=db, **scope) and None
    )


def _cap(recipient: str | None, **scope: str) -> Setup:
    return lambda cw, db: (
        cw.preferences.set_cap("t", recipient, 1, dt.timedelta(hours=1), conn=db, **scope) and None
    )


def _opt_out_opted_in(cw: Chimeway, db: Conn) -> None:
    """The tenant turns email off, ana turns it on again: her rule decides, but only
    planning reads which rule that is."""
    cw.preferences.set("t", None, enabled=False, channel="email", conn=db)
    cw.preferences.set("t", "ana", enabled=True, channel="email", conn=db)


def _no_email(cw: Chimeway, db: Conn) -> None:
    cw.recipients.upsert("t", "ana", clear=["email"], conn=db)


POLICIES: list[tuple[str, Setup, str]] = [
    ("channel off", _pref("ana", False, channel="email"), "channel_disabled"),
    ("tenant channel off", _pref(None, False, channel="email"), "channel_disabled"),
    ("category off", _pref("ana", False, category="account"), "category_disabled"),
    ("workflow off", _pref("ana", False, workflow="welcome"), "workflow_disabled"),
    ("an opt-in over a tenant opt-out", _opt_out_opted_in, "pending"),
    ("cap", _cap("ana"), "delivery_cap_reached"),
    ("tenant cap on the channel", _cap(None, channel="email"), "delivery_cap_reached"),
    ("quiet hours", _quiet("ana"), "deferred"),
    ("tenant quiet hours", _quiet(None), "deferred"),
    ("no address", _no_email, "no_address"),
]


@pytest.mark.parametrize(("name", "setup", "expected"), POLICIES, ids=[p[0] for p in POLICIES])
def test_any_policy_takes_the_planning_path(
    cw: Chimeway,
    db: Conn,
    seen: list[triggers.Written],
    name: str,
    setup: Setup,
    expected: str,
) -> None:
    cw.recipients.upsert("t", "ana", email="ana@example.test", conn=db)
    params = {"users": ["ana"], "channels": ["email"]}
    first = cw.trigger(Welcome, params, tenant_id="t", idempotency_key="k0", conn=db)
    assert [w.free for w in seen] == [True]  # nothing set yet; it fills a cap's window
    setup(cw, db)
    seen.clear()
    result = cw.trigger(Welcome, params, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered) and isinstance(first, Triggered)
    # The guard wrote nothing: the planning path's own event insert was not a duplicate.
    assert [(w.free, w.event_id, w.notification_id, w.jobs) for w in seen] == [
        (False, None, None, 0)
    ]
    assert count(db, "SELECT count(*) FROM chimeway_events") == 2
    assert count(db, "SELECT count(*) FROM chimeway_notifications") == 2
    [delivery_id] = result.delivery_ids
    row = cw.delivery("t", delivery_id, conn=db)
    if row.status == DeliveryStatus.SUPPRESSED:
        assert str(row.suppression_reason) == expected
    elif row.orchestration_state == "deferred":
        assert expected == "deferred"
    else:
        assert expected == str(row.status)
    jobs = count(
        db, "SELECT count(*) FROM procrastinate_jobs WHERE args::text LIKE %s", f"%{delivery_id}%"
    )
    assert jobs == (0 if row.status == DeliveryStatus.SUPPRESSED else 1)


def test_a_batch_and_several_deliveries_take_the_planning_path(
    cw: Chimeway, db: Conn, seen: list[triggers.Written]
) -> None:
    batched = cw.trigger(Batched(), {"users": ["ana"]}, tenant_id="t", idempotency_key="b", conn=db)
    two = cw.trigger(
        Welcome,
        {"users": ["ana"], "channels": ["in_app", "email"]},
        tenant_id="t",
        idempotency_key="two",
        conn=db,
    )
    many = cw.trigger(
        Welcome, {"users": ["ana", "bo"]}, tenant_id="t", idempotency_key="m", conn=db
    )
    assert seen == []
    assert isinstance(batched, Triggered) and isinstance(two, Triggered)
    assert isinstance(many, Triggered)
    assert count(db, "SELECT count(*) FROM chimeway_digests") == 1
    assert len(two.delivery_ids) == len(many.delivery_ids) == 2


def test_planning_plans_a_lone_delivery_with_the_facts_policy_decides_on(cw: Chimeway) -> None:
    from chimeway.engine import planning
    from chimeway.notifiers import plan_notification, resolve_notifier, resolve_recipients

    def plans(notifier: Any, params: dict[str, Any]) -> tuple[Any, list[Any]]:
        resolved = resolve_notifier(notifier)
        return resolved, [
            plan_notification(resolved, params, r, cw.engine.content_schemas)
            for r in resolve_recipients(resolved, params)
        ]

    email = plans(WithProfile, {"users": ["ana"], "channels": ["email"]})
    lone = planning.lone(cw.engine, *email)
    assert lone is not None
    assert (lone.definition, lone.channel, lone.needs) == (None, "email", "email")
    assert lone.max_attempts == cw.engine.retry_policy("email").max_attempts
    assert lone.workflow_key == "with_profile"
    flow = plans(WithWorkflow(TWO_STEP), {"users": ["ana"]})
    assert planning.lone(cw.engine, *flow) is None  # its definition is not known committed
    assert planning.lone(cw.engine, *plans(Welcome, {"users": ["ana", "bo"]})) is None
    assert planning.lone(cw.engine, *plans(Batched(), {"users": ["ana"]})) is None


# -- idempotency --------------------------------------------------------------------------


def test_a_repeated_key_is_a_duplicate_and_writes_nothing(
    cw: Chimeway, db: Conn, seen: list[triggers.Written]
) -> None:
    first = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="k", conn=db)
    again = cw.trigger(Welcome, {"users": ["bo"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(first, Triggered)
    assert again == Duplicate(first.event_id)
    assert [(w.free, w.event_id is None) for w in seen] == [(True, False), (True, True)]
    for table in ("chimeway_notifications", "chimeway_deliveries", "procrastinate_jobs"):
        assert count(db, f"SELECT count(*) FROM {table}") == 1
    # The key is the tenant's: another tenant's same key is a new event.
    other = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t2", idempotency_key="k", conn=db)
    assert isinstance(other, Triggered)


def test_concurrent_triggers_with_one_key_write_once(
    make_cw: Callable[..., Chimeway], committed_db: str, seen: list[triggers.Written]
) -> None:
    cw = make_cw()
    cw.engine.resize_pool(9)
    results = concurrently(
        8,
        lambda: cw.trigger(
            Welcome, {"users": [f"u{uuid.uuid4().hex[:6]}"]}, tenant_id="t", idempotency_key="k"
        ),
    )
    triggered = [r for r in results if isinstance(r, Triggered)]
    assert len(triggered) == 1
    assert all(r == Duplicate(triggered[0].event_id) for r in results if r not in triggered)
    assert len(seen) == 8 and all(w.free for w in seen)
    for table in ("chimeway_events", "chimeway_notifications", "chimeway_deliveries"):
        assert count(committed_db, f"SELECT count(*) FROM {table}") == 1
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 1


# -- in the caller's transaction: one round trip -------------------------------------------


@pytest.mark.parametrize("opened", [True, False], ids=["open transaction", "idle connection"])
def test_in_the_caller_s_transaction_the_statement_takes_one_round_trip(
    make_cw: Callable[..., Chimeway], committed_db: str, seen: list[triggers.Written], opened: bool
) -> None:
    cw = make_cw()
    cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="warm")
    with psycopg.connect(committed_db) as conn:
        if opened:
            conn.execute("SELECT 1")  # the app's own work opened the transaction
        trips = waited_round_trips(
            conn,
            lambda: cw.trigger(
                Welcome, {"users": ["bo"]}, tenant_id="t", idempotency_key="k", conn=conn
            ),
        )
        # With the transaction open, the savepoint and its release go with the statement; on
        # an idle connection psycopg's BEGIN goes first and is waited for.
        assert trips == (1 if opened else 2)
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 1  # not yet
        conn.commit()
    assert [w.free for w in seen] == [True, True]
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 2
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 2


@pytest.mark.parametrize("opened", [True, False], ids=["open transaction", "idle connection"])
def test_a_failing_statement_leaves_nothing_and_the_caller_s_transaction_as_it_was(
    make_cw: Callable[..., Chimeway], committed_db: str, opened: bool
) -> None:
    cw = make_cw()
    with psycopg.connect(committed_db, autocommit=True) as admin:
        admin.execute("CREATE TABLE app_orders (id text PRIMARY KEY)")
        # The statement's delivery insert fails after its event, notification and run rows.
        admin.execute(
            "ALTER TABLE chimeway_deliveries ADD CONSTRAINT no_in_app CHECK (channel <> 'in_app')"
        )
    with psycopg.connect(committed_db) as conn:
        if opened:
            conn.execute("INSERT INTO app_orders VALUES ('o1')")
        with pytest.raises(psycopg.errors.CheckViolation, match="no_in_app"):
            cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="k", conn=conn)
        if opened:
            # Only the trigger's savepoint was rolled back: the app's row is there and the
            # transaction goes on.
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
            conn.execute("INSERT INTO app_orders VALUES ('o2')")
        else:
            # Nothing of the caller's was in it: the transaction it opened is rolled back.
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        conn.commit()
    assert count(committed_db, "SELECT count(*) FROM app_orders") == (2 if opened else 0)
    for table in ("chimeway_events", "chimeway_notifications", "chimeway_workflow_runs"):
        assert count(committed_db, f"SELECT count(*) FROM {table}") == 0
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 0


def test_a_caller_s_pipeline_or_failed_transaction_is_not_sent_together(
    make_cw: Callable[..., Chimeway], committed_db: str, seen: list[triggers.Written]
) -> None:
    cw = make_cw()
    with psycopg.connect(committed_db) as conn:
        with conn.pipeline():
            conn.execute("SELECT 1")
            assert not connections.can_send_together(conn)
            cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="p", conn=conn)
        conn.commit()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert not connections.can_send_together(conn)  # failed: Chimeway's error says so
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            cw.trigger(Welcome, {"users": ["bo"]}, tenant_id="t", idempotency_key="f", conn=conn)
        conn.rollback()
    assert [w.free for w in seen] == [True]
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 1


# -- planning's read skips what no policy can apply to -------------------------------------


def test_planning_reads_policy_only_where_some_can_apply(
    cw: Chimeway, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[list[int]] = []
    real = policy.for_plans

    def observed(conn: Any, plans: Any, at: Any = None) -> list[policy.PlanPolicy]:
        rows = real(conn, plans, at)
        read.append([r.n for r in rows])
        return rows

    monkeypatch.setattr(policy, "for_plans", observed)
    for who in ("ana", "bo", "cy", "di"):
        cw.recipients.upsert("t", who, email=f"{who}@example.test", conn=db)
    params = {"users": ["ana", "bo", "cy", "di", "ed"], "channels": ["email"]}
    # A tenant without any policy: nothing is read, and the address check still holds.
    first = cw.trigger(Welcome, params, tenant_id="t", idempotency_key="k0", conn=db)
    assert isinstance(first, Triggered)
    assert read == [[]]
    cw.preferences.set("t", "ana", enabled=False, channel="email", conn=db)
    cw.preferences.set_cap("t", "bo", 1, dt.timedelta(hours=1), conn=db)
    cw.preferences.set("t", "cy", enabled=False, channel="sms", conn=db)  # not this channel
    read.clear()
    result = cw.trigger(Welcome, params, tenant_id="t", idempotency_key="k1", conn=db)
    assert isinstance(result, Triggered)
    assert read == [[1, 2]]  # ana's opt-out and bo's cap; cy's rule is about sms
    outcomes = []
    for delivery_id in [*first.delivery_ids, *result.delivery_ids]:
        row = cw.delivery("t", delivery_id, conn=db)
        outcomes.append(str(row.suppression_reason or row.status))
    assert outcomes == [
        *["pending"] * 4,
        "no_address",
        "channel_disabled",
        "delivery_cap_reached",
        "pending",
        "pending",
        "no_address",
    ]


def test_a_large_policy_read_runs_without_jit_and_gives_the_setting_back(
    cw: Chimeway, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    def jit() -> str:
        value: str = db.execute("SELECT current_setting('jit')").fetchone()[0]  # type: ignore[index]
        return value

    during: list[str] = []
    read = policy._for_plans

    def spy(conn: Conn, *args: Any) -> Any:
        during.append(jit())
        return read(conn, *args)

    monkeypatch.setattr(policy, "_for_plans", spy)
    db.execute("SET LOCAL jit = on")
    cw.trigger(Welcome, {"users": ["ana", "bo"]}, tenant_id="t", idempotency_key="small", conn=db)
    users = [f"u{i}" for i in range(policy.JIT_FREE + 1)]
    cw.trigger(Welcome, {"users": users}, tenant_id="t", idempotency_key="large", conn=db)
    assert during == ["on", "off"]  # the large read compiles nothing
    assert jit() == "on"  # and the caller's transaction has its own setting back


def _mode(conn: Conn) -> str:
    value: str = conn.execute("SELECT current_setting('plan_cache_mode')").fetchone()[0]  # type: ignore[index]
    return value


def _modes_of_policy_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plan cache mode each policy read of planning runs under, from now on."""
    during: list[str] = []
    read = policy._for_plans

    def spy(conn: Conn, *args: Any) -> Any:
        during.append(_mode(conn))
        return read(conn, *args)

    monkeypatch.setattr(policy, "_for_plans", spy)
    return during


def test_a_planned_trigger_of_few_recipients_runs_on_generic_plans_and_gives_the_mode_back(
    cw: Chimeway, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    during = _modes_of_policy_reads(monkeypatch)
    cw.preferences.set("t", None, enabled=False, channel="in_app", conn=db)  # policy applies
    db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="few", conn=db)
    users = [f"u{i}" for i in range(connections.GENERIC_PLANS_UP_TO + 1)]
    cw.trigger(Welcome, {"users": users}, tenant_id="t", idempotency_key="many", conn=db)
    assert during == ["force_generic_plan", "force_custom_plan"]
    assert _mode(db) == "force_custom_plan"  # the caller's transaction has its mode back


def test_generic_plans_end_with_the_trigger_s_own_transaction(
    make_cw: Callable[..., Chimeway], committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cw = make_cw(pool_min_size=1, pool_max_size=1)  # the trigger's connection is the one
    during = _modes_of_policy_reads(monkeypatch)
    cw.preferences.set("t", None, enabled=False, channel="in_app")
    cw.trigger(Welcome, {"users": ["bo"]}, tenant_id="t", idempotency_key="own")
    assert during == ["force_generic_plan"]
    with cw.engine.pool.connection() as own:
        assert _mode(own) == "auto"
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries") == 1
