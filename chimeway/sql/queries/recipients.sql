-- The recipient directory (chimeway/store/recipients.py). Personal data: read at send time,
-- never copied elsewhere; `forget` deletes the profile and erases rendered content.

-- name: recipient_upsert
-- One profile: given fields are set, `clear_*` ones emptied, others kept; `data` is merged
-- key by key (or replaced after clear_data).
INSERT INTO chimeway_recipients AS r (tenant_id, recipient_id, email, phone, locale, timezone, data)
VALUES (%(tenant_id)s, %(recipient_id)s, %(email)s, %(phone)s, %(locale)s, %(timezone)s,
        coalesce(%(data)s::jsonb, '{}'))
ON CONFLICT (tenant_id, recipient_id) DO UPDATE SET
    email = CASE WHEN %(clear_email)s THEN NULL ELSE coalesce(EXCLUDED.email, r.email) END,
    phone = CASE WHEN %(clear_phone)s THEN NULL ELSE coalesce(EXCLUDED.phone, r.phone) END,
    locale = CASE WHEN %(clear_locale)s THEN NULL ELSE coalesce(EXCLUDED.locale, r.locale) END,
    timezone = CASE WHEN %(clear_timezone)s THEN NULL
                    ELSE coalesce(EXCLUDED.timezone, r.timezone) END,
    data = CASE WHEN %(clear_data)s THEN '{}'::jsonb ELSE r.data END
           || coalesce(%(data)s::jsonb, '{}'),
    updated_at = now()
RETURNING *

-- name: recipients_upsert_inline
-- The profiles a trigger's notifier returned (in recipient id order, so that concurrent
-- triggers lock shared rows in one order): fields given are set, others kept, data merged.
-- A profile that would not change is not written again.
INSERT INTO chimeway_recipients AS r (tenant_id, recipient_id, email, phone, locale, timezone, data)
SELECT %(tenant_id)s, x.recipient_id, x.email, x.phone, x.locale, x.timezone, x.data
FROM unnest(
    %(recipient_ids)s::text[], %(emails)s::text[], %(phones)s::text[], %(locales)s::text[],
    %(timezones)s::text[], %(data)b::jsonb[]
) AS x (recipient_id, email, phone, locale, timezone, data)
ORDER BY x.recipient_id
ON CONFLICT (tenant_id, recipient_id) DO UPDATE SET
    email = coalesce(EXCLUDED.email, r.email),
    phone = coalesce(EXCLUDED.phone, r.phone),
    locale = coalesce(EXCLUDED.locale, r.locale),
    timezone = coalesce(EXCLUDED.timezone, r.timezone),
    data = r.data || EXCLUDED.data,
    updated_at = now()
WHERE (r.email, r.phone, r.locale, r.timezone, r.data)
      IS DISTINCT FROM (coalesce(EXCLUDED.email, r.email), coalesce(EXCLUDED.phone, r.phone),
                        coalesce(EXCLUDED.locale, r.locale),
                        coalesce(EXCLUDED.timezone, r.timezone), r.data || EXCLUDED.data)

-- name: recipient_get
SELECT * FROM chimeway_recipients
WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s

-- name: recipients_for
-- The profiles of these (tenant, recipient) pairs, in one round trip; missing ones are absent.
SELECT r.* FROM chimeway_recipients r
JOIN unnest(%(tenant_ids)s::text[], %(recipient_ids)s::text[]) AS x (tenant_id, recipient_id)
  ON r.tenant_id = x.tenant_id AND r.recipient_id = x.recipient_id

-- name: recipient_delete
DELETE FROM chimeway_recipients
WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s
RETURNING recipient_id

-- name: recipient_erase_content
-- Right to erasure: the rendered content of the recipient's notifications and deliveries
-- becomes empty; ids, statuses and histories stay. Counts of the rows erased.
WITH notifications AS (
    UPDATE chimeway_notifications
    SET assigns = '{}', contents = '{}'
    WHERE tenant_id = %(tenant_id)s AND recipient_id = %(recipient_id)s
    RETURNING id
), deliveries AS (
    UPDATE chimeway_deliveries d
    SET render_data = '{}', updated_at = now()
    FROM notifications n
    WHERE d.notification_id = n.id
    RETURNING d.id
)
SELECT (SELECT count(*) FROM notifications) AS notifications,
       (SELECT count(*) FROM deliveries) AS deliveries
