-- Scheduled jobs start at their due time, signals are routed in batches, and the job fetch
-- stays cheap whatever the statistics of procrastinate_jobs say (research:
-- timer-precision.md, fetch-plan-collapse.md).
-- Indexes and triggers on Procrastinate's table are Chimeway's, named chimeway_*: its own
-- migrations do not know them.

-- Todo jobs by due time: the worker's waker (chimeway/waker.py) finds the next due time in
-- O(log n), and the fetch has a path to the due jobs that does not step over every job
-- scheduled later (a million queued timers).
CREATE INDEX chimeway_jobs_todo_scheduled_idx
    ON procrastinate_jobs (scheduled_at) WHERE status = 'todo';

-- The fetch skips a job while an earlier one with the same lock waits or runs. Without an
-- index for that probe the planner prices it as a scan of the whole table per candidate,
-- and walks every queued job instead of taking the due ones. Chimeway's jobs have no lock,
-- so the index stays empty unless your tasks use locks.
CREATE INDEX chimeway_jobs_lock_idx
    ON procrastinate_jobs (lock) WHERE lock IS NOT NULL AND status IN ('todo', 'doing');

-- Procrastinate notifies workers when a job is inserted, not when one is rescheduled (a
-- retry, or a queued job pulled earlier), and a job inserted for later wakes them too soon.
-- This tells the waker about every future due time (channel chimeway_waker, payload the
-- queue name), and wakes the workers at once for a job rescheduled to now.
CREATE FUNCTION chimeway_notify_job_scheduled() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.scheduled_at IS NOT NULL AND NEW.scheduled_at > now() THEN
        PERFORM pg_notify('chimeway_waker', NEW.queue_name);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name,
                          json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text);
        PERFORM pg_notify('procrastinate_any_queue_v1',
                          json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER chimeway_jobs_scheduled_insert
    AFTER INSERT ON procrastinate_jobs
    FOR EACH ROW WHEN (NEW.status = 'todo' AND NEW.scheduled_at IS NOT NULL)
    EXECUTE FUNCTION chimeway_notify_job_scheduled();

CREATE TRIGGER chimeway_jobs_rescheduled
    AFTER UPDATE OF status, scheduled_at ON procrastinate_jobs
    FOR EACH ROW WHEN (NEW.status = 'todo' AND (OLD.status <> 'todo'
                       OR OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at))
    EXECUTE FUNCTION chimeway_notify_job_scheduled();

-- Signals not routed yet, oldest first: a routing job takes the others waiting along, so a
-- burst of signals is routed in a few transactions instead of one job each.
CREATE INDEX chimeway_signals_pending_idx
    ON chimeway_signals (created_at) WHERE routed_at IS NULL;
