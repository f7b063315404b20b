-- Preferences (chimeway/store/preferences.py): what provider feedback turns off here; the
-- policy of design §13 reads and writes them too.

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

