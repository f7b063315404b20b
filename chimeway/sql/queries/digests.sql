-- Digests: the batches of workflows that start with a Batch (design §15;
-- chimeway/store/digests.py, decided in chimeway/engine/planning.py).

-- name: digest_join
-- Each want joins the open digest of its (tenant, workflow, recipient, batch key) or opens
-- one closing at `closes_at`. Concurrent triggers meet on the partial unique index: the
-- first inserts, the others wait for it and then join the digest it opened (or, if it was
-- closed meanwhile, open the next). The join that brings a digest to max_items closes it.
-- `opened`: this row was inserted (its caller starts the digest's run); `position` is the
-- member's place (member_count after the join).
INSERT INTO chimeway_digests AS d (
    tenant_id, workflow_key, recipient_id, batch_key, closes_at, max_items
)
SELECT x.tenant_id, x.workflow_key, x.recipient_id, x.batch_key, x.closes_at, x.max_items
FROM unnest(
    %(tenant_ids)s::text[], %(workflow_keys)s::text[], %(recipient_ids)s::text[],
    %(batch_keys)s::text[], %(closes_at)s::timestamptz[], %(max_items)s::int[]
) AS x (tenant_id, workflow_key, recipient_id, batch_key, closes_at, max_items)
ON CONFLICT (tenant_id, workflow_key, recipient_id, batch_key) WHERE state = 'open'
DO UPDATE SET
    member_count = d.member_count + 1,
    state = CASE WHEN d.member_count + 1 >= d.max_items THEN 'closed'
                 ELSE 'open' END::chimeway_digest_state,
    closed_at = CASE WHEN d.member_count + 1 >= d.max_items THEN now() END,
    close_reason = CASE WHEN d.member_count + 1 >= d.max_items THEN 'max_items' END
RETURNING id, tenant_id, workflow_key, recipient_id, batch_key, run_id, state, closes_at,
          member_count AS position, (xmax = 0) AS opened

-- name: digest_set_runs
-- The runs of the digests just opened.
UPDATE chimeway_digests d SET run_id = x.run_id
FROM unnest(%(ids)s::uuid[], %(run_ids)s::uuid[]) AS x (id, run_id)
WHERE d.id = x.id

-- name: digest_add_members
-- Members at their positions. A member that is not its digest's first also gets its own
-- delivery on the digest's channel, held (pending/digest_held, no job) until the digest
-- closes, with its history row; the first member's delivery is the digest's own.
WITH x AS (
    SELECT * FROM unnest(
        %(digest_ids)s::uuid[], %(positions)s::int[], %(notification_ids)s::uuid[],
        %(tenant_ids)s::text[], %(recipient_ids)s::text[], %(channels)s::text[],
        %(max_attempts)s::int[], %(categories)s::text[], %(workflow_keys)s::text[],
        %(criticals)s::boolean[], %(bypass_quiet_hours)s::boolean[]
    ) AS x (digest_id, position, notification_id, tenant_id, recipient_id, channel,
            max_attempts, category, workflow_key, critical, bypass_quiet_hours)
), held AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        orchestration_state, planning_reason, planning_context, category, workflow_key,
        critical, bypass_quiet_hours
    )
    SELECT x.notification_id, x.tenant_id, x.recipient_id, x.channel,
           coalesce((SELECT n.contents -> x.channel FROM chimeway_notifications n
                     WHERE n.id = x.notification_id), '{}'::jsonb),
           x.max_attempts, 'digest_held', 'digest_held',
           jsonb_build_object('digest_id', x.digest_id, 'position', x.position),
           x.category, x.workflow_key, x.critical, x.bypass_quiet_hours
    FROM x WHERE x.position > 1
    RETURNING id, notification_id, planning_context
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, NULL::chimeway_delivery_status, 'pending'::chimeway_delivery_status,
           'digest_held', planning_context
    FROM held
)
INSERT INTO chimeway_digest_members (digest_id, position, notification_id, delivery_id)
SELECT x.digest_id, x.position, x.notification_id, h.id
FROM x LEFT JOIN held h ON h.notification_id = x.notification_id
RETURNING digest_id, position, notification_id, delivery_id

-- name: digest_lock_by_runs
-- The digests of these runs, locked in id order (after the runs: lock order runs, digests,
-- deliveries).
SELECT * FROM chimeway_digests
WHERE run_id = ANY(%(run_ids)s::uuid[])
ORDER BY id
FOR UPDATE

-- name: digest_close
-- Open digests whose window has ended close now (those closed at max_items are closed
-- already).
UPDATE chimeway_digests
SET state = 'closed', closed_at = now(), close_reason = 'window_elapsed'
WHERE id = ANY(%(ids)s::uuid[]) AND state = 'open'
RETURNING *

-- name: digest_cancel
-- Open digests whose run was cancelled close now, as `run_cancelled`.
UPDATE chimeway_digests
SET state = 'closed', closed_at = now(), close_reason = 'run_cancelled'
WHERE id = ANY(%(ids)s::uuid[]) AND state = 'open'
RETURNING *

-- name: digest_members
-- The members of these digests, in order, with what render_batch needs.
SELECT m.digest_id, m.position, m.notification_id, m.delivery_id, m.joined_at,
       n.recipient_id, n.recipient_type, n.assigns
FROM chimeway_digest_members m
JOIN chimeway_notifications n ON n.id = m.notification_id
WHERE m.digest_id = ANY(%(digest_ids)s::uuid[])
ORDER BY m.digest_id, m.position

-- name: digest_set_delivery
-- The delivery each closed digest was sent as.
UPDATE chimeway_digests d SET delivery_id = x.delivery_id
FROM unnest(%(ids)s::uuid[], %(delivery_ids)s::uuid[]) AS x (id, delivery_id)
WHERE d.id = x.id

-- name: digest_for_delivery
-- The digest a delivery of the tenant belongs to, as its digest delivery (`role` digest)
-- or as a member's own delivery (`role` member), with the digest delivery's status.
SELECT d.*, r.role, r.position, dd.status AS delivery_status,
       coalesce(dd.terminal_at, dd.status_changed_at) AS delivery_at
FROM (
    SELECT id AS digest_id, 'digest' AS role, NULL::int AS position
    FROM chimeway_digests
    WHERE tenant_id = %(tenant_id)s AND delivery_id = %(delivery_id)s
    UNION ALL
    SELECT m.digest_id, 'member', m.position
    FROM chimeway_digest_members m JOIN chimeway_digests g ON g.id = m.digest_id
    WHERE g.tenant_id = %(tenant_id)s AND m.delivery_id = %(delivery_id)s
) r
JOIN chimeway_digests d ON d.id = r.digest_id
LEFT JOIN chimeway_deliveries dd ON dd.id = d.delivery_id
LIMIT 1

-- name: digest_set_contents
-- A closed batch's digest becomes its run's notification's content on every channel of its
-- workflow (so the inbox shows it, and later steps send it too).
UPDATE chimeway_notifications n SET contents = n.contents || x.contents
FROM unnest(%(ids)s::uuid[], %(contents)b::jsonb[]) AS x (id, contents)
WHERE n.id = x.id
