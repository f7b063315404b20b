"""``chimeway worker``: a Procrastinate worker over Chimeway's queues and the user's tasks.

* Wakes on LISTEN/NOTIFY; polls every ``poll_interval`` seconds as the fallback. Scheduled
  jobs (timers, deferred deliveries, retries) start at their due time: one worker process
  per queue set leads the due-time wake-ups (:mod:`chimeway.waker`).
* First SIGTERM/SIGINT: stop taking jobs, finish the running ones, exit 0. A second one
  exits at once (running jobs are then retried by stalled-job recovery).
* If the worker stops by itself (its LISTEN connection or heartbeat died, e.g. PostgreSQL
  restarted), it reconnects and starts again; when that keeps failing it exits non-zero
  so a supervisor restarts it. It never runs on deaf and never exits 0 on a failure.
* ``processes > 1`` runs that many worker processes under this one, forwarding signals.
* What the process holds once started is frozen out of the garbage collector's full passes
  (``gc.freeze``), which otherwise stall every thread of a busy worker for tens of ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import Connection
from psycopg_pool import PoolTimeout

from chimeway import logs
from chimeway.engine import readiness
from chimeway.engine.progression import progress_due_runs
from chimeway.store.jobs import QUEUES
from chimeway.waker import Waker, running

if TYPE_CHECKING:
    from chimeway.app import Chimeway

logger = logging.getLogger(__name__)

#: Connections the waker's leader fires due timers on (see :class:`_Firing`); the worker's
#: pool and job threads have as many more.
FIRING_LANES = 2


def _slots(options: WorkerOptions) -> int:
    """Threads of a worker's executor and connections of its engine's pool: one per job
    slot, one for the worker's own statements, one per firing lane."""
    return options.concurrency + 1 + FIRING_LANES


@dataclass(frozen=True)
class WorkerOptions:
    queues: Sequence[str] | None = None  # None: every queue (Chimeway's and the user's)
    concurrency: int = 10
    poll_interval: float = 1.0
    name: str | None = None
    shutdown_timeout: float | None = None  # None: wait for running jobs to finish
    heartbeat_interval: float = 10.0
    max_restarts: int = 5  # consecutive quick failures before exiting non-zero
    restart_backoff: float = 1.0
    waker: bool = True  # wake for scheduled jobs at their due time (else: at the next poll)


def run(cw: Chimeway, options: WorkerOptions) -> int:
    """Run one worker in this process until stopped; the process exit code. Refuses to
    start (ConfigurationError) while a channel it would send has no adapter."""
    readiness.check_channels(cw.engine, options.queues)
    _freeze_startup_objects()
    return asyncio.run(_serve(cw, options))


def _freeze_startup_objects() -> None:
    """Move what the process holds after start-up (modules, the app, its libraries: ~75,000
    objects) out of the collector's reach: a full collection, which holds the interpreter
    lock and so stalls every job thread and the waker, then scans only what came later.
    Traced in ``bench.timers --rate 1000``: full collections in a worker took 47-115 ms
    during the burst, 0.4-0.5 ms with this."""
    gc.collect()
    gc.freeze()


