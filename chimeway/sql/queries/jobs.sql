-- Procrastinate's job table: Chimeway's defers and reads (chimeway/store/jobs.py).

-- name: jobs_defer_per_id
-- One job per id, built server-side through Procrastinate's own procrastinate_defer_jobs_v1
-- (what its batch_defer calls): the client sends the ids, not one dumped row per job. Each job
-- is {<arg>: "<id>"} with the queueing lock <lock_prefix><id>; ids come back in input order.
SELECT unnest(procrastinate_defer_jobs_v1(array_agg(
    ROW(%(queue)s, %(task)s, %(priority)s, NULL, %(lock_prefix)s || x.id::text,
        jsonb_build_object(%(arg)s::text, x.id::text), x.at)::procrastinate_job_to_defer_v1
    ORDER BY x.n
))) AS id
FROM unnest(%(ids)s::uuid[], %(scheduled_at)s::timestamptz[]) WITH ORDINALITY AS x (id, at, n)

-- name: jobs_defer_chunks
-- One job per chunk of up to `chunk` ids, {<arg>: ["<id>", ...]} in input order, without a
-- queueing lock, built server-side like jobs_defer_per_id; job ids come back in chunk order.
SELECT unnest(procrastinate_defer_jobs_v1(array_agg(
    ROW(%(queue)s, %(task)s, %(priority)s, NULL, NULL,
        jsonb_build_object(%(arg)s::text, c.ids), %(scheduled_at)s::timestamptz
    )::procrastinate_job_to_defer_v1
    ORDER BY c.k
))) AS id
FROM (
    SELECT (x.n - 1) / %(chunk)s AS k, jsonb_agg(x.id::text ORDER BY x.n) AS ids
    FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS x (id, n)
    GROUP BY 1
) AS c

-- name: job_pull_earlier
-- A job is queued already under this queueing lock: it must not run later than asked
-- (a NULL time means now).
UPDATE procrastinate_jobs
SET scheduled_at = %(scheduled_at)s::timestamptz
WHERE queueing_lock = %(queueing_lock)s AND status = 'todo'
  AND scheduled_at IS NOT NULL
  AND (%(scheduled_at)s::timestamptz IS NULL OR scheduled_at > %(scheduled_at)s::timestamptz)

-- name: jobs_due_count
SELECT count(*) FROM procrastinate_jobs
WHERE status = 'todo'
  AND queue_name = ANY(%(queues)s::text[])
  AND (scheduled_at IS NULL OR scheduled_at <= now())

-- name: jobs_failing_list
-- Jobs whose task raised: failed for good, or waiting for a retry after an error.
SELECT id, task_name, status::text AS status FROM procrastinate_jobs
WHERE queue_name = ANY(%(queues)s::text[])
  AND (status = 'failed' OR (status = 'todo' AND attempts > 0))
ORDER BY id

-- name: jobs_due_lock
-- The due jobs of these queues, in the order a worker takes them, locked (SKIP LOCKED) for
-- running them in this transaction (chimeway.testing.drain with a connection).
SELECT id, task_name, args FROM procrastinate_jobs
WHERE status = 'todo'
  AND queue_name = ANY(%(queues)s::text[])
  AND (scheduled_at IS NULL OR scheduled_at <= now())
ORDER BY priority DESC, id
FOR UPDATE SKIP LOCKED

-- name: job_delete
DELETE FROM procrastinate_jobs WHERE id = %(id)s

-- name: jobs_queued_delete
-- Jobs not started yet, by queueing lock: work that was done on their behalf. A job a worker
-- is fetching at this moment is waited for, then left alone (it is no longer todo).
DELETE FROM procrastinate_jobs
WHERE status = 'todo' AND queueing_lock = ANY(%(locks)s::text[])

-- name: jobs_deliver_take
-- A backlog of one-delivery jobs, taken along by a running `deliver` job (engine/deliver.py):
-- up to `limit` due `deliver` jobs of the queue, in the order a worker would fetch them,
-- skipping any a worker is fetching or another job is taking at this moment, are deleted;
-- their deliveries' ids come back, for the caller's claim in the same transaction (rolled
-- back with it, they are queued again). Jobs with a Procrastinate lock are left alone.
DELETE FROM procrastinate_jobs
WHERE id = ANY(ARRAY(
    SELECT id FROM procrastinate_jobs
    WHERE status = 'todo' AND queue_name = %(queue)s AND task_name = %(task)s
      AND lock IS NULL
      AND (scheduled_at IS NULL OR scheduled_at <= now())
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING (args ->> 'delivery_id')::uuid AS delivery_id

-- name: job_subjects
-- The tenant and event of each row jobs name (chimeway.testing.drain's scope): deliveries,
-- runs, signals (a tenant, no event) and provider webhook events (through their delivery),
-- and the tenants of the events given.
SELECT 'delivery' AS kind, d.id, d.tenant_id, n.event_id
FROM chimeway_deliveries d JOIN chimeway_notifications n ON n.id = d.notification_id
WHERE d.id = ANY(%(delivery_ids)s::uuid[])
UNION ALL
SELECT 'run', r.id, r.tenant_id, n.event_id
FROM chimeway_workflow_runs r JOIN chimeway_notifications n ON n.id = r.notification_id
WHERE r.id = ANY(%(run_ids)s::uuid[])
UNION ALL
SELECT 'signal', s.id, s.tenant_id, NULL::uuid
FROM chimeway_signals s WHERE s.id = ANY(%(signal_ids)s::uuid[])
UNION ALL
SELECT 'ingress', i.id, d.tenant_id, n.event_id
FROM chimeway_webhook_ingress i
JOIN chimeway_deliveries d ON d.id = coalesce(i.delivery_id, i.delivery_ref)
    OR (i.delivery_id IS NULL AND i.delivery_ref IS NULL
        AND d.provider_message_id = i.provider_message_id)
JOIN chimeway_notifications n ON n.id = d.notification_id
WHERE i.id = ANY(%(ingress_ids)s::uuid[])
UNION ALL
SELECT 'event', e.id, e.tenant_id, e.id
FROM chimeway_events e WHERE e.id = ANY(%(event_ids)s::uuid[])
