-- Workflow definitions and their steps, immutable per (key, version) (chimeway/store/definitions.py).

-- name: definition_insert
-- Immutable per (key, version): a second insert of the pair returns no row.
INSERT INTO chimeway_workflow_definitions (workflow_key, workflow_version, notification_key, checksum)
VALUES (%(workflow_key)s, %(workflow_version)s, %(notification_key)s, %(checksum)s)
ON CONFLICT (workflow_key, workflow_version) DO NOTHING
RETURNING *

-- name: definition_get
-- `committed`: whether the row's inserting transaction has committed, so a process may
-- remember it (false for a row this transaction, or one of its savepoints, inserted: the
-- caller may still roll it back). xmin is widened to the xid8 nearest the snapshot's
-- xmax (xids compare modulo 2^32); an xid too old for the commit log reads as committed.
SELECT d.*,
       coalesce(pg_xact_status(CASE WHEN x.full >= 0 THEN x.full::text::xid8 END),
                'committed') = 'committed' AS committed
FROM chimeway_workflow_definitions d
CROSS JOIN LATERAL (
    SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS horizon
) AS s
CROSS JOIN LATERAL (
    SELECT ((s.horizon >> 32) << 32) | d.xmin::text::bigint AS near
) AS n
CROSS JOIN LATERAL (
    SELECT CASE WHEN n.near - s.horizon > 2147483648 THEN n.near - 4294967296
                WHEN s.horizon - n.near > 2147483648 THEN n.near + 4294967296
                ELSE n.near END AS full
) AS x
WHERE d.workflow_key = %(workflow_key)s AND d.workflow_version = %(workflow_version)s

-- name: definition_get_by_id
SELECT * FROM chimeway_workflow_definitions WHERE id = %(id)s

-- name: step_insert_batch
INSERT INTO chimeway_workflow_steps (definition_id, step_key, step_order, channel, config)
SELECT %(definition_id)s, s.step_key, s.step_order, s.channel, s.config
FROM unnest(%(step_keys)s::text[], %(step_orders)s::int[], %(channels)s::text[],
            %(configs)s::jsonb[]) AS s (step_key, step_order, channel, config)
RETURNING *

-- name: steps_for_definition
SELECT * FROM chimeway_workflow_steps WHERE definition_id = %(definition_id)s ORDER BY step_order

-- name: step_get
SELECT * FROM chimeway_workflow_steps WHERE id = %(id)s

-- name: step_by_key
SELECT * FROM chimeway_workflow_steps
WHERE definition_id = %(definition_id)s AND step_key = %(step_key)s
