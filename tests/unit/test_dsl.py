"""The workflow declaration DSL (no database)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from chimeway.dsl import (
    ANCHOR,
    MAX_KEY_LENGTH,
    MAX_WAIT,
    OnOutcome,
    OnSignal,
    Step,
    Stop,
    WaitUntil,
    Workflow,
    rule_from_dict,
)
from chimeway.errors import ChimewayError, InvalidWorkflow
from chimeway.types import Outcome

READ = "chimeway.notification.read"
CLICKED = "chimeway.notification.clicked"


def example(**changes: Any) -> Workflow:
    """The escalation workflow from the brief; keyword changes replace parts of it."""
    notice = changes.get(
        "notice_progress",
        [
            WaitUntil(delay=timedelta(hours=2), to_step="email", cancel_signals=[READ]),
            OnSignal(event=CLICKED, to_step="email"),
        ],
    )
    email = changes.get(
        "email_progress", [Stop(outcome="bounced"), OnOutcome(outcome="delivered", to_step="sms")]
    )
    steps = changes.get(
        "steps",
        [
            Step("notice", channel="in_app", progress=notice),
            Step("email", channel=changes.get("email_channel", "email"), progress=email),
            Step("sms", channel="sms"),
        ],
    )
    return Workflow(
        key=changes.get("key", "mention_escalation"),
        version=changes.get("version", 1),
        steps=steps,
    )


def two_steps(*progress: Any, first: str = "a", second: str = "b") -> Workflow:
    return Workflow("w", 1, [Step(first, "in_app", list(progress)), Step(second, "email")])


# -- building -----------------------------------------------------------------------------


def test_example_builds_with_normalised_fields() -> None:
    wf = example()
    assert [step.key for step in wf.steps] == ["notice", "email", "sms"]
    wait, on_signal = wf.steps[0].progress
    assert isinstance(wait, WaitUntil)
    assert wait.delay == timedelta(hours=2)
    assert wait.delay_seconds == 7200
    assert wait.cancel_signals == (READ,)
    assert wait.anchor == ANCHOR == "prior_delivery_terminal_at"
    assert on_signal == OnSignal(event=CLICKED, to_step="email")
    stop, on_outcome = wf.steps[1].progress
    assert stop == Stop(outcome=Outcome.BOUNCED)
    assert isinstance(on_outcome, OnOutcome)
    assert on_outcome.outcome is Outcome.DELIVERED
    assert wf.steps[2].progress == ()


def test_rule_kinds() -> None:
    rules = [
        WaitUntil(delay=1, to_step="b"),
        OnOutcome(outcome="bounced", to_step="b"),
        Stop(outcome="bounced"),
        OnSignal(event="e", to_step="b"),
    ]
    assert [rule.kind for rule in rules] == ["wait_until", "on_outcome", "stop", "on_signal"]
    assert WaitUntil.kind == "wait_until"


def test_key_may_be_positional_or_keyword() -> None:
    assert Step("a", channel="x") == Step(key="a", channel="x") == Step("a", "x", [])
    steps = [Step("a", "x")]
    assert Workflow("w", version=1, steps=steps) == Workflow(key="w", version=1, steps=steps)
    assert Workflow("w", 1, steps) == Workflow(key="w", version=1, steps=steps)


@pytest.mark.parametrize(
    "delay", [7200, timedelta(hours=2), timedelta(seconds=7200), timedelta(minutes=120)]
)
def test_delay_as_int_seconds_or_timedelta(delay: int | timedelta) -> None:
    rule = WaitUntil(delay=delay, to_step="b")
    assert rule == WaitUntil(delay=7200, to_step="b")
    assert rule.delay == timedelta(hours=2)
    assert rule.to_dict()["delay_seconds"] == 7200
    assert type(rule.to_dict()["delay_seconds"]) is int


def test_outcome_accepts_enum_or_string_and_cancel_signals_a_tuple() -> None:
    assert OnOutcome(outcome=Outcome.BOUNCED, to_step="b") == OnOutcome(
        outcome="bounced", to_step="b"
    )
    signals = tuple(f"e{i}" for i in range(10))  # exactly the maximum
    assert WaitUntil(delay=1, to_step="b", cancel_signals=signals).cancel_signals == signals


def test_models_are_immutable_and_hashable() -> None:
    wf = example()
    rule = wf.steps[0].progress[0]
    for obj, name, value in [
        (wf, "key", "other"),
        (wf, "steps", ()),
        (wf.steps[0], "channel", "sms"),
        (rule, "to_step", "sms"),
        (rule, "kind", "stop"),
    ]:
        with pytest.raises(AttributeError, match="immutable"):
            setattr(obj, name, value)
        assert getattr(obj, name) != value
    with pytest.raises(AttributeError, match="immutable"):
        del wf.key
    assert isinstance(wf.steps, tuple)
    assert isinstance(wf.steps[0].progress, tuple)
    assert hash(example()) == hash(wf)
    assert len({example(), wf}) == 1


def test_helpers() -> None:
    wf = example(email_channel="in_app")
    assert wf.first_step.key == "notice"
    step = wf.step("email")
    assert step is not None
    assert step.channel == "in_app"
    assert wf.step("missing") is None
    assert wf.channels == ["in_app", "sms"]
    assert example().channels == ["in_app", "email", "sms"]
    assert wf.steps[0].rules_of_kind("on_signal") == (OnSignal(event=CLICKED, to_step="email"),)
    assert wf.steps[2].rules_of_kind("stop") == ()


# -- serialization ------------------------------------------------------------------------


def test_step_rows_shape() -> None:
    assert example().step_rows() == [
        {
            "step_key": "notice",
            "step_order": 1,
            "channel": "in_app",
            "config": {
                "progress": [
                    {
                        "kind": "wait_until",
                        "anchor": "prior_delivery_terminal_at",
                        "delay_seconds": 7200,
                        "to_step": "email",
                        "cancel_signals": [READ],
                    },
                    {"kind": "on_signal", "event": CLICKED, "to_step": "email"},
                ]
            },
        },
        {
            "step_key": "email",
            "step_order": 2,
            "channel": "email",
            "config": {
                "progress": [
                    {"kind": "stop", "outcome": "bounced"},
                    {"kind": "on_outcome", "outcome": "delivered", "to_step": "sms"},
                ]
            },
        },
        {"step_key": "sms", "step_order": 3, "channel": "sms", "config": {"progress": []}},
    ]


def test_round_trip_through_json_rows_in_any_order() -> None:
    wf = example()
    rows = json.loads(json.dumps(wf.step_rows()))  # as jsonb comes back from the database
    random.Random(7).shuffle(rows)
    assert [row["step_order"] for row in rows] != [1, 2, 3]
    rebuilt = Workflow.from_rows(wf.key, wf.version, rows)
    assert rebuilt == wf
    assert rebuilt.checksum() == wf.checksum()
    assert rebuilt.step_rows() == wf.step_rows()


def test_from_rows_accepts_row_objects() -> None:
    @dataclass
    class StepRow:
        step_key: str
        step_order: int
        channel: str
        config: dict[str, Any]

    wf = example()
    rows = [StepRow(**row) for row in reversed(wf.step_rows())]
    assert Workflow.from_rows(wf.key, wf.version, rows) == wf


@pytest.mark.parametrize(
    "rule",
    [
        WaitUntil(delay=90, to_step="b"),
        WaitUntil(delay=timedelta(days=3), to_step="b", cancel_signals=["x", "y"]),
        OnOutcome(outcome="retries_exhausted", to_step="b"),
        Stop(outcome="suppressed"),
        OnSignal(event="e", to_step="b"),
    ],
)
def test_rule_dict_round_trip(rule: Any) -> None:
    data = rule.to_dict()
    assert data["kind"] == rule.kind
    assert json.loads(json.dumps(data)) == data
    assert rule_from_dict(data) == rule


def test_checksum_is_sha256_of_canonical_json() -> None:
    wf = example()
    canonical = json.dumps(
        {"key": wf.key, "version": wf.version, "steps": wf.step_rows()},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert wf.checksum() == hashlib.sha256(canonical.encode()).hexdigest()
    assert example().checksum() == wf.checksum()


def test_checksum_is_remembered_per_workflow_object_and_stays_bounded() -> None:
    from chimeway import dsl

    wf = example()
    assert wf.checksum() is wf.checksum()  # computed once for this object
    many = [example(key=f"k{i}") for i in range(dsl._CHECKSUMS_KEPT + 5)]
    sums = [w.checksum() for w in many]
    assert len(set(sums)) == len(many)  # each its own, whatever was forgotten between
    assert len(dsl._CHECKSUMS) <= dsl._CHECKSUMS_KEPT
    assert [w.checksum() for w in many] == sums


CHANGES: dict[str, Callable[[], Workflow]] = {
    "key": lambda: example(key="other"),
    "version": lambda: example(version=2),
    "channel": lambda: example(email_channel="push"),
    "step key": lambda: example(
        steps=[
            Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="mail")]),
            Step("mail", "email"),
        ]
    ),
    "step order": lambda: example(
        notice_progress=[],
        email_progress=[],
        steps=[Step("email", "email"), Step("notice", "in_app"), Step("sms", "sms")],
    ),
    "fewer steps": lambda: example(
        email_progress=[], steps=[Step("notice", "in_app"), Step("email", "email")]
    ),
    "delay": lambda: example(
        notice_progress=[WaitUntil(delay=7201, to_step="email", cancel_signals=[READ])]
    ),
    "cancel signals": lambda: example(
        notice_progress=[WaitUntil(delay=7200, to_step="email", cancel_signals=[])]
    ),
    "wait to_step": lambda: example(
        notice_progress=[WaitUntil(delay=7200, to_step="sms", cancel_signals=[READ])]
    ),
    "signal event": lambda: example(
        notice_progress=[
            WaitUntil(delay=7200, to_step="email", cancel_signals=[READ]),
            OnSignal(event="other", to_step="email"),
        ]
    ),
    "stop outcome": lambda: example(
        email_progress=[
            Stop(outcome="permanent_failure"),
            OnOutcome(outcome="delivered", to_step="sms"),
        ]
    ),
    "on_outcome outcome": lambda: example(
        email_progress=[Stop(outcome="bounced"), OnOutcome(outcome="suppressed", to_step="sms")]
    ),
    "rule order": lambda: example(
        email_progress=[OnOutcome(outcome="delivered", to_step="sms"), Stop(outcome="bounced")]
    ),
    "rule kind": lambda: example(
        email_progress=[
            OnOutcome(outcome="bounced", to_step="sms"),
            OnOutcome(outcome="delivered", to_step="sms"),
        ]
    ),
    "rule removed": lambda: example(email_progress=[Stop(outcome="bounced")]),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_changes_the_checksum(change: Callable[[], Workflow]) -> None:
    changed = change()
    assert changed != example()
    assert changed.checksum() != example().checksum()


def test_all_checksums_distinct() -> None:
    checksums = {change().checksum() for change in CHANGES.values()} | {example().checksum()}
    assert len(checksums) == len(CHANGES) + 1


# -- rejections ---------------------------------------------------------------------------

STEP = Step("a", "x")
LONG = "e" * 201


def _rejects(factory: Callable[[], object], *fragments: str) -> Any:
    return pytest.param(factory, fragments)


REJECTIONS = {
    # workflow fields
    "blank workflow key": _rejects(lambda: Workflow("", 1, [STEP]), "workflow ''", "key", "blank"),
    "whitespace workflow key": _rejects(
        lambda: Workflow("  ", 1, [STEP]), "workflow '  '", "key: must not be blank"
    ),
    "workflow key not str": _rejects(lambda: Workflow(5, 1, [STEP]), "workflow 5", "key", "string"),
    "missing workflow key": _rejects(lambda: Workflow(version=1, steps=[STEP]), "key: required"),
    "version 0": _rejects(
        lambda: Workflow("w", 0, [STEP]), "workflow 'w'", "version", "greater than or equal to 1"
    ),
    "version -1": _rejects(lambda: Workflow("w", -1, [STEP]), "workflow 'w'", "version", "-1"),
    "version str": _rejects(
        lambda: Workflow("w", "1", [STEP]), "workflow 'w'", "version", "integer"
    ),
    "version float": _rejects(lambda: Workflow("w", 1.0, [STEP]), "version", "integer"),
    "version bool": _rejects(lambda: Workflow("w", True, [STEP]), "version", "integer"),
    "version too large": _rejects(lambda: Workflow("w", 2**31, [STEP]), "version", "less than"),
    "missing version": _rejects(
        lambda: Workflow("w", steps=[STEP]), "workflow 'w'", "version: required"
    ),
    "no steps": _rejects(
        lambda: Workflow("w", 1, []), "workflow 'w'", "steps", "at least one step"
    ),
    "missing steps": _rejects(lambda: Workflow("w", 1), "workflow 'w'", "steps: required"),
    "steps not a list": _rejects(lambda: Workflow("w", 1, STEP), "workflow 'w'", "steps", "list"),
    "step not a Step": _rejects(
        lambda: Workflow("w", 1, [STEP, {"key": "b", "channel": "x"}]),
        "workflow 'w'",
        "steps[1]",
        "must be a Step, got dict",
    ),
    "workflow extra field": _rejects(
        lambda: Workflow("w", 1, [STEP], category="x"), "workflow 'w'", "category", "unexpected"
    ),
    "workflow key twice": _rejects(
        lambda: Workflow("w", 1, [STEP], key="v"), "workflow", "key", "positionally and by keyword"
    ),
    # workflow structure
    "duplicate step keys": _rejects(
        lambda: Workflow("w", 1, [Step("a", "x"), Step("b", "y"), Step("a", "z")]),
        "workflow 'w'",
        "step 'a'",
        "duplicate step key",
        "steps[0]",
        "steps[2]",
    ),
    "unknown to_step (wait_until)": _rejects(
        lambda: two_steps(WaitUntil(delay=1, to_step="nope")),
        "workflow 'w'",
        "step 'a'",
        "progress[0] (wait_until)",
        "to_step",
        "unknown step 'nope'",
    ),
    "unknown to_step (on_outcome)": _rejects(
        lambda: two_steps(Stop(outcome="bounced"), OnOutcome(outcome="delivered", to_step="c")),
        "workflow 'w'",
        "step 'a'",
        "progress[1] (on_outcome)",
        "to_step",
        "unknown step 'c'",
    ),
    "unknown to_step (on_signal)": _rejects(
        lambda: two_steps(WaitUntil(delay=5, to_step="b"), OnSignal(event="e", to_step="B")),
        "step 'a'",
        "progress[1] (on_signal)",
        "unknown step 'B'",
    ),
    "to_step is the same step": _rejects(
        lambda: two_steps(WaitUntil(delay=5, to_step="a")),
        "workflow 'w'",
        "step 'a'",
        "progress[0] (wait_until)",
        "to_step",
        "later step",
        "terminates",
    ),
    "to_step is an earlier step": _rejects(
        lambda: Workflow(
            "w",
            1,
            [
                Step("a", "x"),
                Step(
                    "b", "y", [Stop(outcome="bounced"), OnOutcome(outcome="delivered", to_step="a")]
                ),
            ],
        ),
        "workflow 'w'",
        "step 'b'",
        "progress[1] (on_outcome)",
        "'a' is not after 'b'",
        "terminates",
    ),
    "on_signal backward": _rejects(
        lambda: Workflow(
            "w",
            1,
            [
                Step("a", "x"),
                Step("b", "y", [WaitUntil(delay=5, to_step="c"), OnSignal(event="e", to_step="a")]),
                Step("c", "z"),
            ],
        ),
        "step 'b'",
        "progress[1] (on_signal)",
        "later step",
    ),
    # step fields
    "blank step key": _rejects(lambda: Step("", "x"), "step ''", "key", "blank"),
    "whitespace step key": _rejects(lambda: Step(" \t", "x"), "step ' \\t'", "key", "blank"),
    "step key not str": _rejects(lambda: Step(1, "x"), "step 1", "key", "string"),
    "missing step key": _rejects(lambda: Step(channel="x"), "step", "key: required"),
    "blank channel": _rejects(lambda: Step("a", ""), "step 'a'", "channel", "blank"),
    "whitespace channel": _rejects(lambda: Step("a", "   "), "step 'a'", "channel", "blank"),
    "channel not str": _rejects(lambda: Step("a", None), "step 'a'", "channel", "string"),
    "missing channel": _rejects(lambda: Step("a"), "step 'a'", "channel: required"),
    "progress a rule": _rejects(
        lambda: Step("a", "x", Stop(outcome="bounced")), "step 'a'", "progress", "must be a list"
    ),
    "progress a str": _rejects(lambda: Step("a", "x", "stop"), "step 'a'", "progress", "list"),
    "progress item a dict": _rejects(
        lambda: Step("a", "x", [Stop(outcome="bounced"), {"kind": "stop", "outcome": "bounced"}]),
        "step 'a'",
        "progress[1]",
        "must be a WaitUntil, OnOutcome, Stop or OnSignal, got dict",
    ),
    "progress item a Step": _rejects(
        lambda: Step("a", "x", [Step("b", "y")]), "step 'a'", "progress[0]", "got Step"
    ),
    "step extra field": _rejects(
        lambda: Step("a", "x", order=1), "step 'a'", "order", "unexpected field"
    ),
    "step too many positionals": _rejects(
        lambda: Step("a", "x", [], "extra"), "step", "at most 3 positional"
    ),
    # rule fields
    "blank to_step (wait_until)": _rejects(
        lambda: WaitUntil(delay=1, to_step=""), "wait_until rule", "to_step", "blank"
    ),
    "blank to_step (on_outcome)": _rejects(
        lambda: OnOutcome(outcome="bounced", to_step=" "), "on_outcome rule", "to_step", "blank"
    ),
    "blank to_step (on_signal)": _rejects(
        lambda: OnSignal(event="e", to_step="\n"), "on_signal rule", "to_step", "blank"
    ),
    "to_step not str": _rejects(
        lambda: OnSignal(event="e", to_step=2), "on_signal rule", "to_step", "string"
    ),
    "blank event": _rejects(
        lambda: OnSignal(event="", to_step="b"), "on_signal rule", "event", "blank"
    ),
    "event too long": _rejects(
        lambda: OnSignal(event=LONG, to_step="b"), "on_signal rule", "event", "at most 200"
    ),
    "unknown outcome (on_outcome)": _rejects(
        lambda: OnOutcome(outcome="opened", to_step="b"), "on_outcome rule", "outcome", "'opened'"
    ),
    "unknown outcome (stop)": _rejects(
        lambda: Stop(outcome="Bounced"), "stop rule", "outcome", "'bounced'", "got 'Bounced'"
    ),
    "missing outcome": _rejects(Stop, "stop rule", "outcome: required"),
    "missing to_step": _rejects(
        lambda: OnOutcome(outcome="bounced"), "on_outcome rule", "to_step: required"
    ),
    "missing delay": _rejects(lambda: WaitUntil(to_step="b"), "wait_until rule", "delay: required"),
    "delay 0": _rejects(
        lambda: WaitUntil(delay=0, to_step="b"), "wait_until rule", "delay", "positive"
    ),
    "delay negative int": _rejects(
        lambda: WaitUntil(delay=-60, to_step="b"), "wait_until rule", "delay", "positive", "-60"
    ),
    "delay zero timedelta": _rejects(
        lambda: WaitUntil(delay=timedelta(0), to_step="b"), "delay", "positive"
    ),
    "delay negative timedelta": _rejects(
        lambda: WaitUntil(delay=timedelta(hours=-1), to_step="b"), "delay", "positive", "-3600"
    ),
    "delay sub-second": _rejects(
        lambda: WaitUntil(delay=timedelta(milliseconds=500), to_step="b"),
        "wait_until rule",
        "delay",
        "whole seconds",
        "0.5",
    ),
    "delay with a fraction": _rejects(
        lambda: WaitUntil(delay=timedelta(seconds=60, microseconds=1), to_step="b"),
        "delay",
        "whole seconds",
    ),
    "delay float": _rejects(lambda: WaitUntil(delay=1.5, to_step="b"), "delay", "got float"),
    "delay str": _rejects(lambda: WaitUntil(delay="PT2H", to_step="b"), "delay", "got str"),
    "delay bool": _rejects(lambda: WaitUntil(delay=True, to_step="b"), "delay", "got bool"),
    "delay too large": _rejects(lambda: WaitUntil(delay=10**18, to_step="b"), "delay", "too large"),
    "too many cancel signals": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=[f"e{i}" for i in range(11)]),
        "wait_until rule",
        "cancel_signals",
        "at most 10",
        "got 11",
    ),
    "blank cancel signal": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=["e", ""]),
        "wait_until rule",
        "cancel_signals[1]",
        "blank",
    ),
    "whitespace cancel signal": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=[" "]), "cancel_signals[0]", "blank"
    ),
    "duplicate cancel signal": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=[READ, "x", READ]),
        "wait_until rule",
        "cancel_signals",
        f"duplicate cancel signal {READ!r}",
    ),
    "cancel signal not str": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=[1]), "cancel_signals[0]", "string"
    ),
    "cancel signal too long": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=[LONG]), "cancel_signals[0]", "200"
    ),
    "cancel signals a str": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=READ), "cancel_signals", "list"
    ),
    # a rule with fields of another kind
    "wait_until with outcome": _rejects(
        lambda: WaitUntil(delay=60, to_step="b", outcome="bounced"),
        "wait_until rule",
        "outcome: unexpected field",
    ),
    "stop with to_step": _rejects(
        lambda: Stop(outcome="bounced", to_step="x"), "stop rule", "to_step: unexpected field"
    ),
    "stop with event": _rejects(
        lambda: Stop(outcome="bounced", event="e"), "stop rule", "event: unexpected field"
    ),
    "on_outcome with delay": _rejects(
        lambda: OnOutcome(outcome="bounced", to_step="b", delay=5),
        "on_outcome rule",
        "delay: unexpected field",
    ),
    "on_signal with cancel_signals": _rejects(
        lambda: OnSignal(event="e", to_step="b", cancel_signals=["x"]),
        "on_signal rule",
        "cancel_signals: unexpected field",
    ),
    "rule with kind": _rejects(
        lambda: Stop(kind="stop", outcome="bounced"), "stop rule", "kind: unexpected field"
    ),
    "rule positional arguments": _rejects(
        lambda: WaitUntil(60, "b"), "wait_until rule", "no positional arguments"
    ),
}

CONTROL = "contains the control character U+0000 at index 1; control characters are not allowed"
SURROGATE = "contains a lone surrogate (U+D800) at index 1, which is not valid Unicode text"
TOO_LONG_KEY = "k" * 256
MAX_WAIT_RULE = "is too large: at most MAX_WAIT, 366 days (31622400 seconds)"

# The identifier rule (chimeway.inputs) and MAX_WAIT, wherever a name or a delay is declared.
IDENTIFIER_REJECTIONS = {
    "NUL in workflow key": _rejects(
        lambda: Workflow("w\x00", 1, [STEP]), "workflow 'w\\x00'", f"key: {CONTROL}"
    ),
    "surrogate in workflow key": _rejects(
        lambda: Workflow("w\ud800", 1, [STEP]), "workflow 'w\\ud800'", f"key: {SURROGATE}"
    ),
    "overlong workflow key": _rejects(
        lambda: Workflow(TOO_LONG_KEY, 1, [STEP]),
        "workflow a str of 256 characters starting 'kkkk",
        "key: is 256 characters long; at most 255 allowed",
    ),
    "NUL in step key": _rejects(lambda: Step("a\x00", "x"), f"key: {CONTROL}"),
    "newline in step key": _rejects(
        lambda: Step("a\nb", "x"), "key: contains the control character U+000A at index 1"
    ),
    "surrogate in step key": _rejects(lambda: Step("a\ud800", "x"), f"key: {SURROGATE}"),
    "overlong step key": _rejects(lambda: Step(TOO_LONG_KEY, "x"), "key: is 256 characters long"),
    "NUL in channel": _rejects(lambda: Step("a", "e\x00"), "step 'a'", f"channel: {CONTROL}"),
    "C1 control in channel": _rejects(
        lambda: Step("a", "e\x85"), "channel: contains the control character U+0085"
    ),
    "surrogate in channel": _rejects(lambda: Step("a", "e\ud800"), f"channel: {SURROGATE}"),
    "overlong channel": _rejects(lambda: Step("a", TOO_LONG_KEY), "channel: is 256 characters"),
    "NUL in to_step": _rejects(
        lambda: OnOutcome(outcome="bounced", to_step="b\x00"), f"to_step: {CONTROL}"
    ),
    "DEL in on_signal event": _rejects(
        lambda: OnSignal(event="e\x7f", to_step="b"),
        "on_signal rule",
        "event: contains the control character U+007F at index 1",
    ),
    "surrogate in on_signal event": _rejects(
        lambda: OnSignal(event="e\ud800", to_step="b"), f"event: {SURROGATE}"
    ),
    "NUL in cancel signal": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=["ok", "r\x00"]),
        "wait_until rule",
        f"cancel_signals[1]: {CONTROL}",
    ),
    "surrogate in cancel signal": _rejects(
        lambda: WaitUntil(delay=1, to_step="b", cancel_signals=["r\ud800"]),
        f"cancel_signals[0]: {SURROGATE}",
    ),
    "delay 10**12 seconds": _rejects(
        lambda: WaitUntil(delay=10**12, to_step="b"),
        "wait_until rule",
        f"delay: {MAX_WAIT_RULE}, got 1000000000000 seconds",
    ),
    "delay one second past MAX_WAIT": _rejects(
        lambda: WaitUntil(delay=MAX_WAIT + timedelta(seconds=1), to_step="b"),
        f"delay: {MAX_WAIT_RULE}, got 31622401 seconds",
    ),
    "delay of 5001 digits": _rejects(
        lambda: WaitUntil(delay=10**5000, to_step="b"), f"delay: {MAX_WAIT_RULE}, got int"
    ),
    "delay largest timedelta": _rejects(
        lambda: WaitUntil(delay=timedelta.max - timedelta(microseconds=999_999), to_step="b"),
        f"delay: {MAX_WAIT_RULE}",
    ),
    "huge negative delay": _rejects(
        lambda: WaitUntil(delay=-(10**30), to_step="b"), "delay: must be positive"
    ),
    "stored delay past MAX_WAIT": _rejects(
        lambda: rule_from_dict(
            {"kind": "wait_until", "anchor": ANCHOR, "delay_seconds": 10**12, "to_step": "b"}
        ),
        f"delay: {MAX_WAIT_RULE}",
    ),
    "version of 5001 digits": _rejects(lambda: Workflow("w", 10**5000, [STEP]), "version"),
    "stored kind far too long": _rejects(
        lambda: rule_from_dict({"kind": "k" * 10_000}), "kind: must be one of"
    ),
}


@pytest.mark.parametrize(
    ("factory", "fragments"), IDENTIFIER_REJECTIONS.values(), ids=IDENTIFIER_REJECTIONS.keys()
)
def test_names_and_delays_rejected(
    factory: Callable[[], object], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        factory()
    message = str(info.value)
    assert "\n" not in message
    assert "\x00" not in message
    assert len(message) < 400  # never the whole of a long value
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_longest_names_and_wait_are_accepted() -> None:
    key = "k" * MAX_KEY_LENGTH
    wait = WaitUntil(delay=MAX_WAIT, to_step=key, cancel_signals=["e" * 200])
    workflow = Workflow(key, 1, [Step("a", key, progress=[wait]), Step(key, "email")])
    assert workflow.steps[0].progress[0] == WaitUntil(
        delay=31_622_400, to_step=key, cancel_signals=["e" * 200]
    )
    assert MAX_WAIT.days == 366


@pytest.mark.parametrize(("factory", "fragments"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_rejected(factory: Callable[[], object], fragments: tuple[str, ...]) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        factory()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_invalid_workflow_is_a_chimeway_error_without_a_pydantic_cause() -> None:
    with pytest.raises(ChimewayError) as info:
        Stop(outcome="nope")
    assert isinstance(info.value, InvalidWorkflow)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


ROW = {"step_key": "a", "step_order": 1, "channel": "x", "config": {"progress": []}}
WAIT = {"kind": "wait_until", "anchor": ANCHOR, "delay_seconds": 60, "to_step": "b"}

STORED_REJECTIONS = {
    "rule not a mapping": _rejects(lambda: rule_from_dict(["stop"]), "progress rule", "mapping"),
    "unknown kind": _rejects(lambda: rule_from_dict({"kind": "wait"}), "kind", "'wait'"),
    "missing kind": _rejects(lambda: rule_from_dict({"outcome": "bounced"}), "kind", "None"),
    "wrong anchor": _rejects(
        lambda: rule_from_dict({**WAIT, "anchor": "created_at"}),
        "wait_until rule",
        "anchor",
        ANCHOR,
        "'created_at'",
    ),
    "missing delay_seconds": _rejects(
        lambda: rule_from_dict({k: v for k, v in WAIT.items() if k != "delay_seconds"}),
        "wait_until rule",
        "delay_seconds: required",
    ),
    "float delay_seconds": _rejects(
        lambda: rule_from_dict({**WAIT, "delay_seconds": 1.5}), "wait_until rule", "delay"
    ),
    "mixed shape": _rejects(
        lambda: rule_from_dict({"kind": "stop", "outcome": "bounced", "to_step": "b"}),
        "stop rule",
        "to_step: unexpected field",
    ),
    "step_order gap": _rejects(
        lambda: Workflow.from_rows("w", 1, [ROW, {**ROW, "step_key": "b", "step_order": 3}]),
        "workflow 'w'",
        "step_order",
        "[1, 3]",
    ),
    "step_order duplicate": _rejects(
        lambda: Workflow.from_rows("w", 1, [ROW, {**ROW, "step_key": "b"}]), "step_order"
    ),
    "step_order not an int": _rejects(
        lambda: Workflow.from_rows("w", 1, [{**ROW, "step_order": "1"}]), "step_order"
    ),
    "no rows": _rejects(
        lambda: Workflow.from_rows("w", 1, []), "workflow 'w'", "at least one step"
    ),
    "config without progress list": _rejects(
        lambda: Workflow.from_rows("w", 1, [{**ROW, "config": {"progress": {}}}]),
        "workflow 'w'",
        "step 'a'",
        "config",
    ),
    "bad channel in a row": _rejects(
        lambda: Workflow.from_rows("w", 1, [{**ROW, "channel": ""}]),
        "workflow 'w'",
        "step 'a'",
        "channel",
        "blank",
    ),
    "bad rule in a row": _rejects(
        lambda: Workflow.from_rows("w", 1, [{**ROW, "config": {"progress": [{"kind": "stop"}]}}]),
        "workflow 'w'",
        "step 'a'",
        "progress[0]",
        "stop rule",
        "outcome: required",
    ),
    "backward rule in rows": _rejects(
        lambda: Workflow.from_rows(
            "w", 1, [{**ROW, "config": {"progress": [{**WAIT, "to_step": "a"}]}}]
        ),
        "workflow 'w'",
        "progress[0] (wait_until)",
        "later step",
    ),
}


@pytest.mark.parametrize(
    ("factory", "fragments"), STORED_REJECTIONS.values(), ids=STORED_REJECTIONS.keys()
)
def test_stored_shapes_rejected(factory: Callable[[], object], fragments: tuple[str, ...]) -> None:
    test_rejected(factory, fragments)


def test_a_step_waits_at_most_once() -> None:
    with pytest.raises(
        InvalidWorkflow, match=r"step 'a', progress\[1\] \(wait_until\): a step waits at most once"
    ):
        Step(
            "a",
            channel="in_app",
            progress=[WaitUntil(delay=60, to_step="b"), WaitUntil(delay=120, to_step="b")],
        )


def test_on_signal_needs_a_wait_on_its_step() -> None:
    with pytest.raises(
        InvalidWorkflow, match=r"progress\[0\] \(on_signal\): signals reach waiting runs only"
    ):
        Step("a", channel="in_app", progress=[OnSignal(event="clicked", to_step="b")])
