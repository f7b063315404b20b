-- The operator dashboard's reads (chimeway/store/dashboard.py): every one is scoped to one
-- tenant, except the job queues, which hold ids only and are shown as counts per queue.

-- name: dashboard_run_states
SELECT state::text AS label, count(*) AS n
FROM chimeway_workflow_runs
WHERE tenant_id = %(tenant_id)s
GROUP BY state
ORDER BY state

-- name: dashboard_delivery_statuses
SELECT status::text AS label, count(*) AS n
FROM chimeway_deliveries
WHERE tenant_id = %(tenant_id)s
GROUP BY status
ORDER BY status

-- name: dashboard_deliveries
-- A tenant's deliveries, newest first, each filter applying when given.
SELECT d.id, d.recipient_id, d.channel, d.status::text AS status,
       d.suppression_reason::text AS suppression_reason, d.workflow_run_id, d.workflow_key,
       d.created_at, d.status_changed_at,
       (SELECT count(*) FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id) AS attempts
FROM chimeway_deliveries d
WHERE d.tenant_id = %(tenant_id)s
  AND (%(status)s::text IS NULL OR d.status::text = %(status)s)
  AND (%(channel)s::text IS NULL OR d.channel = %(channel)s)
  AND (%(recipient_id)s::text IS NULL OR d.recipient_id = %(recipient_id)s)
ORDER BY d.created_at DESC, d.id
LIMIT %(limit)s

-- name: dashboard_stuck_deliveries
-- A tenant's deliveries held in 'dispatched' longer than stuck_after (their process may
-- have died: a sweep takes them over), and its oldest open ones, oldest first.
SELECT d.id, d.recipient_id, d.channel, d.status::text AS status,
       d.suppression_reason::text AS suppression_reason, d.workflow_run_id, d.workflow_key,
       d.created_at, d.status_changed_at, 0::bigint AS attempts
FROM chimeway_deliveries d
WHERE d.tenant_id = %(tenant_id)s
  AND d.terminal_at IS NULL
  AND (d.status <> 'dispatched' OR d.status_changed_at < now() - %(stuck_after)s::interval)
ORDER BY (d.status = 'dispatched') DESC, d.created_at
LIMIT %(limit)s

-- name: dashboard_job_ages
-- Per queue: how long the oldest running job has run (since its last 'started' event) and
-- how many running jobs belong to a worker that stopped beating (stalled).
SELECT j.queue_name AS queue,
       coalesce(max(extract(epoch FROM now() - s.at)), 0)::float8 AS oldest_running_seconds,
       count(*) FILTER (
           WHERE w.id IS NULL OR w.last_heartbeat < now() - %(stalled_after)s::interval
       ) AS stalled
FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
LEFT JOIN LATERAL (
    SELECT max(e.at) AS at FROM procrastinate_events e
    WHERE e.job_id = j.id AND e.type = 'started'
) s ON true
WHERE j.status = 'doing'
GROUP BY j.queue_name
ORDER BY j.queue_name
