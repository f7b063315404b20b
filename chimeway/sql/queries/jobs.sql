-- Reads of Procrastinate's job table (chimeway/testing.py, operator checks).

-- name: jobs_due_count
SELECT count(*) FROM procrastinate_jobs
WHERE status = 'todo'
  AND queue_name = ANY(%(queues)s::text[])
  AND (scheduled_at IS NULL OR scheduled_at <= now())

-- name: progress_timer_pull_earlier
-- A run's timer is queued already (queueing lock): it must not fire later than the new due.
UPDATE procrastinate_jobs
SET scheduled_at = %(scheduled_at)s
WHERE queueing_lock = %(queueing_lock)s AND status = 'todo' AND scheduled_at > %(scheduled_at)s
