"""Every state change logs one structured line under ``chimeway.*`` with its ids."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from chimeway import Chimeway, Triggered
from chimeway.testing import drain
from tests.integration.notifiers import WithWorkflow
from tests.integration.test_progression import WAIT_30M


def test_state_changes_log_action_tenant_and_ids(
    tx_cw: Chimeway, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chimeway")
    result = tx_cw.trigger(
        WithWorkflow(WAIT_30M), {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(result, Triggered)
    drain(tx_cw, conn=db)
    records = [r for r in caplog.records if r.name.startswith("chimeway.")]
    actions = [getattr(r, "action", None) for r in records]
    assert actions[:3] == ["delivery.dispatched", "delivery.succeeded", "run.waiting"]
    for record in records:
        assert getattr(record, "tenant_id", None) == "t", record.__dict__
        assert getattr(record, "run_id", None) == str(result.run_ids[0])
    delivery_lines = [r for r in records if str(getattr(r, "action", "")).startswith("delivery.")]
    assert all(
        getattr(r, "delivery_id", None) == str(result.delivery_ids[0]) for r in delivery_lines
    )
