"""Property-based fuzzing of the public inputs, end to end against the real database: every
input to ``trigger``, ``track_signal``, the reads and the ``Workflow``/``Step`` declarations
either succeeds or raises a :class:`~chimeway.ChimewayError`, and a rejected input leaves no
row behind. What was accepted is then run (``drain``) and must not break either.

Each example runs in a savepoint of the rolled-back ``db`` transaction, so examples never see
each other's rows; hypothesis' function-scoped fixture health check is suppressed on purpose:
the fixture is the transaction, reset by the savepoint per example.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chimeway import (
    Chimeway,
    ChimewayError,
    Notifier,
    OnOutcome,
    OnSignal,
    Recipient,
    Step,
    Stop,
    WaitUntil,
    Workflow,
)
from chimeway.testing import drain, make_run
from tests.unit.test_input_properties import JSONISH, OBJECTS, TEXT, VALUES

FUZZ = settings(
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
T = TypeVar("T")

#: Every table a public write touches.
TABLES = (
    "chimeway_events",
    "chimeway_notifications",
    "chimeway_deliveries",
    "chimeway_delivery_transitions",
    "chimeway_delivery_attempts",
    "chimeway_workflow_definitions",
    "chimeway_workflow_steps",
    "chimeway_workflow_runs",
    "chimeway_workflow_transitions",
    "chimeway_signals",
    "procrastinate_jobs",
)

# -- strategies ---------------------------------------------------------------------------
# Each input comes clean (every part valid, so the deep paths run) or dirty (any part may be
# anything: control characters, NUL, lone surrogates, too long, not text, NaN, cycles ...).

LONG = st.text(min_size=250, max_size=320) | st.just("x" * 3000)
NOT_TEXT = st.integers() | st.none() | st.binary(max_size=4) | st.floats() | st.lists(TEXT)
BAD = TEXT | LONG | NOT_TEXT


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid``, or anything."""
    return valid | BAD


VALID_IDS = st.sampled_from(["t", "t2", "k", "u1", "ü ✓"])
IDS = mostly(VALID_IDS)
VALID_CHANNELS = st.sampled_from(["in_app", "email", "sms"])
CHANNELS = mostly(VALID_CHANNELS)
SCALARS = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
SMALL_JSON = st.dictionaries(
    st.text(max_size=5), SCALARS | st.lists(SCALARS, max_size=3), max_size=3
)

