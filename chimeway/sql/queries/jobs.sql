-- Reads of Procrastinate's job table (chimeway/testing.py, operator checks).

-- name: jobs_due_count
SELECT count(*) FROM procrastinate_jobs
WHERE status = 'todo'
  AND queue_name = ANY(%(queues)s::text[])
  AND (scheduled_at IS NULL OR scheduled_at <= now())

-- name: job_pull_earlier
-- A job is queued already under this queueing lock: it must not run later than asked
-- (a NULL time means now).
UPDATE procrastinate_jobs
SET scheduled_at = %(scheduled_at)s::timestamptz
WHERE queueing_lock = %(queueing_lock)s AND status = 'todo'
  AND scheduled_at IS NOT NULL
  AND (%(scheduled_at)s::timestamptz IS NULL OR scheduled_at > %(scheduled_at)s::timestamptz)

-- name: jobs_failing_list
-- Jobs whose task raised: failed for good, or waiting for a retry after an error.
SELECT id, task_name, status::text FROM procrastinate_jobs
WHERE queue_name = ANY(%(queues)s::text[])
  AND (status = 'failed' OR (status = 'todo' AND attempts > 0))
ORDER BY id
