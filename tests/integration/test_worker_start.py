"""No silent fallback: a worker refuses to start while a channel it would send has no
adapter, and says what it runs with when it does start."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from chimeway import Chimeway, ConfigurationError, LoggerAdapter, SmtpAdapter, Triggered
from chimeway.cli import cli
from chimeway.engine.readiness import check_channels, startup_line
from chimeway.testing import RecordingAdapter, drain
from chimeway.worker import BackgroundWorker, WorkerOptions
from tests.integration.conftest import count
from tests.integration.notifiers import Welcome


def pending_email(cw: Chimeway) -> Triggered:
    result = cw.trigger(
        Welcome, {"users": ["u1", "u2"], "channels": ["email"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    return result


def test_a_channel_without_an_adapter_refuses_the_worker(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    cw = make_cw(adapters={"in_app": RecordingAdapter()})
    pending_email(cw)
    with pytest.raises(ConfigurationError, match=r"no adapter for channel 'email' \(2 waiting\)"):
        check_channels(cw.engine)
    with pytest.raises(ConfigurationError, match="'email'"):
        BackgroundWorker(cw, WorkerOptions(concurrency=1)).start()
    # Nothing was sent or touched: the deliveries wait for a worker that has the adapter.
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'pending'")
    assert count(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 0


def test_workers_that_do_not_send_or_that_say_so_may_start(
    make_cw: Callable[..., Chimeway],
) -> None:
    cw = make_cw(adapters={"in_app": RecordingAdapter()})
    pending_email(cw)
    check_channels(cw.engine, queues=["chimeway_progress", "chimeway_signals"])
    logging_everything = make_cw(adapters={}, default_adapter=LoggerAdapter())
    check_channels(logging_everything.engine)
    drain(logging_everything)  # the explicit default sends them
    assert {str(d.status) for d in _deliveries(logging_everything)} == {"succeeded"}


def _deliveries(cw: Chimeway) -> list[object]:
    with cw.pool.connection() as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM chimeway_deliveries")]
    return [cw.delivery("t", i) for i in ids]


def test_a_send_without_an_adapter_fails_naming_the_channel(
    make_cw: Callable[..., Chimeway],
) -> None:
    cw = make_cw(adapters={"in_app": RecordingAdapter()})
    result = pending_email(cw)
    outcome = cw.deliver(result.delivery_ids[0])
    assert outcome.action == "retry_scheduled"
    [attempt] = cw.explain_delivery("t", result.delivery_ids[0]).attempts
    assert attempt.error is not None
    assert "no adapter for channel 'email'" in attempt.error


def test_the_cli_worker_prints_one_line_and_exits_1(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    pending_email(make_cw())
    result = CliRunner().invoke(cli, ["--database-url", committed_db, "worker"])
    assert result.exit_code == 1
    assert "chimeway worker: database postgresql://" in result.stderr
    assert "adapters in_app=InboxAdapter(inbox); other channels none" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "no adapter for channel 'email' (2 waiting)" in errors[0]


def test_the_startup_line_names_queues_concurrency_and_adapters_not_secrets() -> None:
    with Chimeway(
        "postgresql://app:s3cret@db.internal:5433/prod",
        adapters={
            "email": SmtpAdapter("smtp.test", sender="a@b.test", name="mailer"),
            "in_app": LoggerAdapter(),
        },
    ) as cw:
        line = startup_line(cw.engine, ["chimeway_delivery"], 8)
    assert "s3cret" not in line
    assert line == (
        "chimeway worker: database postgresql://app:***@db.internal:5433/prod; "
        "queues chimeway_delivery; concurrency 8; "
        "adapters email=SmtpAdapter(mailer), in_app=LoggerAdapter(logger); other channels none"
    )
