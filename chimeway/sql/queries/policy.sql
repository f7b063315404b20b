-- Policy (chimeway/store/policy.py): what planning decides a delivery on, read in one
-- statement per batch at both checkpoints; quiet hours, caps and throttle grants.
--
-- A recipient's policy, as both reads build it (`recipient policy` below): their preference
-- rules and the tenant's default rules (recipient_id NULL), one probe of each table's unique
-- index on (tenant_id, coalesce(recipient_id, '')); the quiet hours in force (the
-- recipient's row, else the tenant's); the caps in force (per channel scope, the recipient's
-- row, else the tenant's; a NULL max_count is "none"); and the zone of their profile.

-- name: policy_for_plans
-- One row per delivery about to be planned, in input order, with its facts and its
-- recipient's policy: the preference rules that can apply to it (its channel, category and
-- workflow, or none of them), the quiet hours, and each cap with the deliveries already
-- planned in its window and not suppressed. A row with `inherit` takes its facts (category,
-- workflow key, critical, bypass_quiet_hours) from the first delivery of its notification
-- (a workflow's later steps), else from the notification and its event.
-- A row without `inherit` that no policy can apply to is left out (planning lets it
-- through): its tenant has no policy at all, or chimeway_policy_scope says none applies
-- to it; its recipient's profile and policy are not read.
WITH clock AS (
    SELECT coalesce(%(at)s::timestamptz, now()) AS at
), x AS (
    SELECT * FROM unnest(
        %(tenant_ids)s::text[], %(recipient_ids)s::text[], %(notification_ids)s::uuid[],
        %(channels)s::text[], %(categories)s::text[], %(workflow_keys)s::text[],
        %(inherit)s::boolean[]
    ) WITH ORDINALITY AS x (tenant_id, recipient_id, notification_id, channel, category,
                            workflow_key, inherit, n)
), tenants AS (
    -- the tenants that have any policy at all
    SELECT t.tenant_id FROM (SELECT DISTINCT tenant_id FROM x) t
    WHERE EXISTS (SELECT 1 FROM chimeway_preferences r WHERE r.tenant_id = t.tenant_id)
       OR EXISTS (SELECT 1 FROM chimeway_quiet_hours q
                  WHERE q.tenant_id = t.tenant_id AND q.start_time IS NOT NULL)
       OR EXISTS (SELECT 1 FROM chimeway_delivery_caps k
                  WHERE k.tenant_id = t.tenant_id AND k.max_count IS NOT NULL)
), facts AS (
    SELECT x.*,
           CASE WHEN x.inherit THEN coalesce(f.category, nf.category) ELSE x.category END
               AS fact_category,
           CASE WHEN x.inherit THEN coalesce(f.workflow_key, nf.notification_key)
                ELSE x.workflow_key END AS fact_workflow_key,
           coalesce(f.critical, false) AS critical,
           coalesce(f.bypass_quiet_hours, false) AS bypass_quiet_hours
    FROM x
    LEFT JOIN LATERAL (
        SELECT d.category, d.workflow_key, d.critical, d.bypass_quiet_hours
        FROM chimeway_deliveries d
        WHERE x.inherit AND d.notification_id = x.notification_id
          AND d.workflow_key IS NOT NULL
        ORDER BY d.created_at, d.id
        LIMIT 1
    ) f ON true
    LEFT JOIN LATERAL (
        SELECT n.category, e.notification_key
        FROM chimeway_notifications n
        JOIN chimeway_events e ON e.id = n.event_id
        WHERE x.inherit AND n.id = x.notification_id
    ) nf ON true
), asked AS (
    SELECT * FROM facts y
    WHERE y.inherit
       OR (y.tenant_id IN (SELECT tenant_id FROM tenants)
           AND (SELECT s.applies FROM chimeway_policy_scope(y.tenant_id, y.recipient_id,
                    y.channel, y.fact_category, y.fact_workflow_key) AS s))
), pairs AS (
    SELECT DISTINCT tenant_id, recipient_id FROM asked
), policy AS (
    -- recipient policy (the rules are per delivery below)
    SELECT p.tenant_id, p.recipient_id, rc.timezone AS profile_timezone,
           (SELECT jsonb_build_object(
                       'recipient', q.recipient_id IS NOT NULL, 'start', q.start_time,
                       'end', q.end_time, 'timezone', q.timezone)
            FROM chimeway_quiet_hours q
            WHERE q.tenant_id = p.tenant_id
              AND coalesce(q.recipient_id, '') IN (p.recipient_id, '')
            ORDER BY q.recipient_id IS NULL
            LIMIT 1) AS quiet,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'recipient', c.recipient_id IS NOT NULL, 'channel', c.channel,
                       'max_count', c.max_count, 'per_seconds', extract(epoch FROM c.per),
                       'recent', (SELECT count(*) FROM chimeway_deliveries d, clock
                                  WHERE d.tenant_id = p.tenant_id
                                    AND d.recipient_id = p.recipient_id
                                    AND d.created_at >= clock.at - c.per
                                    AND d.status <> 'suppressed'
                                    AND (c.channel IS NULL OR d.channel = c.channel)))),
                   '[]'::jsonb)
            FROM (SELECT DISTINCT ON (coalesce(k.channel, '')) k.*
                  FROM chimeway_delivery_caps k
                  WHERE k.tenant_id = p.tenant_id
                    AND coalesce(k.recipient_id, '') IN (p.recipient_id, '')
                  ORDER BY coalesce(k.channel, ''), k.recipient_id IS NULL) c
            WHERE c.max_count IS NOT NULL) AS caps
    FROM pairs p
    LEFT JOIN chimeway_recipients rc
           ON rc.tenant_id = p.tenant_id AND rc.recipient_id = p.recipient_id
)
SELECT y.n,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'recipient', r.recipient_id IS NOT NULL, 'channel', r.channel,
                   'category', r.category, 'workflow', r.workflow, 'enabled', r.enabled,
                   'set_at', r.set_at, 'source', r.source)), '[]'::jsonb)
        FROM chimeway_preferences r
        WHERE r.tenant_id = y.tenant_id
          AND coalesce(r.recipient_id, '') IN (y.recipient_id, '')
          AND (r.channel IS NULL OR r.channel = y.channel)
          AND (r.category IS NULL OR r.category = y.fact_category)
          AND (r.workflow IS NULL OR r.workflow = y.fact_workflow_key)) AS rules,
       pol.quiet, pol.caps, pol.profile_timezone,
       y.fact_category AS category, y.fact_workflow_key AS workflow_key, y.critical,
       y.bypass_quiet_hours, clock.at AS db_now
