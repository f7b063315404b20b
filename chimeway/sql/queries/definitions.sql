-- Workflow definitions and their steps, immutable per (key, version) (chimeway/store/definitions.py).

-- name: definition_insert
-- Immutable per (key, version): a second insert of the pair returns no row.
INSERT INTO chimeway_workflow_definitions (workflow_key, workflow_version, notification_key, checksum)
VALUES (%(workflow_key)s, %(workflow_version)s, %(notification_key)s, %(checksum)s)
ON CONFLICT (workflow_key, workflow_version) DO NOTHING
RETURNING *

-- name: definition_get
SELECT * FROM chimeway_workflow_definitions
WHERE workflow_key = %(workflow_key)s AND workflow_version = %(workflow_version)s

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
