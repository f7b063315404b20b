"""The workflow declaration DSL (design §3, §6, §10): pure data, no database.

A :class:`Workflow` is an ordered list of :class:`Step` objects. Each step sends one delivery on
its channel; its ``progress`` rules decide what happens once that delivery has an outcome:

- :class:`OnOutcome` advances to a later step when the outcome matches;
- :class:`Stop` stops the run when the outcome matches;
- :class:`WaitUntil` waits ``delay`` after the delivery's terminal time (:data:`ANCHOR`), then
  advances; any of its ``cancel_signals`` ends the wait early (design §7);
- :class:`OnSignal` advances when a signal with that event name resumes the run.

A workflow may start with a :class:`Batch` (design §15): the triggers of one recipient (and
batch key) are collected into one run for a window (a fixed length from the first item, or up
to a :class:`Daily` local time), and the first step then sends one digest of them all.

``to_step`` always names a *later* step, so every workflow terminates (design §10). Keys,
channels, ``to_step`` and signal names follow the identifier rule of :mod:`chimeway.inputs`
(non-blank, no control characters or lone surrogates, at most :data:`MAX_KEY_LENGTH`
characters; event names at most :data:`MAX_EVENT_NAME_LENGTH`); delays are whole seconds up to
:data:`MAX_WAIT`. Every declaration is validated when it is built, and every problem raises
:class:`~chimeway.errors.InvalidWorkflow` with a one-line message naming where it is (workflow,
step, ``progress[i] (kind)``), the field and the rule broken. Models are frozen; sequences are
stored as tuples.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Self, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from chimeway.errors import InvalidArgument, InvalidWorkflow
from chimeway.inputs import identifier_problem
from chimeway.policy.quiet_hours import next_local_time, zone_for
from chimeway.storable import preview
from chimeway.types import Outcome

__all__ = [
    "ANCHOR",
    "MAX_BATCH_ITEMS",
    "MAX_BATCH_WINDOW",
    "MAX_CANCEL_SIGNALS",
    "MAX_EVENT_NAME_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_WAIT",
    "RECIPIENT_ZONE",
    "Batch",
    "Daily",
    "OnOutcome",
    "OnSignal",
    "Rule",
    "RuleKind",
    "Step",
    "Stop",
    "WaitUntil",
    "Workflow",
    "rule_from_dict",
]

ANCHOR: Final = "prior_delivery_terminal_at"
MAX_CANCEL_SIGNALS: Final = 10
MAX_EVENT_NAME_LENGTH: Final = 200  # the chimeway_signals_event_name_length constraint
MAX_KEY_LENGTH: Final = 255  # workflow and step keys, channels, to_step
MAX_WAIT: Final = timedelta(days=366)
"""The longest :class:`WaitUntil` delay: a year, leap day included. Notification workflows
wait hours or days ("remind after 2 hours", "escalate after a week"); a yearly reminder is the
longest plausible wait. A bound keeps every due time (now + delay) far from ``datetime``'s
year-9999 overflow and from PostgreSQL's timestamp range, whatever the declaration says."""
_MAX_WAIT_SECONDS: Final = int(MAX_WAIT.total_seconds())
_MAX_VERSION: Final = 2**31 - 1  # workflow_version is a Postgres integer
MAX_BATCH_WINDOW: Final = timedelta(days=31)
"""The longest fixed :class:`Batch` window: a digest is daily, weekly, at most monthly."""
MAX_BATCH_ITEMS: Final = 10_000
"""The largest ``max_items`` of a :class:`Batch` (one digest renders every member)."""
RECIPIENT_ZONE: Final = "recipient"

RuleKind: TypeAlias = Literal["wait_until", "on_outcome", "stop", "on_signal"]


# -- field types --------------------------------------------------------------------------