FROM asked y
CROSS JOIN clock
JOIN policy pol ON pol.tenant_id = y.tenant_id AND pol.recipient_id = y.recipient_id
ORDER BY y.n

-- name: policy_for_deliveries
-- One row per delivery about to be claimed, with its facts, its state, and, when it is still
-- to be sent (pending, or failed and retrying), its recipient's policy: the preference rules
-- that can apply to it (its channel, category and workflow, or none of them), the quiet hours
-- and each cap with the other deliveries planned in its window that were sent or are being
-- sent (planning counted the pending ones already: at the claim, of those planned together,
-- the first claimed go).
WITH x AS (
    SELECT d.id, d.tenant_id, d.recipient_id, d.channel, d.status, d.orchestration_state,
           d.next_eligible_at, d.retry_at, d.status_changed_at, d.created_at, d.category,
           d.workflow_key, d.critical, d.bypass_quiet_hours, d.workflow_run_id,
           d.status IN ('pending', 'failed') AS open
    FROM chimeway_deliveries d
    WHERE d.id = ANY(%(ids)s::uuid[])
), pairs AS (
    SELECT DISTINCT tenant_id, recipient_id FROM x WHERE open
), policy AS (
    -- recipient policy (as in policy_for_plans; the rules and the caps' counts are per
    -- delivery below)
    SELECT p.tenant_id, p.recipient_id, rc.timezone AS profile_timezone,
           (SELECT jsonb_build_object(
                       'recipient', q.recipient_id IS NOT NULL, 'start', q.start_time,
                       'end', q.end_time, 'timezone', q.timezone)
            FROM chimeway_quiet_hours q
            WHERE q.tenant_id = p.tenant_id
              AND coalesce(q.recipient_id, '') IN (p.recipient_id, '')
            ORDER BY q.recipient_id IS NULL
            LIMIT 1) AS quiet,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'recipient', c.recipient_id IS NOT NULL, 'channel', c.channel,
                       'max_count', c.max_count, 'per', c.per)), '[]'::jsonb)
            FROM (SELECT DISTINCT ON (coalesce(k.channel, '')) k.*
                  FROM chimeway_delivery_caps k
                  WHERE k.tenant_id = p.tenant_id
                    AND coalesce(k.recipient_id, '') IN (p.recipient_id, '')
                  ORDER BY coalesce(k.channel, ''), k.recipient_id IS NULL) c
            WHERE c.max_count IS NOT NULL) AS caps
    FROM pairs p
    LEFT JOIN chimeway_recipients rc
           ON rc.tenant_id = p.tenant_id AND rc.recipient_id = p.recipient_id
)
SELECT x.*,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'recipient', r.recipient_id IS NOT NULL, 'channel', r.channel,
                   'category', r.category, 'workflow', r.workflow, 'enabled', r.enabled,
                   'set_at', r.set_at, 'source', r.source)), '[]'::jsonb)
        FROM chimeway_preferences r
        WHERE x.open AND r.tenant_id = x.tenant_id
          AND coalesce(r.recipient_id, '') IN (x.recipient_id, '')
          AND (r.channel IS NULL OR r.channel = x.channel)
          AND (r.category IS NULL OR r.category = x.category)
          AND (r.workflow IS NULL OR r.workflow = x.workflow_key)) AS rules,
       pol.quiet, pol.profile_timezone,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'recipient', c.recipient, 'channel', c.channel, 'max_count', c.max_count,
                   'per_seconds', extract(epoch FROM c.per),
                   'recent', (SELECT count(*) FROM chimeway_deliveries o
                              WHERE o.tenant_id = x.tenant_id
                                AND o.recipient_id = x.recipient_id
                                AND o.created_at >= now() - c.per
                                AND o.id <> x.id
                                AND o.status NOT IN ('pending', 'suppressed')
                                AND (c.channel IS NULL OR o.channel = c.channel)))),
               '[]'::jsonb)
        FROM jsonb_to_recordset(pol.caps)
             AS c (recipient boolean, channel text, max_count integer, per interval)
        WHERE c.channel IS NULL OR c.channel = x.channel) AS caps,
       now() AS db_now
