-- The in-app inbox (chimeway/store/inbox.py). An item is a notification whose in_app
-- delivery was sent (`inbox_at` is set); the feed is ordered by (inbox_at, id), newest first,
-- through chimeway_notifications_feed_idx.

-- name: inbox_notify
-- Wake the open inbox streams (at commit): payloads carry ids and a routing key, never content.
SELECT count(pg_notify('chimeway_inbox', p)) FROM unnest(%(payloads)s::text[]) AS p

-- name: inbox_listen
LISTEN chimeway_inbox

-- name: inbox_list
-- One page of a recipient's feed: the items before the cursor (inbox_at, id), newest first.
SELECT id, category, coalesce(contents -> 'in_app', '{}'::jsonb) AS content, created_at,
       inbox_at AS delivered_at, seen_at, read_at, archived_at
FROM chimeway_notifications
WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s
  AND inbox_at IS NOT NULL
  AND (inbox_at, id) < (%(before_at)s::timestamptz, %(before_id)s::uuid)
  AND (archived_at IS NOT NULL) = %(archived)s
  AND (NOT %(unread)s OR read_at IS NULL)
  AND (NOT %(unseen)s OR seen_at IS NULL)
ORDER BY inbox_at DESC, id DESC
LIMIT %(limit)s

-- name: inbox_since
-- A recipient's unarchived items that reached the inbox at or after `since`, oldest first
-- (what a reconnecting stream replays).
SELECT id, category, coalesce(contents -> 'in_app', '{}'::jsonb) AS content, created_at,
       inbox_at AS delivered_at, seen_at, read_at, archived_at
FROM chimeway_notifications
WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s
  AND inbox_at >= %(since)s AND archived_at IS NULL
ORDER BY inbox_at, id
LIMIT %(limit)s

-- name: inbox_items_by_ids
SELECT tenant_id, recipient_id, id, category,
       coalesce(contents -> 'in_app', '{}'::jsonb) AS content, created_at,
       inbox_at AS delivered_at, seen_at, read_at, archived_at
FROM chimeway_notifications
WHERE id = ANY(%(ids)s::uuid[]) AND inbox_at IS NOT NULL
ORDER BY inbox_at, id

-- name: inbox_counts
-- Counts over the unarchived items of each (tenant, recipient) pair, in input order.
SELECT p.tenant_id, p.recipient_id, c.unseen, c.unread, c.total
FROM unnest(%(tenant_ids)s::text[], %(recipient_ids)s::text[]) WITH ORDINALITY
    AS p (tenant_id, recipient_id, n)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE seen_at IS NULL) AS unseen,
           count(*) FILTER (WHERE read_at IS NULL) AS unread,
           count(*) AS total
    FROM chimeway_notifications
    WHERE tenant_id = p.tenant_id AND recipient_id = p.recipient_id
      AND inbox_at IS NOT NULL AND archived_at IS NULL
) AS c
ORDER BY p.n

-- name: inbox_mark
-- Mark the recipient's items (the ids given, or all of them): only rows the action changes
-- are locked (in id order) and written, so a repeated mark writes nothing. Reading also
-- sees. Each changed row says whether it became seen and whether it became read.
WITH target AS (
    SELECT id, seen_at, read_at
    FROM chimeway_notifications
    WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s
      AND inbox_at IS NOT NULL
      AND (%(all)s OR id = ANY(%(ids)s::uuid[]))
      AND CASE %(action)s
              WHEN 'seen' THEN seen_at IS NULL
              WHEN 'read' THEN read_at IS NULL OR seen_at IS NULL
              WHEN 'unread' THEN read_at IS NOT NULL
              WHEN 'archived' THEN archived_at IS NULL
              WHEN 'unarchived' THEN archived_at IS NOT NULL
          END
    ORDER BY id
    FOR UPDATE
)
UPDATE chimeway_notifications n
SET seen_at = CASE WHEN %(action)s IN ('seen', 'read') THEN coalesce(n.seen_at, now())
                   ELSE n.seen_at END,
    read_at = CASE %(action)s WHEN 'read' THEN coalesce(n.read_at, now())
                              WHEN 'unread' THEN NULL
                              ELSE n.read_at END,
    archived_at = CASE %(action)s WHEN 'archived' THEN coalesce(n.archived_at, now())
                                  WHEN 'unarchived' THEN NULL
                                  ELSE n.archived_at END
FROM target t
WHERE n.id = t.id
RETURNING n.id, t.seen_at IS NULL AND n.seen_at IS NOT NULL AS became_seen,
          t.read_at IS NULL AND n.read_at IS NOT NULL AS became_read
