-- Preferences (chimeway/store/preferences.py): what provider feedback and unsubscribe links turn
-- off here, and what `cw.preferences` sets; planning reads them (policy.sql).

-- name: preference_set
-- One scope's rule; a rule already set later for the same scope is kept (the last one wins).
INSERT INTO chimeway_preferences AS p (
    tenant_id, recipient_id, channel, category, workflow, enabled, set_at, source
)
VALUES (
    %(tenant_id)s, %(recipient_id)s, %(channel)s, %(category)s, %(workflow)s, %(enabled)s,
    coalesce(%(set_at)s::timestamptz, now()), %(source)s
)
ON CONFLICT (tenant_id, coalesce(recipient_id, ''), coalesce(channel, ''),
             coalesce(category, ''), coalesce(workflow, ''))
DO UPDATE SET enabled = EXCLUDED.enabled, set_at = EXCLUDED.set_at, source = EXCLUDED.source
WHERE p.set_at <= EXCLUDED.set_at
RETURNING *


-- name: preference_set_many
-- Many scopes' rules at once (a settings page, an import), each like preference_set, in one
-- statement; one scope may appear once. Rows come back for the rules set.
INSERT INTO chimeway_preferences AS p (
    tenant_id, recipient_id, channel, category, workflow, enabled, set_at, source
)
SELECT %(tenant_id)s, x.recipient_id, x.channel, x.category, x.workflow, x.enabled,
       coalesce(%(set_at)s::timestamptz, now()), %(source)s
FROM unnest(
    %(recipient_ids)s::text[], %(channels)s::text[], %(categories)s::text[],
    %(workflows)s::text[], %(enabled)s::boolean[]
) AS x (recipient_id, channel, category, workflow, enabled)
ON CONFLICT (tenant_id, coalesce(recipient_id, ''), coalesce(channel, ''),
             coalesce(category, ''), coalesce(workflow, ''))
DO UPDATE SET enabled = EXCLUDED.enabled, set_at = EXCLUDED.set_at, source = EXCLUDED.source
WHERE p.set_at <= EXCLUDED.set_at
RETURNING *

-- name: preference_delete
-- A recipient's (or the tenant's default) rule of one scope is removed: the recipient
-- follows the tenant's default again (everything is on where there is none).
DELETE FROM chimeway_preferences
WHERE tenant_id = %(tenant_id)s AND coalesce(recipient_id, '') = coalesce(%(recipient_id)s, '')
  AND coalesce(channel, '') = coalesce(%(channel)s, '')
  AND coalesce(category, '') = coalesce(%(category)s, '')
  AND coalesce(workflow, '') = coalesce(%(workflow)s, '')

-- name: preference_list
-- A recipient's rules and the tenant's defaults (recipient_id NULL), the recipient's first.
SELECT * FROM chimeway_preferences
WHERE tenant_id = %(tenant_id)s
  AND coalesce(recipient_id, '') IN (coalesce(%(recipient_id)s, ''), '')
ORDER BY recipient_id IS NULL, channel NULLS LAST, category NULLS FIRST, workflow NULLS FIRST
