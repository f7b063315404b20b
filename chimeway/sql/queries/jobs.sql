-- Reads of Procrastinate's job table (chimeway/testing.py, operator checks).

-- name: jobs_due_count
SELECT count(*) FROM procrastinate_jobs
WHERE status = 'todo'
  AND queue_name = ANY(%(queues)s::text[])
  AND (scheduled_at IS NULL OR scheduled_at <= now())
