"""Chimeway's tasks loaded into an app's own Procrastinate App, run by that App's worker."""

from __future__ import annotations

import procrastinate
import pytest
from procrastinate.exceptions import TaskAlreadyRegistered

from chimeway import Chimeway, Triggered
from chimeway.jobs import QUEUES, TASKS
from tests.integration.conftest import Recorders, count
from tests.integration.notifiers import Welcome


def test_the_users_own_app_runs_chimeways_jobs_next_to_its_own(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=committed_db))
    ran: list[int] = []

    @app.task(name="app.bill", queue="billing")
    def bill(order: int) -> None:
        ran.append(order)

    assert cw.add_tasks_to(app) is app
    assert set(TASKS.values()) <= set(app.tasks)
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t1", idempotency_key="k1")
    assert isinstance(result, Triggered)
    with app.open():
        bill.defer(order=7)
        app.run_worker(
            queues=["billing", *sorted(set(QUEUES.values()))],
            wait=False,
            install_signal_handlers=False,
            listen_notify=False,
        )
    assert ran == [7]
    assert [r.delivery_id for r in adapters["in_app"].sent] == result.delivery_ids
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 0


def test_a_blueprint_is_new_each_time_and_needs_chimeways_namespace(tx_cw: Chimeway) -> None:
    # No database work: the app's connector is never opened.
    cw = tx_cw
    first, second = cw.blueprint(), cw.blueprint()
    assert first is not second
    assert {t.split(":")[-1] for t in TASKS.values()} <= set(first.tasks)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=cw.database_url))
    app.add_tasks_from(first, namespace="chimeway")
    assert TASKS["deliver"] in app.tasks
    with pytest.raises(TaskAlreadyRegistered, match="chimeway"):
        app.add_tasks_from(second, namespace="chimeway")
