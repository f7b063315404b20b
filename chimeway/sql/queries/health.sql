-- Health checks of `chimeway doctor` (chimeway/store/health.py).

-- name: health_workers_recent
SELECT count(*) FROM procrastinate_workers
WHERE last_heartbeat > now() - %(within)s::interval

-- name: health_jobs_stalled
-- Running jobs whose worker is gone or silent.
SELECT count(*) FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND (w.id IS NULL OR w.last_heartbeat < now() - %(within)s::interval)

-- name: health_jobs_failed
SELECT count(*) FROM procrastinate_jobs
WHERE status = 'failed' AND queue_name LIKE 'chimeway\_%%'

-- name: health_runs_overdue
SELECT count(*) FROM chimeway_workflow_runs
WHERE state = 'waiting' AND suspended_until < now() - %(grace)s::interval

-- name: health_notify
SELECT pg_notify(%(channel)s, 'ping')