async def _serve(cw: Chimeway, options: WorkerOptions) -> int:
    loop = asyncio.get_running_loop()
    # Sync tasks run in the loop's default executor: give it a thread per job slot.
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=_slots(options), thread_name_prefix="chimeway")
    )
    cw.engine.resize_pool(_slots(options))
    stop = asyncio.Event()
    current: dict[str, asyncio.Task[Any]] = {}
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            logger.info(
                "stopping: finishing running jobs (signal again to exit now)",
                extra={"action": "worker.stopping", "signal": signal.Signals(signum).name},
            )
            stop.set()
            if "worker" in current:
                current["worker"].cancel()
        else:
            logger.warning("second signal: exiting now", extra={"action": "worker.exit_now"})
            os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    quick_failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await _run_once(cw, options, current)
        except asyncio.CancelledError:
            if stop.is_set():
                break
            raise
        except Exception as exc:
            logger.error(
                "worker failed",
                extra={"action": "worker.failed", **logs.error_fields(exc)},
                exc_info=logs.withheld(exc),
            )
        if stop.is_set():
            break
        # The worker stopped by itself: a side task (LISTEN, heartbeat) or the database died.
        quick_failures = quick_failures + 1 if time.monotonic() - started < 60 else 1
        if quick_failures > options.max_restarts:
            logger.error(
                "worker keeps failing; exiting so a supervisor restarts it",
                extra={"action": "worker.giving_up", "restarts": quick_failures - 1},
            )
            return 1
        delay = options.restart_backoff * 2 ** (quick_failures - 1)
        logger.warning(
            f"worker stopped unexpectedly; reconnecting in {delay:.1f}s",
            extra={"action": "worker.restarting", "attempt": quick_failures},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    logger.info("worker stopped", extra={"action": "worker.stopped"})
    return 0


def _procrastinate_options(cw: Chimeway, options: WorkerOptions) -> dict[str, Any]:
    return {
        "queues": list(options.queues) if options.queues else None,
        "name": options.name,
        "shutdown_graceful_timeout": options.shutdown_timeout,
        "concurrency": options.concurrency,
        "fetch_job_polling_interval": options.poll_interval,
        "abort_job_polling_interval": max(options.poll_interval, 5.0),
        "listen_notify": True,
        "delete_jobs": "successful",
        "install_signal_handlers": False,
        # Heartbeats must come well within the stalled threshold, or live workers would
        # look dead to stalled-job recovery.
        "update_heartbeat_interval": min(
            options.heartbeat_interval, cw.settings.maintenance.stalled_after.total_seconds() / 3
        ),
        "stalled_worker_timeout": max(cw.settings.maintenance.stalled_after.total_seconds(), 1),
    }


async def _run_once(cw: Chimeway, options: WorkerOptions, current: dict[str, Any]) -> None:
    # Procrastinate opens (and on exit closes) a fresh pool each time: after a failure the
    # next run starts from new connections.
    firing = _Firing(cw)
    try:
        async with cw.procrastinate.open_async(), running(_waker(cw, options, firing)):
            task = asyncio.create_task(
                cw.procrastinate.run_worker_async(**_procrastinate_options(cw, options))
            )
            current["worker"] = task
            try:
                await task
            finally:
                current.pop("worker", None)
    finally:
        await asyncio.to_thread(firing.release)


def _waker(cw: Chimeway, options: WorkerOptions, firing: _Firing) -> Waker | None:
    if not options.waker:
        return None
    serves_timers = options.queues is None or QUEUES["progress"] in options.queues

    async def fire(queues: list[str]) -> list[str]:
        if QUEUES["progress"] in queues and await firing.fire():
            return [QUEUES["progress"]]
        return []

    return Waker(cw.database_url, options.queues, on_due=fire if serves_timers else None)


class _Firing:
    """The waker's leader fires the runs' due timers itself, at their due time: the due
    runs move on set-wise (as a timer job taking others along does) and their timer jobs
    are deleted in the same transactions, so no job's trip through the queue delays them.

    It fires on connections of its own, taken from the engine's pool at the first firing
    and kept while it leads: in a burst the jobs hold the pool's connections, and a firing
    that queued for one came late by as long (up to 38 ms in ``bench.timers --rate
    1000``). It has :data:`FIRING_LANES` of them: :meth:`fire` returns once its firing has
    claimed the due runs, and a wait that comes due while that firing commits is fired on
    the next free lane at once, rather than after it (lateness is measured from the due
    time to the transaction that moves the run; traced at ``--rate 1000``, the waits fired
    late were those that came due during another firing, then taken by their own timer
    jobs from the queue). The claims skip each other's locked runs, so lanes never take
    the same run; a lane beyond the first that finds no pool connection soon is not used
    (the due jobs are then announced, as when the hook fails)."""

    def __init__(self, cw: Chimeway, lanes: int = FIRING_LANES) -> None:
        self._cw = cw
        self._lanes = [_Lane(cw, first=n == 0) for n in range(lanes)]
        self._running: dict[_Lane, asyncio.Task[None]] = {}

    async def fire(self) -> bool:
        """Start a firing on a free lane (waiting for one if all fire); ``True`` once it
        has claimed the due runs, ``False`` if no lane could take it."""
        lane = next((lane for lane in self._lanes if lane not in self._running), None)
        while lane is None:
            await asyncio.wait(set(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
            lane = next((lane for lane in self._lanes if lane not in self._running), None)
        loop = asyncio.get_running_loop()
        claimed: asyncio.Future[bool] = loop.create_future()

        def settle(result: bool | BaseException) -> None:
            if claimed.done():
                return
            if isinstance(result, BaseException):
                claimed.set_exception(result)
            else:
                claimed.set_result(result)

        said: list[bool] = []  # in the lane's thread: whether the claim was reported

        def on_claim() -> None:
            if not said:
                said.append(True)
                loop.call_soon_threadsafe(settle, True)

        def run() -> None:
            try:
                took = lane.fire(on_claim)
            except Exception as exc:
                if not said:  # the hook fails: the waker announces instead
                    loop.call_soon_threadsafe(settle, exc)
                    return
                logger.warning(  # after its claim the hook has returned: logged here
                    "firing due timers failed",
                    exc_info=logs.withheld(exc),
                    extra={"action": "waker.fire_failed"},
                )
                return
            loop.call_soon_threadsafe(settle, took)

        task = asyncio.create_task(asyncio.to_thread(run))
        self._running[lane] = task
        task.add_done_callback(lambda _: self._running.pop(lane, None))
        return await claimed

    def release(self) -> None:
        for lane in self._lanes:
            lane.release()


class _Lane:
    """One connection of :class:`_Firing` and the lock that keeps one firing on it."""

    def __init__(self, cw: Chimeway, *, first: bool) -> None:
        self._cw = cw
        self._first = first
        self._conn: Connection[Any] | None = None
        self._lock = threading.Lock()  # one firing at a time; release waits for it

    def fire(self, on_claim: Callable[[], None]) -> bool:
        """Fire the due runs; ``False`` if this lane has no connection and the pool gives
        none soon (the first lane waits for one)."""
        pool = self._cw.engine.pool
        with self._lock:
            if self._conn is None:
                try:
                    # The first lane waits as long as the pool says; another lane, at
                    # most the time it takes the pool to open one more connection.
                    self._conn = pool.getconn(timeout=None if self._first else 0.05)
                except PoolTimeout:
                    return False
            try:
                fired = progress_due_runs(self._cw.engine, conn=self._conn, claimed_hook=on_claim)
            except Exception:
                self._release()  # a broken connection goes back to be replaced
                raise
        if fired:
            logger.debug(
                "fired due timers", extra={"action": "waker.fired_timers", "runs": len(fired)}
            )
        return True

    def release(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._cw.engine.pool.putconn(conn)


class BackgroundWorker:
    """A worker on a thread of this process (``chimeway demo``, notebooks, tests): it runs
    until :meth:`stop`, which lets running jobs finish."""

    def __init__(self, cw: Chimeway, options: WorkerOptions | None = None) -> None:
        self._cw = cw
        self._options = options or WorkerOptions()
        self._thread = threading.Thread(target=self._main, name="chimeway-worker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._firing = _Firing(cw)
        #: The due-time waker this worker runs (``None`` with ``waker=False``).
        self.waker = _waker(cw, self._options, self._firing)
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> BackgroundWorker:
        readiness.check_channels(self._cw.engine, self._options.queues)
        self._cw.engine.resize_pool(_slots(self._options))
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the background worker did not start")
        if self.error is not None:
            raise self.error
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the thread that called start() or stop()
            self.error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_default_executor(
            ThreadPoolExecutor(_slots(self._options), thread_name_prefix="chimeway")
        )
        async with (
            self._cw.procrastinate.open_async(),
            running(self.waker),
        ):
            self._task = asyncio.create_task(
                self._cw.procrastinate.run_worker_async(
                    **_procrastinate_options(self._cw, self._options)
                )
            )
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._firing.release)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> BackgroundWorker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_processes(argv: Sequence[str], processes: int, database_url: str) -> int:
    """Run ``processes`` copies of ``chimeway worker`` (``argv``) and supervise them:
    signals are forwarded once each (the children live in their own session, so a signal
    to the terminal's or the service's process group reaches only this parent); if one
    child exits, the others are stopped and its failure is ours."""
    env = {**os.environ, "CHIMEWAY_DATABASE_URL": database_url}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "chimeway.cli", *argv], env=env, start_new_session=True
        )
        for _ in range(processes)
    ]
    stopping: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: dict[int, int] = {}
    while len(codes) < len(children):
        for child in children:
            code = child.poll()
            if code is not None and child.pid not in codes:
                codes[child.pid] = code
                if not stopping:
                    logger.error(
                        "a worker process exited; stopping the others",
                        extra={"action": "worker.child_exited", "pid": child.pid, "code": code},
                    )
                    forward(signal.SIGTERM, None)
        time.sleep(0.1)
    failed = [code for code in codes.values() if code != 0]
    return 0 if stopping and not failed else 1
