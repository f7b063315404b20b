-- Whether any policy can apply to a delivery: the fast paths of planning, the trigger and
-- the claim (design §13) skip policy's read and decision for a delivery when nothing can
-- apply to it, and take the full path otherwise. It is a conservative test over policy's
-- data, not the decision: a preference rule whose scope matches the delivery (its channel,
-- category and workflow, or none of them), quiet hours with times, or a cap on its channel
-- or on every channel, of the recipient or of the tenant's defaults (recipient_id NULL), each
-- through its table's unique index on (tenant_id, coalesce(recipient_id, ''), ...). Policy
-- data of a new kind must make it true (chimeway/policy/decision.py says so too).
CREATE FUNCTION chimeway_policy_applies(
    p_tenant text, p_recipient text, p_channel text, p_category text, p_workflow text
) RETURNS boolean
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
