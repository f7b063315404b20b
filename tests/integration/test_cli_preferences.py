"""``chimeway preferences get|set`` through click's CliRunner, on a committed database."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner, Result

from chimeway import Chimeway, Triggered
from chimeway.cli import cli
from chimeway.testing import drain
from tests.integration.notifiers import Welcome


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", url, *args])


def test_set_then_get(committed_db: str, cw: Chimeway) -> None:
    off = run(
        committed_db,
        "preferences",
        "set",
        "--tenant",
        "t",
        "ana",
        "--channel",
        "email",
        "--category",
        "account",
        "--off",
    )
    assert off.exit_code == 0, off.stderr
    assert off.stdout == "ana: channel email, category account turned off.\n"
    default = run(
        committed_db,
        "preferences",
        "set",
        "--tenant",
        "t",
        "--default",
        "--channel",
        "sms",
        "--off",
        "--json",
    )
    assert json.loads(default.stdout)["recipient_id"] is None
    cw.preferences.set_cap("t", "ana", 5, dt.timedelta(hours=1))

    shown = run(committed_db, "preferences", "get", "--tenant", "t", "ana")
    assert shown.exit_code == 0, shown.stderr
    assert "recipient       email    account" in shown.stdout
    assert "tenant default  sms" in shown.stdout
    assert "cap (recipient) on all channels: 5 per 1:00:00" in shown.stdout
    as_json = json.loads(
        run(committed_db, "preferences", "get", "--tenant", "t", "ana", "--json").stdout
    )
    assert [r["category"] for r in as_json["rules"]] == ["account"]
    assert as_json["caps"][0]["per"] == 3600.0

    # Planning reads what the command set.
    result = cw.trigger(
        Welcome, {"users": ["ana"], "channels": ["email"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    drain(cw)
    assert str(cw.delivery("t", result.delivery_ids[0]).suppression_reason) == ("category_disabled")


def test_usage_errors_are_one_line(committed_db: str) -> None:
    neither = run(committed_db, "preferences", "get", "--tenant", "t")
    assert neither.exit_code == 2
    assert "give either a RECIPIENT_ID or --default" in neither.stderr
    no_state = run(committed_db, "preferences", "set", "--tenant", "t", "ana", "--channel", "e")
    assert no_state.exit_code == 2 and "give --on or --off" in no_state.stderr
    no_scope = run(committed_db, "preferences", "set", "--tenant", "t", "ana", "--off")
    assert no_scope.exit_code == 1
    assert no_scope.stderr.strip() == (
        "Error: PreferenceScope: give a channel, a category or a workflow"
    )


def test_deliveries_explain_lists_the_policy_decisions(committed_db: str, cw: Chimeway) -> None:
    cw.preferences.set("t", "ana", enabled=False, channel="email")
    result = cw.trigger(
        Welcome, {"users": ["ana"], "channels": ["email"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    shown = run(committed_db, "deliveries", "explain", "--tenant", "t", str(result.delivery_ids[0]))
    assert shown.exit_code == 0, shown.stderr
    assert "Why: Not sent: ana turned email off at " in shown.stdout
    assert "Policy:\n  - Not sent: ana turned email off at " in shown.stdout
