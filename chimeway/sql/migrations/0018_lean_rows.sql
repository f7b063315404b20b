-- Leaner one-recipient steps (issue #18): the policy guard inlined into the statements that
-- call it, and fewer rows touched per step.
--
-- * chimeway_policy_scope: the body of chimeway_policy_applies (0010, 0016) as a SQL
--   function returning a set. PostgreSQL inlines such a function into the calling query
--   (LANGUAGE sql, STABLE, not STRICT, one SELECT), subqueries and all, where a scalar SQL
--   function with subqueries is never inlined and a PL/pgSQL one is a call per row (about
--   0.2-0.3 ms of the one-statement trigger's 1.4 ms). The trigger and the claim call it in
--   FROM; chimeway_policy_applies stays for policy's read and now reads it, so the test is
--   written once.

CREATE FUNCTION chimeway_policy_scope(
    p_tenant text, p_recipient text, p_channel text, p_category text, p_workflow text
) RETURNS TABLE (applies boolean)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT EXISTS (
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
                 AND (k.channel IS NULL OR k.channel = p_channel))
$$;

CREATE OR REPLACE FUNCTION chimeway_policy_applies(
    p_tenant text, p_recipient text, p_channel text, p_category text, p_workflow text
) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT s.applies
            FROM chimeway_policy_scope(p_tenant, p_recipient, p_channel, p_category,
                                       p_workflow) AS s);
END
$$;
