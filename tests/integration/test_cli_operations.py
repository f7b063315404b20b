"""The operator verbs through click's CliRunner: runs cancel, deliveries redrive, deliveries
list, events find; other tenants' rows are not found; the trace and the delivery's story say
who did it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from chimeway import Chimeway, DeliveryReason, Triggered
from chimeway.cli import cli
from chimeway.testing import drain
from tests.integration.notifiers import Welcome
from tests.integration.test_operations import give_up, start


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", url, *args])


@pytest.fixture
def waiting(cw: Chimeway) -> Triggered:
    started = start(cw)
    drain(cw)
    return started


def test_runs_cancel_stops_the_run_and_the_trace_says_who(
    committed_db: str, waiting: Triggered
) -> None:
    run_id = str(waiting.run_ids[0])
    result = run(
        committed_db, "runs", "cancel", "--tenant", "t", "--reason", "spam", "--by", "ann", run_id
    )
    assert result.exit_code == 0, result.stderr
    assert f"Run {run_id} cancelled: now stopped" in result.stdout
    trace = run(committed_db, "trace", "--tenant", "t", run_id).stdout.splitlines()
    assert "run_cancelled" in trace[-1] and "cancelled_by=ann" in trace[-1]
    assert "reason=spam" in trace[-1]
    explained = run(committed_db, "explain", "--tenant", "t", run_id).stdout
    assert "by ann: spam" in explained
    again = run(committed_db, "runs", "cancel", "--tenant", "t", "--reason", "x", "--json", run_id)
    assert json.loads(again.stdout) == {
        "cancelled": False,
        "delivery_ids": [],
        "run_id": run_id,
        "state": "stopped",
    }


def test_runs_cancel_of_another_tenant_is_not_found(committed_db: str, waiting: Triggered) -> None:
    run_id = str(waiting.run_ids[0])
    result = run(committed_db, "runs", "cancel", "--tenant", "other", "--reason", "x", run_id)
    assert result.exit_code == 1
    assert result.stderr == f"Error: workflow run {run_id} not found\n"
    shown = run(committed_db, "explain", "--tenant", "t", "--json", run_id)
    assert json.loads(shown.stdout)["state"] == "waiting"


def test_runs_cancel_needs_a_reason(committed_db: str, waiting: Triggered) -> None:
    result = run(committed_db, "runs", "cancel", "--tenant", "t", str(waiting.run_ids[0]))
    assert result.exit_code == 2 and "--reason" in result.stderr


def test_deliveries_redrive_and_its_explanation(cw: Chimeway, committed_db: str) -> None:
    started = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(started, Triggered)
    delivery_id = str(started.delivery_ids[0])
    with cw.transaction() as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        give_up(conn, started.delivery_ids[0], DeliveryReason.RETRIES_EXHAUSTED)

    foreign = run(committed_db, "deliveries", "redrive", "--tenant", "other", delivery_id)
    assert foreign.exit_code == 1
    assert foreign.stderr == f"Error: delivery {delivery_id} not found\n"

    result = run(committed_db, "deliveries", "redrive", "--tenant", "t", "--by", "bo", delivery_id)
    assert result.exit_code == 0, result.stderr
    assert "cancelled (retries_exhausted) -> pending" in result.stdout
    explained = run(committed_db, "deliveries", "explain", "--tenant", "t", delivery_id).stdout
    assert "bo (an operator) redrove it" in explained and "redriven_by=bo" in explained
    again = run(committed_db, "deliveries", "redrive", "--tenant", "t", delivery_id)
    assert again.exit_code == 1 and "is pending; only a failed delivery" in again.stderr
    drain(cw)
    assert cw.delivery("t", delivery_id).status == "succeeded"


def test_deliveries_list_and_events_find(cw: Chimeway, committed_db: str) -> None:
    order = cw.trigger(
        Welcome,
        {"users": ["u1", "u2"]},
        tenant_id="t",
        idempotency_key="order-42",
        correlation_id="req-7",
    )
    assert isinstance(order, Triggered)
    cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t2", idempotency_key="order-42")

    listed = run(committed_db, "deliveries", "list", "--tenant", "t", "--recipient", "u1", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["recipient_id"], r["idempotency_key"], r["tenant_id"]) for r in rows] == [
        ("u1", "order-42", "t")
    ]
    table = run(committed_db, "deliveries", "list", "--tenant", "t", "--status", "pending").stdout
    assert table.splitlines()[0].split()[:4] == ["delivery", "recipient", "channel", "status"]
    assert len(table.splitlines()) == 4  # header, rule, two deliveries
    none = run(committed_db, "deliveries", "list", "--tenant", "t", "--status", "succeeded")
    assert none.stdout == "No deliveries found.\n"
    bad = run(committed_db, "deliveries", "list", "--tenant", "t", "--status", "sent")
    assert bad.exit_code == 2 and "'sent' is not one of" in bad.stderr

    for option, value in (("--idempotency-key", "order-42"), ("--correlation-id", "req-7")):
        found = run(committed_db, "events", "find", "--tenant", "t", option, value, "--json")
        assert found.exit_code == 0, found.stderr
        assert {r["delivery_id"] for r in json.loads(found.stdout)} == {
            str(d) for d in order.delivery_ids
        }
    foreign = run(committed_db, "events", "find", "--tenant", "t3", "--correlation-id", "req-7")
    assert foreign.exit_code == 0 and foreign.stdout == "No deliveries found.\n"
    by_user = run(committed_db, "events", "find", "--tenant", "t", "--recipient", "u2")
    assert "order-42" in by_user.stdout and "req-7" in by_user.stdout
    two = run(
        committed_db,
        "events",
        "find",
        "--tenant",
        "t",
        "--recipient",
        "u1",
        "--correlation-id",
        "c",
    )
    assert two.exit_code == 2 and "give one of --recipient" in two.stderr
    none_given = run(committed_db, "events", "find", "--tenant", "t")
    assert none_given.exit_code == 2
