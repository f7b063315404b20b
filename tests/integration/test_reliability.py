"""The send path's guarantees (the reliability issue): no send repeated forever, no outcome
lost to an outage, takeovers only of claimants that stopped, a dead-letter end, bulkheads,
log lines after commit, typed errors for bad input. Each test fails on the code before it."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chimeway import (
    Chimeway,
    DeliveryRequest,
    InvalidArgument,
    InvalidSignal,
    InvalidTrigger,
    OnOutcome,
    Sent,
    Step,
    Temporary,
    Triggered,
    Workflow,
)
from chimeway.engine.deliver import deliver_in
from chimeway.engine.recording import Sent as Recorded
from chimeway.engine.recording import record
from chimeway.engine.sending import Outcome
from chimeway.testing import RecordingAdapter, drain
from chimeway.types import AttemptOutcome
from tests.integration.conftest import count, counts
from tests.integration.notifiers import Welcome, WithWorkflow

STUCK = dt.timedelta(minutes=5)


def one(cw: Chimeway, channels: tuple[str, ...] = ("in_app",), users: int = 1) -> Triggered:
    result = cw.trigger(
        Welcome,
        {"users": [f"u{i}" for i in range(users)], "channels": list(channels)},
        tenant_id="t",
        idempotency_key=str(uuid.uuid4()),
    )
    assert isinstance(result, Triggered)
    return result


def attempts(url: str, delivery_id: uuid.UUID) -> list[tuple[str, str | None, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT outcome::text, error_class::text, error FROM chimeway_delivery_attempts "
            "WHERE delivery_id = %s ORDER BY attempt_number",
            [delivery_id],
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


# -- provider answers PostgreSQL cannot store ---------------------------------------------------


class Unstorable:
    """Accepts the message, and answers with what PostgreSQL cannot store as it is."""

    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, request: DeliveryRequest) -> Sent:
        self.calls += 1
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(10_000):
            node["d"] = {}
            node = node["d"]
        return Sent(
            provider_message_id="id-with-\x00-and-\ud800",
            meta={"ke\x00y": "lone \udc00 surrogate", "deep": deep},
        )


def test_an_answer_postgres_cannot_store_is_recorded_once_and_never_sent_again(
    make_cw: Any, committed_db: str
) -> None:
    adapter = Unstorable()
    cw = make_cw(adapters={"in_app": adapter}, stuck_after=dt.timedelta(seconds=1))
    [delivery_id] = one(cw).delivery_ids
    assert cw.deliver(delivery_id).action == "succeeded"
    row = cw.delivery("t", delivery_id)
    assert row.status == "succeeded"
    assert row.provider_message_id == "id-with-\\u0000-and-\ufffd"
    [(outcome, _, _)] = attempts(committed_db, delivery_id)
    assert outcome == "succeeded"
    with psycopg.connect(committed_db) as conn:
        response = conn.execute(
            "SELECT provider_response FROM chimeway_delivery_attempts WHERE delivery_id = %s",
            [delivery_id],
        ).fetchone()
    assert response is not None
    notes = response[0]["chimeway_sanitized"]
    assert any("NUL" in n for n in notes) and any("nesting cut" in n for n in notes)
    # Long after stuck_after, nothing makes it go out again.
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "UPDATE chimeway_deliveries SET status_changed_at = now() - interval '1 day', "
            "created_at = now() - interval '1 day'"
        )
    cw.sweep()
    assert cw.deliver(delivery_id).action == "skipped"
    assert adapter.calls == 1


def test_a_temporary_failure_with_an_unstorable_message_is_retried_not_lost(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    cw = make_cw()
    adapters["in_app"].then(Temporary("busy \ud800\x00 now", provider_message_id="x\x00"))
    [delivery_id] = one(cw).delivery_ids
    assert cw.deliver(delivery_id).action == "retry_scheduled"
    assert attempts(committed_db, delivery_id) == [
        ("failed", "temporary", "busy \ufffd\\u0000 now")
    ]


# -- takeovers ----------------------------------------------------------------------------------


def claimed_by(
    url: str, delivery_id: uuid.UUID, *, beat_ago: dt.timedelta | None, claim_ago: dt.timedelta
) -> uuid.UUID:
    """Make the delivery dispatched ``claim_ago`` by a process whose last beat was
    ``beat_ago`` (``None``: a process that left the registry)."""
    process = uuid.uuid4()
    with psycopg.connect(url) as conn:
        if beat_ago is not None:
            conn.execute(
                "INSERT INTO chimeway_processes (id, host, pid, beat_at, alive_since) "
                "VALUES (%s, 'elsewhere', 1, now() - %s, now() - interval '1 day')",
                [process, beat_ago],
            )
        conn.execute(
            "UPDATE chimeway_deliveries SET status = 'dispatched', claimed_by = %s, "
            "status_changed_at = now() - %s WHERE id = %s",
            [process, claim_ago, delivery_id],
        )
    return process


def alive_since(url: str, cw: Chimeway, ago: dt.timedelta) -> None:
    """This process has beaten without a break for ``ago``."""
    cw.engine.liveness.ensure()
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE chimeway_processes SET alive_since = now() - %s WHERE id = %s",
            [ago, cw.engine.liveness.id],
        )


def test_a_claimant_that_still_beats_is_never_taken_over(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    cw = make_cw(stuck_after=STUCK)
    [delivery_id] = one(cw).delivery_ids
    claimed_by(committed_db, delivery_id, beat_ago=dt.timedelta(seconds=1), claim_ago=STUCK * 3)
    alive_since(committed_db, cw, dt.timedelta(days=1))
    result = cw.deliver(delivery_id)
    assert (result.action, result.detail) == ("skipped", "being sent by another process")
    assert adapters["in_app"].requests == []


def test_an_outage_does_not_make_a_live_claimant_look_dead(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    """Both processes were cut off for 10 minutes: the claimant's beat is old, but so is
    the start of the taker's unbroken run of beats. Only once the taker has beaten for
    stuck_after with no beat from the claimant is it taken over."""
    cw = make_cw(stuck_after=STUCK)
    [delivery_id] = one(cw).delivery_ids
    claimed_by(committed_db, delivery_id, beat_ago=dt.timedelta(minutes=10), claim_ago=STUCK * 3)
    alive_since(committed_db, cw, dt.timedelta(seconds=5))  # back after the outage
    assert cw.deliver(delivery_id).action == "skipped"
    alive_since(committed_db, cw, STUCK + dt.timedelta(seconds=5))
    assert cw.deliver(delivery_id).action == "succeeded"
    assert len(adapters["in_app"].requests) == 1


def test_a_takeover_records_the_lost_send_and_the_adapter_sees_the_real_attempt(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    cw = make_cw(stuck_after=STUCK)
    [delivery_id] = one(cw).delivery_ids
    claimed_by(committed_db, delivery_id, beat_ago=STUCK * 2, claim_ago=STUCK * 2)
    alive_since(committed_db, cw, dt.timedelta(days=1))
    assert cw.deliver(delivery_id).action == "succeeded"
    [request] = adapters["in_app"].requests
    assert request.attempt_number == 2
    lost, sent = attempts(committed_db, delivery_id)
    assert lost[:2] == ("failed", "unknown") and lost[2] is not None
    assert lost[2].startswith("interrupted")
    assert sent == ("succeeded", None, None)
    assert cw.delivery("t", delivery_id).takeovers == 1


def test_a_claimant_that_left_is_taken_over_once_its_claim_is_old(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    cw = make_cw(stuck_after=STUCK)
    [delivery_id] = one(cw).delivery_ids
    claimed_by(committed_db, delivery_id, beat_ago=None, claim_ago=STUCK / 2)
    assert cw.deliver(delivery_id).action == "skipped"  # claimed too recently
    claimed_by(committed_db, delivery_id, beat_ago=None, claim_ago=STUCK * 2)
    assert cw.deliver(delivery_id).action == "succeeded"
    assert len(adapters["in_app"].requests) == 1


RETRY_LATER = Workflow(
    key="retry_later",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[OnOutcome(outcome="retries_exhausted", to_step="email")],
        ),
        Step("email", channel="email"),
    ],
)


def test_takeovers_end_in_the_dead_letter_state_and_the_run_moves_on(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    cw = make_cw(stuck_after=STUCK, max_takeovers=2)
    alive_since(committed_db, cw, dt.timedelta(days=1))
    result = cw.trigger(
        WithWorkflow(RETRY_LATER), {"users": ["u1"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    [delivery_id] = result.delivery_ids
    for expected in ("succeeded", "succeeded"):  # two takeovers, each send lost again
        claimed_by(committed_db, delivery_id, beat_ago=STUCK * 2, claim_ago=STUCK * 2)
        adapters["in_app"].then(Sent())  # answers; we then pretend its process died
        assert cw.deliver(delivery_id).action == expected
        with psycopg.connect(committed_db) as conn:  # forget the record: the process died
            conn.execute(
                "DELETE FROM chimeway_delivery_attempts WHERE delivery_id = %s "
                "AND outcome = 'succeeded'",
                [delivery_id],
            )
            conn.execute(
                "UPDATE chimeway_deliveries SET status = 'dispatched', terminal_at = NULL "
                "WHERE id = %s",
                [delivery_id],
            )
            conn.execute(
                "UPDATE chimeway_workflow_runs SET state = 'active', terminal_reason = NULL "
                "WHERE id = %s",
                [result.run_ids[0]],
            )
            conn.execute(
                "DELETE FROM chimeway_deliveries WHERE workflow_run_id = %s AND id <> %s",
                [result.run_ids[0], delivery_id],
            )
    claimed_by(committed_db, delivery_id, beat_ago=STUCK * 2, claim_ago=STUCK * 2)
    outcome = cw.deliver(delivery_id)
    assert (outcome.action, outcome.detail) == ("skipped", "abandoned after 3 interrupted sends")
    row = cw.delivery("t", delivery_id)
    assert (row.status, row.suppression_reason, row.takeovers) == ("cancelled", "abandoned", 2)
    explained = cw.explain_delivery("t", delivery_id)
    assert explained.why.startswith("Not sent for sure: 3 sends were interrupted")
    assert explained.why.endswith("abandoned after 2 takeovers.")
    # The run took its retries_exhausted branch: the email step was planned.
    assert [s.current_step_name for s in [cw.workflows.explain("t", result.run_ids[0])]] == [
        "email"
    ]


def test_a_run_moves_on_when_its_claimant_dies_right_after_abandoning_its_delivery(
    make_cw: Any, adapters: Any, committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim that abandons a delivery queues its run's ``progress`` job in the same
    statement: a claimant that dies before it moves the run itself leaves the run to that
    job, not active for ever (seen in ``bench.chaos``)."""
    from chimeway.engine import deliver

    cw = make_cw(stuck_after=STUCK, max_takeovers=1)
    alive_since(committed_db, cw, dt.timedelta(days=1))
    result = cw.trigger(
        WithWorkflow(RETRY_LATER), {"users": ["u1"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    [delivery_id], [run_id] = result.delivery_ids, result.run_ids
    with psycopg.connect(committed_db) as conn:  # one takeover spent already
        conn.execute("UPDATE chimeway_deliveries SET takeovers = 1 WHERE id = %s", [delivery_id])
    claimed_by(committed_db, delivery_id, beat_ago=STUCK * 2, claim_ago=STUCK * 2)

    def died(*_: Any, **__: Any) -> Any:  # the process ends between the claim and the run
        raise SystemExit("killed")

    monkeypatch.setattr(deliver.drive, "progress_in", died)
    with pytest.raises(SystemExit):
        cw.deliver(delivery_id)
    monkeypatch.undo()
    row = cw.delivery("t", delivery_id)
    assert (row.status, row.suppression_reason) == ("cancelled", "abandoned")
    assert cw.workflows.explain("t", run_id).current_step_name == "notice"
    drain(cw)
    assert cw.workflows.explain("t", run_id).current_step_name == "email"
    assert len(adapters["email"].requests) == 1
    assert adapters["in_app"].requests == []


OPTED_OUT = Workflow(
    key="opted_out",
    version=1,
    steps=[
        Step("email", channel="email", progress=[OnOutcome(outcome="suppressed", to_step="app")]),
        Step("app", channel="in_app"),
    ],
)


def test_a_run_moves_on_when_its_claimant_dies_right_after_policy_suppressed_its_delivery(
    make_cw: Any, adapters: Any, committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Policy's suppression at the claim and the run's move share one transaction: a
    claimant that dies between them leaves the delivery to be claimed again."""
    from chimeway.engine import deliver

    cw = make_cw()
    result = cw.trigger(
        WithWorkflow(OPTED_OUT), {"users": ["u1"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    [delivery_id], [run_id] = result.delivery_ids, result.run_ids
    cw.preferences.set("t", "u1", enabled=False, channel="email")

    def died(*_: Any, **__: Any) -> Any:  # the process ends between the two
        raise SystemExit("killed")

    monkeypatch.setattr(deliver.drive, "progress_planned", died)
    with pytest.raises(SystemExit):
        cw.deliver(delivery_id)
    monkeypatch.undo()
    drain(cw)
    run = cw.workflows.explain("t", run_id)
    assert (str(run.state), run.current_step_name) == ("completed", "app")
    assert cw.delivery("t", delivery_id).status == "suppressed"
    assert adapters["email"].requests == []
    assert len(adapters["in_app"].requests) == 1


# -- a database that is away while a send is recorded -----------------------------------------


@pytest.fixture
def outage(committed_db: str, databases: Any) -> Iterator[Any]:
    """``outage.start(seconds)``: refuse every connection to the test database and end
    those open, for ``seconds``, from a thread; ``outage.done`` is set when it is over."""
    name = psycopg.conninfo.conninfo_to_dict(committed_db)["dbname"]
    maintenance = databases.url("postgres")
    began, done = threading.Event(), threading.Event()

    def run(seconds: float) -> None:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            began.set()
            time.sleep(seconds)  # the outage itself: nothing to wait for
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)
                )
            )
        done.set()

    class Outage:
        def __init__(self) -> None:
            self.done = done

        def start(self, seconds: float) -> None:
            threading.Thread(target=run, args=(seconds,), daemon=True).start()
            assert began.wait(30)

    yield Outage()
    done.wait(30)


class DuringOutage:
    """Accepts the message, then starts the outage before the send can be recorded."""

    def __init__(self, outage: Any, seconds: float) -> None:
        self.outage, self.seconds, self.calls = outage, seconds, 0

    def deliver(self, request: DeliveryRequest) -> Sent:
        self.calls += 1
        if self.calls == 1:
            self.outage.start(self.seconds)
        return Sent(provider_message_id="accepted")


def test_an_outcome_survives_the_database_being_away(
    make_cw: Any, committed_db: str, outage: Any
) -> None:
    adapter = DuringOutage(outage, seconds=3)
    cw = make_cw(adapters={"in_app": adapter})
    [delivery_id] = one(cw).delivery_ids
    assert cw.deliver(delivery_id).action == "succeeded"  # recorded once it was back
    assert outage.done.is_set()
    assert attempts(committed_db, delivery_id) == [("succeeded", None, None)]
    assert adapter.calls == 1


# -- bulkheads ----------------------------------------------------------------------------------


class Hung:
    """Never answers until released; says how long it is prepared to wait."""

    name = "hung"
    timeout = 0.2  # the engine gives it up at 0.2 * 1.5 + 1 s
    capacity = 2

    def __init__(self) -> None:
        self.release = threading.Event()

    def deliver(self, request: DeliveryRequest) -> Sent:
        self.release.wait(60)
        return Sent()


def test_a_hung_provider_holds_only_its_own_channel(make_cw: Any, committed_db: str) -> None:
    hung = Hung()
    cw = make_cw(adapters={"in_app": RecordingAdapter(), "email": hung})
    result = one(cw, channels=("in_app", "email"), users=3)
    outcome: list[Any] = []
    sender = threading.Thread(target=lambda: outcome.append(cw.deliver_many(result.delivery_ids)))
    sender.start()
    statuses = "SELECT channel, status::text, count(*) FROM chimeway_deliveries GROUP BY 1, 2"
    deadline = time.monotonic() + 30
    while True:  # polling the database, with a deadline
        with psycopg.connect(committed_db) as conn:
            seen = {(c, s): n for c, s, n in conn.execute(statuses)}
        if seen.get(("in_app", "succeeded")) == 3:
            break
        assert time.monotonic() < deadline, f"the healthy channel waited: {seen}"
        time.sleep(0.02)
    assert not hung.release.is_set()  # recorded while the other channel still hangs
    sender.join(30)
    hung.release.set()
    by_channel = {
        (d.channel, r.action)
        for d, r in zip([cw.delivery("t", i) for i in result.delivery_ids], outcome[0], strict=True)
    }
    assert by_channel == {("in_app", "succeeded"), ("email", "retry_scheduled")}
    emails = [i for i in result.delivery_ids if cw.delivery("t", i).channel == "email"]
    # Two calls hung (the lane's capacity) and were given up at the deadline; the third never
    # got a thread and was not sent.
    errors = sorted(attempts(committed_db, e)[0][1:] for e in emails)
    assert errors == [
        (
            "temporary",
            "not sent: every thread of the hung adapter is held by a call past its "
            "deadline (1.3 s)",
        ),
        ("unknown", "no answer from the hung adapter within 1.3 s"),
        ("unknown", "no answer from the hung adapter within 1.3 s"),
    ]


# -- log lines after commit --------------------------------------------------------------------


def test_a_record_retried_one_by_one_logs_each_state_change_once(
    make_cw: Any, committed_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    cw = make_cw()
    result = one(cw, users=3)
    bad = result.delivery_ids[1]
    with psycopg.connect(committed_db) as conn:  # the batch record fails on this one row
        conn.execute("CREATE SEQUENCE refusals")  # not rolled back with the refusal
        conn.execute(
            "CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF nextval('refusals') = 1 THEN RAISE EXCEPTION 'refused once'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse_once BEFORE INSERT ON chimeway_delivery_attempts"
                " FOR EACH ROW WHEN (NEW.delivery_id = {}) EXECUTE FUNCTION refuse_once()"
            ).format(sql.Literal(str(bad)))
        )
    caplog.set_level(logging.INFO, logger="chimeway.engine")
    cw.deliver_many(result.delivery_ids)
    succeeded = [r.delivery_id for r in caplog.records if r.action == "delivery.succeeded"]
    assert sorted(succeeded) == sorted(str(d) for d in result.delivery_ids)


# -- a run that cannot be moved now -------------------------------------------------------------

TWO_STEPS = Workflow(
    "two_steps",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="email")]),
        Step("email", "email"),
    ],
)


def refuse_run_updates(conn: psycopg.Connection[Any]) -> None:
    """Every update of a run fails in the database (the record's transaction is lost)."""
    conn.execute(
        "CREATE FUNCTION refuse_run() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'run refused'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER refuse_run BEFORE UPDATE ON chimeway_workflow_runs"
        " FOR EACH ROW EXECUTE FUNCTION refuse_run()"
    )


def test_a_run_that_cannot_be_progressed_keeps_its_send_and_gets_a_progress_job(
    make_cw: Any, committed_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    cw = make_cw(notifiers=[WithWorkflow(TWO_STEPS)])
    result = cw.trigger("with_workflow", {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    [notice] = result.delivery_ids
    with psycopg.connect(committed_db) as conn:
        refuse_run_updates(conn)
    caplog.set_level(logging.INFO, logger="chimeway.engine")

    assert cw.deliver(notice).action == "succeeded"

    assert attempts(committed_db, notice) == [("succeeded", None, None)]
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries") == 1
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
            " AND args ->> 'run_id' = %s",
            str(result.run_ids[0]),
        )
        == 1
    )
    [deferred] = [r for r in caplog.records if getattr(r, "action", "") == "runs.progress_deferred"]
    assert deferred.run_ids == [str(result.run_ids[0])]
    assert [r.delivery_id for r in caplog.records if r.action == "delivery.succeeded"] == [
        str(notice)
    ]

    with psycopg.connect(committed_db) as conn:  # the fault is gone: the job moves the run
        conn.execute("DROP TRIGGER refuse_run ON chimeway_workflow_runs")
    drain(cw)
    with psycopg.connect(committed_db) as conn:
        state = conn.execute("SELECT state::text FROM chimeway_workflow_runs").fetchone()
    assert state == ("completed",)
    assert count(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 2


def test_drained_in_a_transaction_a_run_that_cannot_be_progressed_keeps_its_send(
    make_tx_cw: Any, db: psycopg.Connection[Any]
) -> None:
    cw = make_tx_cw(notifiers=[WithWorkflow(TWO_STEPS)])
    result = cw.trigger(
        "with_workflow", {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    refuse_run_updates(db)
    [notice] = result.delivery_ids

    [done] = deliver_in(cw.engine, db, [notice])

    assert done.action == "succeeded"
    assert count(db, "SELECT count(*) FROM chimeway_delivery_attempts") == 1
    assert (
        count(
            db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'",
        )
        == 1
    )
    db.execute("DROP TRIGGER refuse_run ON chimeway_workflow_runs")
    drain(cw, conn=db)
    assert count(db, "SELECT count(*) FROM chimeway_delivery_attempts") == 2


def test_runs_recorded_together_that_cannot_be_progressed_keep_their_sends_and_get_jobs(
    make_tx_cw: Any, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Several runs recorded in one statement are progressed set-wise with no savepoint:
    # when that fails, the record is made again with each run in a savepoint of its own, and
    # every one that fails again gets a job (test_batches: the others move on at once).
    cw = make_tx_cw(notifiers=[WithWorkflow(TWO_STEPS)])
    result = cw.trigger(
        "with_workflow", {"users": ["u1", "u2"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    refuse_run_updates(db)
    caplog.set_level(logging.INFO, logger="chimeway.engine")

    done = deliver_in(cw.engine, db, result.delivery_ids)

    assert [d.action for d in done] == ["succeeded", "succeeded"]
    assert count(db, "SELECT count(*) FROM chimeway_delivery_attempts") == 2
    jobs = db.execute(
        "SELECT args ->> 'run_id' FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
    ).fetchall()
    assert sorted(j[0] for j in jobs) == sorted(str(r) for r in result.run_ids)
    [deferred] = [r for r in caplog.records if getattr(r, "action", "") == "runs.progress_deferred"]
    assert sorted(deferred.run_ids) == sorted(str(r) for r in result.run_ids)
    db.execute("DROP TRIGGER refuse_run ON chimeway_workflow_runs")
    drain(cw, conn=db)
    assert count(db, "SELECT count(*) FROM chimeway_delivery_attempts") == 4
    states = db.execute("SELECT state::text FROM chimeway_workflow_runs").fetchall()
    assert states == [("completed",), ("completed",)]


# -- typed errors and nothing written ----------------------------------------------------------

DEEP: dict[str, Any] = {}
_node = DEEP
for _ in range(5_000):
    _node["d"] = {}
    _node = _node["d"]


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({"tenant_id": "t\x00", "idempotency_key": "k"}, {"users": ["u"]}),
        ({"tenant_id": "t", "idempotency_key": "\ud800"}, {"users": ["u"]}),
        ({"tenant_id": "t" * 3000, "idempotency_key": "k"}, {"users": ["u"]}),
        ({"tenant_id": "t", "idempotency_key": "k", "correlation_id": "c\x07"}, {"users": ["u"]}),
        ({"tenant_id": "t", "idempotency_key": "k"}, {"users": ["u"], "x": "a\x00b"}),
        ({"tenant_id": "t", "idempotency_key": "k"}, {"users": ["u"], "deep": DEEP}),
    ],
)
def test_bad_trigger_input_is_a_typed_error_and_writes_nothing(
    tx_cw: Chimeway, db: psycopg.Connection[Any], kwargs: dict[str, Any], params: dict[str, Any]
) -> None:
    before = counts(db)
    with pytest.raises(InvalidTrigger):
        tx_cw.trigger(Welcome, params, conn=db, **kwargs)
    assert counts(db) == before


@pytest.mark.parametrize(
    "args",
    [
        ("t\x00", "actor", "read"),
        ("t", "a" * 3000, "read"),
        ("t", "actor", "r" * 201),
        ("t", "actor", "read\x00"),
    ],
)
def test_bad_signal_input_is_a_typed_error_and_writes_nothing(
    tx_cw: Chimeway, db: psycopg.Connection[Any], args: tuple[str, str, str]
) -> None:
    with pytest.raises(InvalidSignal):
        tx_cw.track_signal(*args, conn=db)
    assert count(db, "SELECT count(*) FROM chimeway_signals") == 0
    with pytest.raises(InvalidSignal):
        tx_cw.track_signal("t", "actor", "read", payload={"deep": DEEP}, conn=db)


@pytest.mark.parametrize("limit", [-1, 0, 10**20, True, "5"])
def test_bad_limits_are_typed_errors(
    tx_cw: Chimeway, db: psycopg.Connection[Any], limit: Any
) -> None:
    with pytest.raises(InvalidArgument, match="limit"):
        tx_cw.workflows.list_runs("t", limit=limit, conn=db)
    with pytest.raises(InvalidArgument, match="limit"):
        tx_cw.workflows.list_traces("t", uuid.uuid4(), limit=limit, conn=db)


def test_a_tenant_the_database_cannot_hold_is_a_typed_error(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(InvalidArgument, match="tenant_id"):
        tx_cw.workflows.list_runs("t\x00", conn=db)
    with pytest.raises(InvalidArgument, match="tenant_id"):
        tx_cw.explain_delivery("\ud800", uuid.uuid4(), conn=db)


def test_a_record_made_again_is_a_no_op_but_a_late_one_after_a_takeover_is_kept(
    make_cw: Any, adapters: Any, committed_db: str
) -> None:
    """A record retried after its COMMIT's reply was lost finds its own attempt and changes
    nothing; the record of an older claim, arriving after a takeover sent it again, is a
    different attempt and stays as evidence (test_lost_commit.py cuts a real reply)."""
    cw = make_cw(stuck_after=STUCK)
    [delivery_id] = one(cw).delivery_ids
    claimed_by(committed_db, delivery_id, beat_ago=STUCK * 2, claim_ago=STUCK * 2)
    first_claim = cw.delivery("t", delivery_id)
    alive_since(committed_db, cw, dt.timedelta(days=1))
    assert cw.deliver(delivery_id).action == "succeeded"  # taken over, sent as attempt 2
    late = Recorded(first_claim, 1, Outcome(AttemptOutcome.SUCCEEDED, None, None, "late-1"))
    [kept] = record(cw.engine, [late])
    assert (kept.action, kept.detail) == ("recorded", "status was succeeded")
    [again] = record(cw.engine, [late])  # the same record once more: its reply was lost
    assert (again.action, again.detail) == ("recorded", "already recorded: succeeded")
    assert [a[0] for a in attempts(committed_db, delivery_id)] == [
        "failed",  # the interrupted send the takeover wrote
        "succeeded",
        "succeeded",  # the late record, kept once
    ]
    assert cw.delivery("t", delivery_id).status == "succeeded"
