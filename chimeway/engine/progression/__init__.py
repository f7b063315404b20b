"""The progression engine (the seeds' ``Chimeway.Workflows.Progression``, design §6), in
three parts: :mod:`.decide` (the rules, pure), :mod:`.apply` (writing decisions set-wise)
and :mod:`.drive` (the transactions: one run, a chunk's runs, a timer, the due sweep)."""

from chimeway.engine.progression.drive import (
    TAKE_ALONG,
    Held,
    Opened,
    progress_due_runs,
    progress_in,
    progress_on_feedback,
    progress_planned,
    progress_recorded,
    progress_run,
    progress_timer,
    progress_timer_in,
    resume_on_signal,
    start_batches,
)

__all__ = [
    "TAKE_ALONG",
    "Held",
    "Opened",
    "progress_due_runs",
    "progress_in",
    "progress_on_feedback",
    "progress_planned",
    "progress_recorded",
    "progress_run",
    "progress_timer",
    "progress_timer_in",
    "resume_on_signal",
    "start_batches",
]
