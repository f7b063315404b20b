"""What operators read: runs, traces and deliveries as tables, or as JSON for scripts.

Each function writes to a given stream, so the CLI stays thin and tests need no click.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

from chimeway.results import (
    DeliveryExplanation,
    DeliveryRedriven,
    DeliverySummary,
    PreferenceRecord,
    RecipientPreferences,
    RunCancelled,
    RunExplanation,
    Transition,
)

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def write_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")


def show(value: T, as_json: bool, render: Callable[[T, TextIO], None], out: TextIO) -> None:
    """JSON for scripts, else the human rendering."""
    if as_json:
        write_json(value, out)
    else:
        render(value, out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), line]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


# Keys that repeat what a trace row already shows, or that only matter in --json.
_QUIET = {
    "anchor",
    "rule_kind",
    "anchor_delivery_id",
    "anchor_timestamp",
    "reactivated_at",
    "attempt_outcome",
    "attempt_error_class",
    "delivery_status",
    "source",
}


def _details(context: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return " ".join(
        f"{k}={_short(v)}"
        for k, v in sorted(context.items())
        if k not in skip and k not in _QUIET and v not in (None, "")
    )


def _short(value: Any) -> str:
    """ISO timestamps as a time of day; the full value is in --json."""
    text = str(value)
    if len(text) >= 26 and text[10:11] == "T":
        return text[11:23]
    return text


def run_explanation(run: RunExplanation, out: TextIO) -> None:
    rows = [
        ("run", run.id),
        ("workflow", f"{run.workflow_key} v{run.workflow_version}"),
        ("recipient", run.recipient_id),
        ("state", run.state),
        ("status reason", run.status_reason),
        ("current step", run.current_step_name),
        ("suspended until", run.suspended_until),
        ("pending signals", run.pending_signals),
        ("terminal reason", run.terminal_reason),
        ("started", run.started_at),
    ]
    if run.status_reason == "cancelled":  # cw.cancel_run: who and why
        context = run.status_context
        rows.append(
            ("cancelled", f"by {context.get('cancelled_by') or '-'}: {context.get('reason')}")
        )
    out.write(table(["field", "value"], rows))


def trace(transitions: Sequence[Transition], out: TextIO) -> None:
    start = transitions[0].created_at if transitions else None
    rows = [
        (
            f"+{(t.created_at - start).total_seconds():.3f}s" if start else "-",
            t.reason,
            f"{t.from_state or '-'} -> {t.to_state}",
            t.step_key,
            _details(t.context, skip=("step_key",)),
        )
        for t in transitions
    ]
    out.write(table(["at", "reason", "state", "step", "details"], rows))


def runs(items: Sequence[RunExplanation], out: TextIO) -> None:
    rows = [
        (
            r.id,
            r.workflow_key,
            r.recipient_id,
            r.state,
            r.current_step_name,
            r.terminal_reason or r.status_reason,
            r.started_at,
        )
        for r in items
    ]
    out.write(table(["run", "workflow", "recipient", "state", "step", "reason", "started"], rows))


def delivery_summaries(items: Sequence[DeliverySummary], out: TextIO) -> None:
    """Deliveries an operator looked up, newest first."""
    if not items:
        out.write("No deliveries found.\n")
        return
    rows = [
        (
            d.delivery_id,
            d.recipient_id,
            d.channel,
            d.status if not d.suppression_reason else f"{d.status} ({d.suppression_reason})",
            d.notification_key,
            d.idempotency_key,
            d.correlation_id,
            d.workflow_run_id,
            d.created_at,
        )
        for d in items
    ]
    headers = ["delivery", "recipient", "channel", "status", "notifier", "idempotency key"]
    out.write(table([*headers, "correlation id", "run", "created"], rows))


def run_cancelled(result: RunCancelled, out: TextIO) -> None:
    if not result.cancelled:
        out.write(f"Run {result.run_id} had already finished ({result.state}); nothing changed.\n")
    else:
        out.write(
            f"Run {result.run_id} cancelled: now {result.state}; "
            f"{len(result.delivery_ids)} delivery(ies) not sent yet cancelled.\n"
        )


def delivery_redriven(result: DeliveryRedriven, out: TextIO) -> None:
    was = str(result.previous_status)
    if result.previous_reason:
        was = f"{was} ({result.previous_reason})"
    out.write(
        f"Delivery {result.delivery_id} redriven: {was} -> {result.status}; a worker sends it.\n"
    )


def delivery(explanation: DeliveryExplanation, out: TextIO) -> None:
    e = explanation
    out.write(
        table(
            ["field", "value"],
            [
                ("delivery", e.delivery_id),
                ("notification", f"{e.notification_key} ({e.notification_id})"),
                ("recipient", e.recipient_id),
                ("channel", e.channel),
                (
                    "status",
                    e.status
                    if not e.suppression_reason
                    else f"{e.status} ({e.suppression_reason})",
                ),
                ("workflow run", e.workflow_run_id),
                ("workflow step", e.workflow_step),
                ("attempts", len(e.attempts)),
            ],
        )
    )
    out.write(f"\nWhy: {e.why}\n")
    if e.decisions:
        out.write("Policy:\n" + "".join(f"  - {d}\n" for d in e.decisions))
    out.write("\n")
    start = e.timeline[0].at if e.timeline else None
    rows = [
        (f"+{(t.at - start).total_seconds():.3f}s" if start else "-", t.event, _details(t.detail))
        for t in e.timeline
    ]
    out.write(table(["at", "event", "details"], rows))


def preferences(found: RecipientPreferences, out: TextIO) -> None:
    """A recipient's rules, quiet hours and caps, beside the tenant's defaults."""
    owner = found.recipient_id or "(tenant default)"
    rules = [("recipient", r) for r in found.rules] + [
        ("tenant default", r) for r in found.default_rules
    ]
    out.write(f"Preferences of {owner} in tenant {found.tenant_id}\n\n")
    out.write(
        table(
            ["whose", "channel", "category", "workflow", "state", "set at", "source"],
            [
                (
                    whose,
                    r.channel or "all",
                    r.category,
                    r.workflow,
                    "on" if r.enabled else "off",
                    r.set_at,
                    r.source,
                )
                for whose, r in rules
            ],
        )
        if rules
        else "No rules: everything is on.\n"
    )
    quiet = [("recipient", found.quiet_hours), ("tenant default", found.default_quiet_hours)]
    caps = [("recipient", c) for c in found.caps] + [
        ("tenant default", c) for c in found.default_caps
    ]
    lines = [
        f"quiet hours ({whose}): "
        + (
            f"{q.start:%H:%M}-{q.end:%H:%M} {q.timezone or 'in the recipient zone'}"
            if q.start and q.end
            else "none"
        )
        for whose, q in quiet
        if q is not None
    ] + [
        f"cap ({whose}) on {c.channel or 'all channels'}: "
        + (f"{c.max_count} per {c.per}" if c.max_count else "none")
        for whose, c in caps
    ]
    out.write("\n" + "".join(f"{line}\n" for line in lines) if lines else "")


def preference(rule: PreferenceRecord, out: TextIO) -> None:
    scope = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("channel", rule.channel),
            ("category", rule.category),
            ("workflow", rule.workflow),
        )
        if value
    )
    whose = rule.recipient_id or "the tenant's default"
    out.write(f"{whose}: {scope} turned {'on' if rule.enabled else 'off'}.\n")
