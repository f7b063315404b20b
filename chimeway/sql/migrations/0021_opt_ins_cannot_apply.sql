-- An opt-in is not a policy that can apply (issue #18): chimeway_policy_scope (0018) now
-- counts only preference rules that turn something off.
--
-- A rule that turns a channel, category or workflow on never changes a delivery's verdict:
-- preferences decide per kind by the most specific rule of the recipient, then of the
-- tenant, and an enabled rule at most overrides an opt-out of the tenant's (which is itself
-- an opt-out, and still makes the scope apply). A recipient whose only rules are opt-ins (a
-- user who turned channels on) was nevertheless sent down the planning path, seven round
-- trips more per trigger and a policy read at each claim, for the verdict "send now" it
-- reaches without them. Quiet hours and caps still apply as before.

CREATE OR REPLACE FUNCTION chimeway_policy_scope(
    p_tenant text, p_recipient text, p_channel text, p_category text, p_workflow text
) RETURNS TABLE (applies boolean)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT EXISTS (
               SELECT 1 FROM chimeway_preferences r
               WHERE r.tenant_id = p_tenant
                 AND coalesce(r.recipient_id, '') IN (p_recipient, '')
                 AND NOT r.enabled
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