CLEAN_PARAMS = st.fixed_dictionaries(
    {"users": st.lists(VALID_IDS, min_size=1, max_size=3, unique=True)},
    optional={
        "channels": st.lists(VALID_CHANNELS, min_size=1, max_size=3, unique=True),
        "assigns": SMALL_JSON,
    },
)
RECIPIENT = IDS | st.fixed_dictionaries({"id": IDS}, optional={"email": IDS, "data": VALUES})
CONTENT = st.sampled_from(
    [
        {"headline": "Hi", "body": "Hi", "primary_action": {"label": "Open", "url": "/x"}},
        {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"},
        {"text_body": "Hi"},
    ]
)
DIRTY_PARAMS = (
    st.fixed_dictionaries(
        {},
        optional={
            "users": st.lists(RECIPIENT, max_size=3) | VALUES,
            "channels": st.lists(CHANNELS, max_size=3) | VALUES,
            "content": CONTENT | VALUES,
            "assigns": VALUES,
            "junk": VALUES,
        },
    )
    | OBJECTS
)
TRIGGERS = st.fixed_dictionaries(
    {
        "params": CLEAN_PARAMS,
        "tenant": VALID_IDS,
        "key": VALID_IDS,
        "correlation": st.none() | VALID_IDS,
    }
) | st.fixed_dictionaries(
    {"params": DIRTY_PARAMS, "tenant": IDS, "key": IDS, "correlation": st.none() | IDS}
)
EVENT_NAMES = st.sampled_from(["app.clicked", "chimeway.notification.read"])
SIGNALS = st.fixed_dictionaries(
    {
        "tenant": VALID_IDS,
        "actor": VALID_IDS,
        "event": EVENT_NAMES,
        "payload": st.none() | SMALL_JSON,
        "key": st.none() | VALID_IDS,
    }
) | st.fixed_dictionaries(
    {
        "tenant": IDS,
        "actor": IDS,
        "event": mostly(EVENT_NAMES) | st.text(min_size=190, max_size=210),
        "payload": st.none() | OBJECTS | JSONISH,
        "key": st.none() | IDS,
    }
)
LIMITS = st.integers(-3, 3) | st.integers() | st.just(10**20) | st.booleans() | st.floats()
#: Ids of reads besides the example's own run and delivery: a random uuid, anything.
IDENTS = st.uuids() | st.uuids().map(str) | BAD
STEP_KEYS = st.sampled_from(["a", "b", "c"])
OUTCOMES = st.sampled_from(["delivered", "suppressed", "bounced", "temporary_failure"])


def rules(keys: Any, delays: Any, outcomes: Any, names: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(
            st.just(WaitUntil),
            st.fixed_dictionaries(
                {"delay": delays, "to_step": keys},
                optional={"cancel_signals": st.lists(names, max_size=3)},
            ),
        ),
        st.tuples(
            st.just(OnOutcome), st.fixed_dictionaries({"outcome": outcomes, "to_step": keys})
        ),
        st.tuples(st.just(OnSignal), st.fixed_dictionaries({"event": names, "to_step": keys})),
        st.tuples(st.just(Stop), st.fixed_dictionaries({"outcome": outcomes})),
    )


def workflows(
    keys: Any, channels: Any, delays: Any, outcomes: Any, names: Any, versions: Any, *, clean: bool
) -> st.SearchStrategy[dict[str, Any]]:
    step = st.fixed_dictionaries(
        {
            "key": keys,
            "channel": channels,
            "progress": st.lists(rules(keys, delays, outcomes, names), max_size=2),
        }
    )
    # Clean ones have distinct step keys (else most would break that one rule).
    unique = {"unique_by": lambda s: s["key"]} if clean else {}
    steps = st.lists(step, min_size=1, max_size=3, **unique)
    return st.fixed_dictionaries({"key": keys, "version": versions, "steps": steps})


WORKFLOWS = workflows(
    STEP_KEYS,
    VALID_CHANNELS,
    st.integers(0, 3600) | st.timedeltas(dt.timedelta(0), dt.timedelta(days=366)),
    OUTCOMES,
    EVENT_NAMES,
    st.integers(1, 3),
    clean=True,
) | workflows(
    mostly(STEP_KEYS),
    CHANNELS,
    st.integers() | st.just(10**12) | st.floats() | st.timedeltas() | TEXT,
    mostly(OUTCOMES),
    IDS,
    mostly(st.integers(1, 3)) | st.sampled_from([0, -1, 2**31]) | NOT_TEXT,
    clean=False,
)


def declare(spec: dict[str, Any]) -> Workflow:
    """The workflow ``spec`` describes, built through the public declarations."""
    steps = [
        Step(
            step["key"],
            channel=step["channel"],
            progress=[rule(**kw) for rule, kw in step["progress"]],
        )
        for step in spec["steps"]
    ]
    return Workflow(key=spec["key"], version=spec["version"], steps=steps)


class Fuzzed(Notifier):
    """Returns whatever its params say: recipients, channels, content, assigns, workflow."""

    key = "fuzzed"
    version = 1

    def __init__(self, workflow: Workflow | None = None) -> None:
        self._workflow = workflow

    def recipients(self, params: dict[str, Any]) -> Any:
        users = params.get("users", ["u1"])
        return (
            [u if isinstance(u, dict | Recipient) else {"id": u} for u in users]
            if isinstance(users, list)
            else users
        )

    def build(self, params: dict[str, Any], recipient: Recipient) -> Any:
        return params.get("assigns", {})

    def channels(self, params: dict[str, Any], recipient: Recipient) -> Any:
        return params.get("channels", ["in_app"])

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> Any:
        if "content" in params:
            return params["content"]
        return {
            "email": {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"},
            "sms": {"text_body": "Hi"},
        }.get(
            channel, {"headline": "Hi", "body": "Hi", "primary_action": {"label": "O", "url": "/"}}
        )

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return self._workflow


WAITS = Workflow(
    key="fuzz_waits",
    version=1,
    steps=[
        Step(
            "a",
            channel="in_app",
            progress=[
                WaitUntil(delay=60, to_step="b", cancel_signals=["chimeway.notification.read"]),
                OnSignal(event="app.clicked", to_step="b"),
            ],
        ),
        Step("b", channel="email"),
    ],
)

# -- helpers ------------------------------------------------------------------------------


def snapshot(db: psycopg.Connection[Any]) -> dict[str, int]:
    found = {}
    for table in TABLES:
        row = db.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        assert row is not None
        found[table] = int(row[0])
    return found


@contextmanager
def example(db: psycopg.Connection[Any]) -> Iterator[None]:
    """One example, in a savepoint rolled back at its end."""
    with db.transaction(force_rollback=True):
        yield


def outcome(db: psycopg.Connection[Any], call: Callable[[], T]) -> T | ChimewayError:
    """``call()``, or the ChimewayError it raised, after which no row may have changed."""
    before = snapshot(db)
    try:
        result = call()
    except ChimewayError as error:
        event(f"rejected: {type(error).__name__}")
        assert snapshot(db) == before, f"a rejected input left rows behind: {error.message}"
        assert "\x00" not in error.message
        assert len(error.message) < 1000, "the error echoes too much of the input"
        return error
    event("accepted")
    return result


# -- properties ---------------------------------------------------------------------------


@FUZZ
@given(case=TRIGGERS)
def test_trigger_succeeds_or_raises_a_typed_error_and_writes_nothing(
    shared_cw: Chimeway, db: psycopg.Connection[Any], case: dict[str, Any]
) -> None:
    with example(db):
        result = outcome(
            db,
            lambda: shared_cw.trigger(
                Fuzzed(),
                case["params"],
                tenant_id=case["tenant"],
                idempotency_key=case["key"],
                correlation_id=case["correlation"],
                conn=db,
            ),
        )
        if not isinstance(result, ChimewayError):
            drain(shared_cw, conn=db)
            assert snapshot(db)["chimeway_events"] == 1


@FUZZ
@given(case=SIGNALS)
def test_track_signal_succeeds_or_raises_a_typed_error_and_writes_nothing(
    shared_cw: Chimeway, db: psycopg.Connection[Any], case: dict[str, Any]
) -> None:
    with example(db):
        make_run(shared_cw, WAITS, state="waiting", tenant_id="t", recipient_id="u1", conn=db)
        result = outcome(
            db,
            lambda: shared_cw.track_signal(
                case["tenant"], case["actor"], case["event"], case["payload"], case["key"], conn=db
            ),
        )
        if not isinstance(result, ChimewayError):
            drain(shared_cw, conn=db)  # routing it (maybe to the waiting run) must not fail


READS = st.fixed_dictionaries(
    {
        "tenant": st.sampled_from(["t", "t2"]),
        "ident": st.sampled_from(["<run>", "<delivery>"]) | st.uuids(),
        "limit": st.none() | st.integers(1, 100),
        "state": st.none() | st.sampled_from(["active", "waiting", "completed"]),
        "workflow_key": st.none() | st.sampled_from(["fuzz_waits", "other"]),
    }
) | st.fixed_dictionaries(
    {
        "tenant": IDS,
        "ident": st.sampled_from(["<run>", "<delivery>"]) | IDENTS,
        "limit": st.none() | LIMITS,
        "state": st.none() | mostly(st.sampled_from(["active", "waiting", "completed"])),
        "workflow_key": st.none() | IDS,
    }
)


@FUZZ
@given(case=READS)
def test_reads_answer_or_raise_a_typed_error(
    shared_cw: Chimeway, db: psycopg.Connection[Any], case: dict[str, Any]
) -> None:
    tenant, ident, limit = case["tenant"], case["ident"], case["limit"]
    state, workflow_key = case["state"], case["workflow_key"]
    runs = shared_cw.workflows
    with example(db):
        made = make_run(shared_cw, WAITS, state="waiting", tenant_id="t", conn=db)
        if ident == "<run>":
            ident = made.run_id
        elif ident == "<delivery>":
            ident = made.delivery_ids["a"]
        before = snapshot(db)
        for call in (
            lambda: runs.explain(tenant, ident, conn=db),
            lambda: runs.list_traces(tenant, ident, limit, conn=db),
            lambda: runs.run_deliveries(tenant, ident, conn=db),
            lambda: runs.list_runs(
                tenant, state=state, workflow_key=workflow_key, limit=limit or 50, conn=db
            ),
            lambda: shared_cw.explain_delivery(tenant, ident, conn=db),
            lambda: shared_cw.delivery(tenant, ident, conn=db),
        ):
            outcome(db, call)
        assert snapshot(db) == before


@FUZZ
@given(spec=WORKFLOWS, users=st.lists(st.sampled_from(["u1", "u2"]), min_size=1, max_size=2))
def test_workflow_declarations_build_or_raise_a_typed_error_and_run_if_built(
    shared_cw: Chimeway, db: psycopg.Connection[Any], spec: dict[str, Any], users: list[str]
) -> None:
    try:
        declared = declare(spec)
    except ChimewayError as error:
        event(f"declaration rejected: {type(error).__name__}")
        assert "\x00" not in error.message
        return
    with example(db):
        result = outcome(
            db,
            lambda: shared_cw.trigger(
                Fuzzed(declared),
                {"users": users, "channels": ["in_app"]},
                tenant_id="t",
                idempotency_key=str(uuid.uuid4()),
                conn=db,
            ),
        )
        if isinstance(result, ChimewayError):
            return
        drain(shared_cw, conn=db)
        waits = db.execute(
            "SELECT max(suspended_until - now()) FROM chimeway_workflow_runs "
            "WHERE state = 'waiting'"
        ).fetchone()
        assert waits is not None
        assert waits[0] is None or waits[0] <= dt.timedelta(days=367)
        assert db.execute(
            "SELECT count(*) FROM chimeway_deliveries WHERE status = 'dispatched'"
        ).fetchone() == (0,)
