-- The in-app inbox (design §14): an item is a notification whose `in_app` delivery was sent.
-- `inbox_at` is when that happened (the first time): the feed is ordered by it, newest
-- first, so an item that reached the inbox late (a later workflow step, a deferral) still
-- comes in at the top instead of behind pages a reader has already turned.
ALTER TABLE chimeway_notifications ADD COLUMN inbox_at timestamptz;

-- Notifications already sent in-app before this migration are in the inbox too.
UPDATE chimeway_notifications n
SET inbox_at = d.sent_at
FROM (
    SELECT notification_id, min(coalesce(terminal_at, status_changed_at)) AS sent_at
    FROM chimeway_deliveries
    WHERE channel = 'in_app' AND status = 'succeeded'
    GROUP BY notification_id
) d
WHERE n.id = d.notification_id;

-- A recipient's feed, newest first, for keyset pagination on (inbox_at, id); the marks are
-- included so that counts and the unread/unseen filters read the index alone.
CREATE INDEX chimeway_notifications_feed_idx
    ON chimeway_notifications (tenant_id, recipient_id, inbox_at DESC, id DESC)
    INCLUDE (seen_at, read_at, archived_at)
    WHERE inbox_at IS NOT NULL;