def _identifier(max_chars: int) -> AfterValidator:
    def check(value: str) -> str:
        if not value.strip():
            raise ValueError(f"must not be blank, got {preview(value)}")
        problem = identifier_problem(value, max_chars)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _as_tuple(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list, got {type(value).__name__}")
    return tuple(value)


def _delay(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | timedelta):
        raise ValueError(
            f"must be a timedelta or an int number of seconds, got {type(value).__name__}"
        )
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be positive, got {preview(value)} seconds")
        if value > _MAX_WAIT_SECONDS:
            raise ValueError(_too_long(preview(value)))
        return timedelta(seconds=value)
    if value <= timedelta(0):
        raise ValueError(f"must be positive, got {value.total_seconds():g} seconds")
    if value.microseconds:
        raise ValueError(f"must be whole seconds, got {value.total_seconds()} seconds")
    if value > MAX_WAIT:
        raise ValueError(_too_long(str(value // timedelta(seconds=1))))
    return value


def _too_long(seconds: str) -> str:
    return (
        f"is too large: at most MAX_WAIT, {MAX_WAIT.days} days ({_MAX_WAIT_SECONDS} seconds), "
        f"got {seconds} seconds"
    )


def _signals(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(value) > MAX_CANCEL_SIGNALS:
        raise ValueError(f"at most {MAX_CANCEL_SIGNALS} are allowed, got {len(value)}")
    for index, name in enumerate(value):
        if name in value[:index]:
            raise ValueError(f"duplicate cancel signal {name!r}")
    return value


def _instance_of(cls: type, what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, cls):
            raise ValueError(f"must be {what}, got {type(value).__name__}")
        return value

    return BeforeValidator(check)


def _at_least_one_step(value: tuple[Step, ...]) -> tuple[Step, ...]:
    if not value:
        raise ValueError("a workflow needs at least one step")
    return value


_Text = Annotated[StrictStr, _identifier(MAX_KEY_LENGTH)]
_EventName = Annotated[StrictStr, _identifier(MAX_EVENT_NAME_LENGTH)]
_Delay = Annotated[timedelta, BeforeValidator(_delay)]
_Signals = Annotated[tuple[_EventName, ...], BeforeValidator(_as_tuple), AfterValidator(_signals)]


# -- errors -------------------------------------------------------------------------------


def _field(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def _problem(error: ErrorDetails, model: type[BaseModel]) -> str:
    field, kind = _field(error["loc"]), error["type"]
    if kind == "extra_forbidden":
        return f"{field}: unexpected field (allowed: {', '.join(model.model_fields)})"
    if kind == "missing":
        return f"{field}: required"
    if kind == "value_error":
        return f"{field}: {error.get('ctx', {}).get('error')}"
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{field}: {message}, got {_shown(error['input'])}"


def _shown(value: Any) -> str:
    """``value`` for a message: short and escaped, never a long text or a failing ``repr``."""
    if value is None or isinstance(value, str | int | float):
        return preview(value)
    try:
        return f"{value!r:.80}"
    except Exception:  # an int too long for str(), a repr that recurses too deep, ...
        return type(value).__name__


@contextmanager
def _translated(where: str, model: type[BaseModel]) -> Iterator[None]:
    """Turn a pydantic ValidationError into InvalidWorkflow("<where>: <field>: <problem>")."""
    try:
        yield
    except ValidationError as exc:
        problems = "; ".join(_problem(error, model) for error in exc.errors())
        raise InvalidWorkflow(f"{where}: {problems}") from None


@contextmanager
def _within(where: str) -> Iterator[None]:
    """Prefix InvalidWorkflow messages raised inside with an outer location."""
    try:
        yield
    except InvalidWorkflow as exc:
        raise InvalidWorkflow(f"{where}, {exc.message}") from None


class _Declaration(BaseModel):
    """Frozen, no extra fields; the ``_positional`` fields may also be passed positionally.

    Subclasses declare their typed signature under ``TYPE_CHECKING`` only: at run time this
    ``__init__`` takes anything, so that missing, unexpected and ill-typed arguments all raise
    InvalidWorkflow rather than TypeError or a pydantic ValidationError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    _positional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **data: Any) -> None:
        names = type(self)._positional
        if len(args) > len(names):
            takes = f"at most {len(names)}" if names else "no"
            raise InvalidWorkflow(
                f"{self._where(data)}: takes {takes} positional arguments, got {len(args)}"
            )
        for name, value in zip(names, args, strict=False):
            if name in data:
                raise InvalidWorkflow(
                    f"{self._where(data)}: {name}: given both positionally and by keyword"
                )
            data[name] = value
        with _translated(self._where(data), type(self)):
            super().__init__(**data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        raise NotImplementedError


# -- rules --------------------------------------------------------------------------------


class _Rule(_Declaration):
    kind: ClassVar[RuleKind]

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return f"{cls.kind} rule"

    def to_dict(self) -> dict[str, Any]:
        """The persisted JSON shape, with string keys and ``kind`` first."""
        raise NotImplementedError


class WaitUntil(_Rule):
    """Wait ``delay`` after the prior delivery's terminal time, then advance to ``to_step``."""

    kind: ClassVar[RuleKind] = "wait_until"
    anchor: ClassVar[str] = ANCHOR
    delay: _Delay
    to_step: _Text
    cancel_signals: _Signals = ()

    if TYPE_CHECKING:

        def __init__(
            self, *, delay: timedelta | int, to_step: str, cancel_signals: Sequence[str] = ()
        ) -> None: ...

    @property
    def delay_seconds(self) -> int:
        return self.delay // timedelta(seconds=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "anchor": self.anchor,
            "delay_seconds": self.delay_seconds,
            "to_step": self.to_step,
            "cancel_signals": list(self.cancel_signals),
        }


class OnOutcome(_Rule):
    """Advance to ``to_step`` when the step's delivery has this outcome."""

    kind: ClassVar[RuleKind] = "on_outcome"
    outcome: Outcome
    to_step: _Text

    if TYPE_CHECKING:

        def __init__(self, *, outcome: Outcome | str, to_step: str) -> None: ...

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "outcome": self.outcome.value, "to_step": self.to_step}


class Stop(_Rule):
    """Stop the run when the step's delivery has this outcome."""

    kind: ClassVar[RuleKind] = "stop"
    outcome: Outcome

    if TYPE_CHECKING:

        def __init__(self, *, outcome: Outcome | str) -> None: ...

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "outcome": self.outcome.value}


class OnSignal(_Rule):
    """Advance to ``to_step`` when a signal named ``event`` resumes the run."""

    kind: ClassVar[RuleKind] = "on_signal"
    event: _EventName
    to_step: _Text

    if TYPE_CHECKING:

        def __init__(self, *, event: str, to_step: str) -> None: ...

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "event": self.event, "to_step": self.to_step}


Rule: TypeAlias = WaitUntil | OnOutcome | Stop | OnSignal
_RULES: dict[str, type[Rule]] = {cls.kind: cls for cls in (WaitUntil, OnOutcome, Stop, OnSignal)}


def rule_from_dict(data: Mapping[str, Any]) -> Rule:
    """Rebuild a rule from :meth:`to_dict` output (e.g. a stored ``config.progress`` entry)."""
    if not isinstance(data, Mapping):
        raise InvalidWorkflow(f"progress rule: must be a mapping, got {type(data).__name__}")
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = _RULES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidWorkflow(
            f"progress rule: kind: must be one of {list(_RULES)}, got {preview(kind)}"
        )
    if cls is WaitUntil:
        if (anchor := fields.pop("anchor", None)) != ANCHOR:
            raise InvalidWorkflow(
                f"wait_until rule: anchor: must be {ANCHOR!r}, got {preview(anchor)}"
            )
        if "delay" in fields or "delay_seconds" not in fields:
            raise InvalidWorkflow("wait_until rule: delay_seconds: required")
        fields["delay"] = fields.pop("delay_seconds")
    if not all(isinstance(name, str) for name in fields):
        raise InvalidWorkflow(f"{kind} rule: field names must be strings")
    return cls(**fields)


# -- batches ------------------------------------------------------------------------------


def _zone(value: str) -> str:
    if value != RECIPIENT_ZONE:
        try:
            zone_for(value, field="tz")
        except InvalidArgument:
            raise ValueError(
                f"must be {RECIPIENT_ZONE!r} or an IANA time zone name, got {preview(value)}"
            ) from None
    return value


def _window(value: Any) -> Any:
    if isinstance(value, Daily):
        return value
    if isinstance(value, bool) or not isinstance(value, int | timedelta):
        raise ValueError(
            "must be a timedelta, an int number of seconds or a Daily(hour, minute), "
            f"got {type(value).__name__}"
        )
    seconds = value if isinstance(value, int) else value.total_seconds()
    if seconds <= 0:
        raise ValueError(f"must be positive, got {seconds:g} seconds")
    if isinstance(value, timedelta) and value.microseconds:
        raise ValueError(f"must be whole seconds, got {seconds} seconds")
    window = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if window > MAX_BATCH_WINDOW:
        raise ValueError(
            f"is too large: at most {MAX_BATCH_WINDOW.days} days, got {int(seconds)} seconds"
        )
    return window


class Daily(_Declaration):
    """A batch window that closes every day at ``hour:minute`` local time, in the
    recipient's time zone (``tz="recipient"``: the profile's ``timezone``, else UTC) or in a
    named IANA zone. A local time that occurs twice (clocks go back) is taken at its later
    occurrence; one that does not exist (clocks go forward) at the first instant after the
    gap, as for quiet hours."""

    _positional: ClassVar[tuple[str, ...]] = ("hour", "minute")
    hour: Annotated[StrictInt, Field(ge=0, le=23)]
    minute: Annotated[StrictInt, Field(ge=0, le=59)] = 0
    tz: Annotated[StrictStr, AfterValidator(_zone)] = RECIPIENT_ZONE

    if TYPE_CHECKING:

        def __init__(self, hour: int, minute: int = 0, *, tz: str = "recipient") -> None: ...

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return "Daily"

    @property
    def at(self) -> time:
        return time(self.hour, self.minute)

    def to_dict(self) -> dict[str, Any]:
        return {"hour": self.hour, "minute": self.minute, "tz": self.tz}


class Batch(_Declaration):
    """Collect a recipient's notifications into one run before the first step (design §15).

    A trigger for a recipient who has an open batch of this workflow with the same batch
    key joins it (no new run); otherwise it opens one. The batch closes when ``window``
    ends (a fixed length from its first item, or the next :class:`Daily` local time) or
    when it holds ``max_items``; the run then goes on to its first step, which sends one
    delivery rendered by the notifier's ``render_batch(items, recipient, channel)``.

    ``key`` names a field of the trigger's params (dotted for nested objects, e.g.
    ``"post.id"``) whose value separates batches: one digest per post. ``None``: one batch
    per workflow and recipient."""

    window: Annotated[Daily | timedelta, BeforeValidator(_window)]
    key: _Text | None = None
    max_items: Annotated[StrictInt, Field(ge=2, le=MAX_BATCH_ITEMS)] | None = None

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            window: timedelta | int | Daily,
            key: str | None = None,
            max_items: int | None = None,
        ) -> None: ...

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return "Batch"

    @property
    def daily(self) -> Daily | None:
        return self.window if isinstance(self.window, Daily) else None

    def closes_at(self, opened_at: datetime, recipient_zone: str | None = None) -> datetime:
        """When a batch opened at ``opened_at`` closes: ``window`` later, or at the next
        :class:`Daily` local time strictly after it, in the Daily's zone (``"recipient"``:
        ``recipient_zone``, else UTC; a zone the server does not know counts as UTC)."""
        if not isinstance(self.window, Daily):
            return opened_at + self.window
        zone = self.window.tz if self.window.tz != RECIPIENT_ZONE else recipient_zone
        if zone:
            try:
                zone_for(zone)
            except InvalidArgument:
                zone = None
        return next_local_time(opened_at, self.window.at, zone or "UTC")

    def key_of(self, params: Mapping[str, Any]) -> str | None:
        """The batch key for a trigger's params: the ``key`` field's value as text (a
        string, an integer or a boolean; a UUID-like string as it is), ``""`` with no
        ``key``, ``None`` when the field is missing or not a scalar."""
        if self.key is None:
            return ""
        value: Any = params
        for part in self.key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int):
            return str(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        window: dict[str, Any] = (
            {"daily": self.window.to_dict()}
            if isinstance(self.window, Daily)
            else {"window_seconds": self.window // timedelta(seconds=1)}
        )
        return {**window, "key": self.key, "max_items": self.max_items}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        if not isinstance(data, Mapping):
            raise InvalidWorkflow(f"batch: must be a mapping, got {type(data).__name__}")
        fields = dict(data)
        if "daily" in fields:
            daily = fields.pop("daily")
            if not isinstance(daily, Mapping):
                raise InvalidWorkflow("batch: daily: must be a mapping")
            fields["window"] = Daily(**{str(k): v for k, v in daily.items()})
        elif "window_seconds" in fields:
            fields["window"] = fields.pop("window_seconds")
        return cls(**{str(k): v for k, v in fields.items()})


# -- steps and workflows ------------------------------------------------------------------


class Step(_Declaration):
    """One delivery on ``channel``, then the first matching ``progress`` rule decides."""

    _positional: ClassVar[tuple[str, ...]] = ("key", "channel", "progress")
    key: _Text
    channel: _Text
    progress: Annotated[
        tuple[
            Annotated[Rule, _instance_of(_Rule, "a WaitUntil, OnOutcome, Stop or OnSignal")], ...
        ],
        BeforeValidator(_as_tuple),
    ] = ()

    if TYPE_CHECKING:

        def __init__(self, key: str, channel: str, progress: Sequence[Rule] = ()) -> None: ...

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return f"step {preview(data['key'])}" if "key" in data else "step"

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        waits = [i for i, rule in enumerate(self.progress) if isinstance(rule, WaitUntil)]
        if len(waits) > 1:
            raise InvalidWorkflow(
                f"step {self.key!r}, progress[{waits[1]}] (wait_until): a step waits at most "
                f"once (progress[{waits[0]}] already waits)"
            )
        for i, rule in enumerate(self.progress):
            if isinstance(rule, OnSignal) and not waits:
                raise InvalidWorkflow(
                    f"step {self.key!r}, progress[{i}] (on_signal): signals reach waiting runs "
                    "only; add a WaitUntil to this step"
                )
        return self

    def rules_of_kind(self, kind: RuleKind) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.progress if rule.kind == kind)

    def to_row(self, step_order: int) -> dict[str, Any]:
        return {
            "step_key": self.key,
            "step_order": step_order,
            "channel": self.channel,
            "config": {"progress": [rule.to_dict() for rule in self.progress]},
        }


#: :meth:`Workflow.checksum` by workflow object (id -> the object and its checksum).
_CHECKSUMS: dict[int, tuple[Workflow, str]] = {}
_CHECKSUMS_LOCK = threading.Lock()
_CHECKSUMS_KEPT = 1024


class Workflow(_Declaration):
    """A versioned, ordered list of steps; stored once per ``(key, version)``.

    ``steps`` may start with a :class:`Batch`, which is then kept as :attr:`batch` (the
    steps proper follow it); a Batch anywhere else is refused."""

    _positional: ClassVar[tuple[str, ...]] = ("key", "version", "steps")
    key: _Text
    version: Annotated[StrictInt, Field(ge=1, le=_MAX_VERSION)]
    steps: Annotated[
        tuple[Annotated[Step, _instance_of(Step, "a Step")], ...],
        BeforeValidator(_as_tuple),
        AfterValidator(_at_least_one_step),
    ]
    batch: Annotated[Batch, _instance_of(Batch, "a Batch")] | None = None

    if TYPE_CHECKING:

        def __init__(
            self, key: str, version: int, steps: Sequence[Step | Batch], batch: Batch | None = None
        ) -> None: ...

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return f"workflow {preview(data['key'])}" if "key" in data else "workflow"

    @model_validator(mode="before")
    @classmethod
    def _leading_batch(cls, data: Any) -> Any:
        """A Batch as the first element of ``steps`` becomes :attr:`batch`."""
        if not isinstance(data, dict):
            return data
        steps = data.get("steps")
        if not isinstance(steps, list | tuple):
            return data
        where = cls._where(data)
        for index, element in enumerate(steps):
            if isinstance(element, Batch) and index > 0:
                raise InvalidWorkflow(
                    f"{where}, steps[{index}]: a Batch must be the first element of steps"
                )
        if steps and isinstance(steps[0], Batch):
            if data.get("batch") is not None:
                raise InvalidWorkflow(f"{where}: batch: given both in steps and by keyword")
            data = {**data, "batch": steps[0], "steps": tuple(steps[1:])}
        return data

    @model_validator(mode="after")
    def _check_steps(self) -> Self:
        order: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.key in order:
                raise InvalidWorkflow(
                    f"workflow {self.key!r}, step {step.key!r}: key: duplicate step key "
                    f"(steps[{order[step.key]}] and steps[{index}])"
                )
            order[step.key] = index
        for index, step in enumerate(self.steps):
            for position, rule in enumerate(step.progress):
                if isinstance(rule, Stop):
                    continue
                where = (
                    f"workflow {self.key!r}, step {step.key!r}, progress[{position}] ({rule.kind})"
                )
                target = order.get(rule.to_step)
                if target is None:
                    raise InvalidWorkflow(
                        f"{where}: to_step: unknown step {rule.to_step!r} "
                        f"(steps: {', '.join(repr(key) for key in order)})"
                    )
                if target <= index:
                    raise InvalidWorkflow(
                        f"{where}: to_step: {rule.to_step!r} is not after {step.key!r}; "
                        "to_step must name a later step so that every workflow terminates"
                    )
        return self

    def step(self, key: str) -> Step | None:
        return next((step for step in self.steps if step.key == key), None)

    @property
    def first_step(self) -> Step:
        return self.steps[0]

    @property
    def channels(self) -> list[str]:
        """Distinct step channels, in step order."""
        return list(dict.fromkeys(step.channel for step in self.steps))

    def step_rows(self) -> list[dict[str, Any]]:
        """Rows for ``chimeway_workflow_steps``: step_key, step_order (1..n), channel, config.
        A :attr:`batch` is kept in the first step's config, under ``batch``."""
        rows = [step.to_row(order) for order, step in enumerate(self.steps, start=1)]
        if self.batch is not None:
            rows[0]["config"]["batch"] = self.batch.to_dict()
        return rows

    def checksum(self) -> str:
        """sha256 (hex) of the canonical JSON of key, version and step rows (remembered per
        workflow object: a trigger asks for it each time, and it costs some 25 µs)."""
        known = _CHECKSUMS.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        document = {"key": self.key, "version": self.version, "steps": self.step_rows()}
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        value = hashlib.sha256(canonical.encode()).hexdigest()
        with _CHECKSUMS_LOCK:
            if len(_CHECKSUMS) >= _CHECKSUMS_KEPT:
                _CHECKSUMS.clear()  # workflows built afresh per trigger: keep it bounded
            # The workflow is kept with its checksum, so its id is not reused while here.
            _CHECKSUMS[id(self)] = (self, value)
        return value

    @classmethod
    def from_rows(cls, key: str, version: int, rows: Iterable[Any]) -> Workflow:
        """Rebuild a workflow from :meth:`step_rows` output, in any order.

        A row is a mapping or an object with ``step_key``, ``step_order``, ``channel`` and
        ``config`` attributes (a psycopg ``dict_row`` or ``class_row``).
        """

        def get(row: Any, name: str) -> Any:
            if isinstance(row, Mapping):
                return row.get(name)
            return getattr(row, name, None)

        where = f"workflow {key!r}"
        rows = list(rows)
        orders = [get(row, "step_order") for row in rows]
        valid = all(type(order) is int for order in orders)
        if not valid or sorted(orders) != list(range(1, len(rows) + 1)):
            raise InvalidWorkflow(
                f"{where}: step_order: must be 1..{len(rows)} without gaps, got {orders}"
            )
        steps = []
        batch: Batch | None = None
        for row in sorted(rows, key=lambda row: get(row, "step_order")):
            step_key, config = get(row, "step_key"), get(row, "config")
            if isinstance(config, Mapping) and config.get("batch") is not None:
                if get(row, "step_order") != 1:
                    raise InvalidWorkflow(
                        f"{where}, step {step_key!r}: config: only the first step holds a batch"
                    )
                with _within(f"{where}, step {step_key!r}"):
                    batch = Batch.from_dict(config["batch"])
            progress = config.get("progress", []) if isinstance(config, Mapping) else None
            if not isinstance(progress, list):
                raise InvalidWorkflow(
                    f"{where}, step {step_key!r}: config: must be a mapping with a progress list"
                )
            rules = []
            for position, rule in enumerate(progress):
                with _within(f"{where}, step {step_key!r}, progress[{position}]"):
                    rules.append(rule_from_dict(rule))
            with _within(where):
                steps.append(Step(step_key, channel=get(row, "channel"), progress=rules))
        return cls(key, version=version, steps=steps, batch=batch)