FROM x
LEFT JOIN policy pol ON pol.tenant_id = x.tenant_id AND pol.recipient_id = x.recipient_id

-- name: throttle_lock
-- The claimers of one throttle key take turns (until their transaction ends). The grant is
-- a statement of its own, so that it reads what the previous claimer committed.
SELECT pg_advisory_xact_lock(hashtext('chimeway.throttle'), hashtext(%(key)s))

-- name: throttle_grant
-- Under the key's lock: grant min(wanted, limit - sends of the last `per`) sends at now(),
-- the instant of the claim (sends stamped later by a claimer whose clock ran ahead count
-- too), prune grants long past, and return the grant with the window's sends.
WITH recent AS (
    SELECT sent_at, sends FROM chimeway_throttle_sends
    WHERE key = %(key)s AND sent_at > now() - %(per)s::interval
), granted AS (
    SELECT least(%(wanted)s::int, greatest(0, %(limit)s::int - coalesce(sum(sends), 0)))::int
               AS sends
    FROM recent
), stored AS (
    INSERT INTO chimeway_throttle_sends (key, sent_at, sends)
    SELECT %(key)s, now(), sends FROM granted WHERE sends > 0
), pruned AS (
    DELETE FROM chimeway_throttle_sends
    WHERE key = %(key)s AND sent_at < now() - %(per)s::interval - interval '10 minutes'
)
SELECT (SELECT sends FROM granted) AS granted, now() AS db_now,
       coalesce((SELECT jsonb_agg(jsonb_build_array(sent_at, sends)) FROM recent), '[]'::jsonb)
           AS recent

-- name: quiet_hours_set
-- Quiet hours of a recipient, or the tenant's default (recipient_id NULL); NULL times: none.
INSERT INTO chimeway_quiet_hours AS q (tenant_id, recipient_id, start_time, end_time, timezone)
VALUES (%(tenant_id)s, %(recipient_id)s, %(start_time)s, %(end_time)s, %(timezone)s)
ON CONFLICT (tenant_id, coalesce(recipient_id, ''))
DO UPDATE SET start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
              timezone = EXCLUDED.timezone, set_at = now()
RETURNING tenant_id, recipient_id, start_time, end_time, timezone, set_at

-- name: quiet_hours_delete
DELETE FROM chimeway_quiet_hours
WHERE tenant_id = %(tenant_id)s AND coalesce(recipient_id, '') = coalesce(%(recipient_id)s, '')

-- name: quiet_hours_list
-- The recipient's row and the tenant's default, the recipient's first.
SELECT tenant_id, recipient_id, start_time, end_time, timezone, set_at
FROM chimeway_quiet_hours
WHERE tenant_id = %(tenant_id)s
  AND coalesce(recipient_id, '') IN (coalesce(%(recipient_id)s, ''), '')
ORDER BY recipient_id IS NULL

-- name: cap_set
-- A cap of a recipient, or the tenant's default, on one channel or all; NULL max_count: none.
INSERT INTO chimeway_delivery_caps AS c (tenant_id, recipient_id, channel, max_count, per)
VALUES (%(tenant_id)s, %(recipient_id)s, %(channel)s, %(max_count)s, %(per)s)
ON CONFLICT (tenant_id, coalesce(recipient_id, ''), coalesce(channel, ''))
DO UPDATE SET max_count = EXCLUDED.max_count, per = EXCLUDED.per, set_at = now()
RETURNING tenant_id, recipient_id, channel, max_count, per, set_at

-- name: cap_delete
DELETE FROM chimeway_delivery_caps
WHERE tenant_id = %(tenant_id)s AND coalesce(recipient_id, '') = coalesce(%(recipient_id)s, '')
  AND coalesce(channel, '') = coalesce(%(channel)s, '')

-- name: caps_list
-- The recipient's caps and the tenant's defaults, the recipient's first.
SELECT tenant_id, recipient_id, channel, max_count, per, set_at
FROM chimeway_delivery_caps
WHERE tenant_id = %(tenant_id)s
  AND coalesce(recipient_id, '') IN (coalesce(%(recipient_id)s, ''), '')
ORDER BY recipient_id IS NULL, coalesce(channel, '')
