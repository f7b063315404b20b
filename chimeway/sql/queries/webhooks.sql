-- Provider feedback: webhook ingress rows and what processing reads (chimeway/store/webhooks.py).

-- name: ingress_insert_and_defer
-- Verified events (of one webhook or of several sharing a commit), with the ids the caller
-- gave them (one JSON array: a single parameter to send, where nine arrays cost the client
-- more than the statement costs the server), and the process_webhook job of each row inserted, in one statement: alone on an
-- autocommit connection it is its own transaction, so storing a batch costs one round trip
-- (the jobs are built server-side, like jobs_defer_per_id). An event its provider sent
-- before (same provider and event id) is skipped, also within the batch. One row: the ids
-- inserted and how many jobs were deferred; no row when every event was a duplicate.
WITH stored AS (
    INSERT INTO chimeway_webhook_ingress (
        id, provider, provider_event_id, kind, delivery_ref, provider_message_id,
        occurred_at, permanent, evidence
    )
    SELECT x.id, x.provider, x.event_id, x.kind, x.delivery_ref, x.message_id,
           x.occurred_at, x.permanent, x.evidence
    FROM jsonb_to_recordset(%(events)s::jsonb) AS x (
        id uuid, provider text, event_id text, kind chimeway_feedback_status,
        delivery_ref uuid, message_id text, occurred_at timestamptz, permanent boolean,
        evidence jsonb
    )
    ON CONFLICT (provider, provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT array_agg(s.id) AS ids,
       cardinality(procrastinate_defer_jobs_v1(array_agg(
           ROW(%(queue)s, %(task)s, %(priority)s, NULL, %(lock_prefix)s || s.id::text,
               jsonb_build_object('ingress_id', s.id::text), NULL
           )::procrastinate_job_to_defer_v1
       ))) AS jobs
FROM stored AS s
HAVING count(*) > 0

-- name: ingress_lock
SELECT * FROM chimeway_webhook_ingress WHERE id = %(id)s FOR UPDATE

-- name: ingress_finish
UPDATE chimeway_webhook_ingress
SET ingress_state = %(state)s, delivery_id = %(delivery_id)s, outcome = %(outcome)s,
    ignored_reason = %(ignored_reason)s, processed_at = now()
WHERE id = %(id)s

-- name: feedback_target
-- The delivery feedback is about: the one the provider echoed (delivery_ref), else the one
-- whose latest send returned this provider message id (the attempts keep it, indexed). Read
-- without a lock: the caller locks its run, then it.
SELECT id, workflow_run_id FROM (
    SELECT d.id, d.workflow_run_id, 1 AS rank, 0 AS attempt FROM chimeway_deliveries d
    WHERE d.id = %(delivery_ref)s
    UNION ALL
    SELECT d.id, d.workflow_run_id, 2, a.id FROM chimeway_delivery_attempts a
    JOIN chimeway_deliveries d ON d.id = a.delivery_id
    WHERE a.provider_message_id = %(message_id)s
) AS found
ORDER BY rank, attempt DESC
LIMIT 1

-- name: feedback_context
-- What an opt-out needs of the delivery: its notification's category.
SELECT n.category FROM chimeway_deliveries d
JOIN chimeway_notifications n ON n.id = d.notification_id
WHERE d.id = %(delivery_id)s

-- name: feedback_for_delivery
-- The feedback processed for a delivery, oldest first (explain_delivery's timeline).
SELECT id, provider, provider_event_id, kind, occurred_at, permanent, evidence, outcome,
       created_at, processed_at
FROM chimeway_webhook_ingress
WHERE delivery_id = %(delivery_id)s
ORDER BY created_at, id
