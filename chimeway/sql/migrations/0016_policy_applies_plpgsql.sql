-- chimeway_policy_applies (0010) in PL/pgSQL, with the same body. A SQL function that is not
-- inlined (it is called per row of the claim, the plan and the trigger statements) has its
-- body planned again at every execution of the statement calling it (PostgreSQL 15-17);
-- PL/pgSQL keeps its plans for the session. Measured with auto_explain on the one-recipient
-- path: the claim spent most of its time in that planning before its first row.
CREATE OR REPLACE FUNCTION chimeway_policy_applies(
    p_tenant text, p_recipient text, p_channel text, p_category text, p_workflow text
) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN EXISTS (
               SELECT 1 FROM chimeway_preferences r
               WHERE r.tenant_id = p_tenant
                 AND coalesce(r.recipient_id, '') IN (p_recipient, '')
                 AND (r.channel IS NULL OR r.channel = p_channel)
                 AND (r.category IS NULL OR r.category = p_category)
                 AND (r.workflow IS NULL OR r.workflow = p_workflow))
        OR EXISTS (
               SELECT 1 FROM chimeway_quiet_hours q
               WHERE q.tenant_id = p_tenant
                 AND coalesce(q.recipient_id, '') IN (p_recipient, '')
                 AND q.start_time IS NOT NULL)
        OR EXISTS (
               SELECT 1 FROM chimeway_delivery_caps k
               WHERE k.tenant_id = p_tenant
                 AND coalesce(k.recipient_id, '') IN (p_recipient, '')
                 AND k.max_count IS NOT NULL
                 AND (k.channel IS NULL OR k.channel = p_channel));
END
$$;
