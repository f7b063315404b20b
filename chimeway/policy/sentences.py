"""Each policy decision in one sentence, from the evidence its history row keeps (design §13),
pure: what ``explain_delivery`` tells an operator.

- "Not sent: ana turned email off for 'mentions' at 2026-03-01 12:03Z."
- "Held by quiet hours 22:00 to 07:00 Europe/Paris until 2026-06-02 07:00 local (05:00Z)."
  (with an en dash between the times)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chimeway.policy.decision import NO_ADDRESS, QUIET_HOURS, THROTTLED
from chimeway.policy.reasons import PolicyReason

_OPT_OUTS = {
    PolicyReason.CHANNEL_DISABLED,
    PolicyReason.CATEGORY_DISABLED,
    PolicyReason.WORKFLOW_DISABLED,
}
_AT_CLAIM = " (checked again when it was about to be sent)"


def describe(reason: str, context: Mapping[str, Any], *, recipient_id: str, channel: str) -> str:
    """The sentence for a decision: ``reason`` is the suppression reason, or the planning
    reason of a hold (``quiet_hours``, ``throttled``); ``context`` its evidence."""
    claim = _AT_CLAIM if context.get("checkpoint") == "claim" else ""
    if reason in _OPT_OUTS:
        return f"Not sent: {opt_out(context, recipient_id=recipient_id)}{claim}."
    if reason == PolicyReason.DELIVERY_CAP_REACHED:
        scope = f"on {context['channel']}" if context.get("channel") else "on all channels"
        whose = "the tenant's default cap" if context.get("owner") == "tenant" else "the cap"
        return (
            f"Not sent: {whose} of {context.get('max_count')} deliveries per "
            f"{duration(context.get('window_seconds'))} {scope} for {recipient_id} was reached "
            f"({context.get('recent_count')} already in the window){claim}."
        )
    if reason == QUIET_HOURS:
        whose = (
            "the tenant's default quiet hours"
            if context.get("owner") == "tenant"
            else ("quiet hours")
        )
        return (
            f"Held by {whose} {context.get('start')}\N{EN DASH}{context.get('end')} "
            f"{context.get('timezone')} until {_local_and_utc(context)}{claim}."
        )
    if reason == THROTTLED:
        until = _instant(context.get("until"))
        when = f"{until:%H:%M:%S.%f}"[:-3] + "Z" if until else "later"
        return (
            f"Held by the {channel} throttle ({context.get('limit')} per "
            f"{duration(context.get('per_seconds'))}, key {context.get('key')!r}): the next "
            f"free slot is at {when}."
        )
    if reason == NO_ADDRESS:
        return (
            f"Not sent: the {channel} adapter needs the recipient's {context.get('needs')}, "
            "which their profile lacks."
        )
    return f"Not sent: {reason}."


def opt_out(context: Mapping[str, Any], *, recipient_id: str) -> str:
    """Who turned what off, and when: "ana turned email off for 'mentions' at ..."."""
    what = _scope(context)
    when = _when(context.get("set_at"))
    if context.get("owner") == "tenant":
        return f"the tenant's default turns {what} off (set at {when})"
    source = str(context.get("source") or "")
    kind, _, via = source.partition(":")
    if kind == "unsubscribed":
        how = "an unsubscribe link" if via == "link" else f"{via or 'the provider'}"
        return f"{recipient_id} unsubscribed from {what} through {how} at {when}"
    if kind == "complained":
        return f"{recipient_id} reported {what} as spam to {via or 'the provider'} at {when}"
    return f"{recipient_id} turned {what} off at {when}"


def bypassed(context: Mapping[str, Any], *, recipient_id: str) -> str:
    """A critical notifier went past an opt-out."""
    return f"Sent although {opt_out(context, recipient_id=recipient_id)}: the notifier is critical."


def duration(seconds: object) -> str:
    """``3600`` -> "1 hour", ``90`` -> "90 s"."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "?"
    span = timedelta(seconds=seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count, rest = divmod(span.total_seconds(), size)
        if count and not rest:
            return f"{int(count)} {unit}" + ("s" if count != 1 else "")
    return f"{seconds:g} s"


def _scope(context: Mapping[str, Any]) -> str:
    channel, category, workflow = (context.get(k) for k in ("channel", "category", "workflow"))
    if category:
        return f"{channel} for '{category}'" if channel else f"'{category}' on every channel"
    if workflow:
        return (
            f"{channel} for the '{workflow}' workflow"
            if channel
            else f"the '{workflow}' workflow on every channel"
        )
    return str(channel)


def _when(value: object) -> str:
    at = _instant(value)
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M}Z" if at else "an unknown time"


def _local_and_utc(context: Mapping[str, Any]) -> str:
    until = _instant(context.get("until"))
    if until is None:
        return "the window's end"
    utc = f"{until.astimezone(UTC):%H:%M}Z"
    try:
        local = until.astimezone(ZoneInfo(str(context.get("timezone"))))
    except (ZoneInfoNotFoundError, ValueError):
        return f"{until.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    return f"{local:%Y-%m-%d %H:%M} local ({utc})"


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.utcoffset() is not None else None
    return None
