-- What GET /metrics reports (chimeway/store/metrics.py): one scrape, a few statements.

-- name: metrics_deliveries
SELECT channel, status::text AS status, count(*) AS n
FROM chimeway_deliveries
GROUP BY channel, status
ORDER BY channel, status

-- name: metrics_attempts
SELECT outcome::text AS outcome, coalesce(error_class::text, '') AS error_class, count(*) AS n
FROM chimeway_delivery_attempts
GROUP BY outcome, error_class
ORDER BY outcome, error_class

-- name: metrics_send_latency
-- Seconds from claim to recorded answer, for the attempts finished within the window, by
-- channel: count, sum and the 50th, 90th and 99th percentiles.
SELECT d.channel, count(*) AS n,
       sum(extract(epoch FROM a.finished_at - a.started_at))::float8 AS total,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]::float8[])
           WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at - a.started_at))
           AS quantiles
FROM chimeway_delivery_attempts a
JOIN chimeway_deliveries d ON d.id = a.delivery_id
WHERE a.finished_at > now() - %(window)s::interval
GROUP BY d.channel
ORDER BY d.channel

-- name: metrics_queues
-- Jobs per queue: due now, scheduled later, running; and how long the oldest due job has
-- waited (since its defer, or since its scheduled time).
WITH jobs AS (
    SELECT id, queue_name, status, scheduled_at,
           status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now()) AS due
    FROM procrastinate_jobs
    WHERE status IN ('todo', 'doing')
), per_queue AS (
    SELECT queue_name,
           count(*) FILTER (WHERE due) AS due,
           count(*) FILTER (WHERE status = 'todo' AND NOT due) AS scheduled,
           count(*) FILTER (WHERE status = 'doing') AS running,
           min(id) FILTER (WHERE due AND scheduled_at IS NULL) AS oldest_id,
           min(scheduled_at) FILTER (WHERE due) AS oldest_scheduled
    FROM jobs
    GROUP BY queue_name
)
SELECT q.queue_name AS queue, q.due, q.scheduled, q.running,
       coalesce(greatest(
           extract(epoch FROM now() - (
               SELECT min(e.at) FROM procrastinate_events e
               WHERE e.job_id = q.oldest_id AND e.type = 'deferred'
           )),
           extract(epoch FROM now() - q.oldest_scheduled)
       ), 0)::float8 AS oldest_due_seconds
FROM per_queue q
ORDER BY q.queue_name

-- name: metrics_ingress
SELECT ingress_state::text AS state, count(*) AS n
FROM chimeway_webhook_ingress
GROUP BY ingress_state
ORDER BY ingress_state

-- name: metrics_ping
SELECT 1
