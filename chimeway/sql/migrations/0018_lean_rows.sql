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

-- * No foreign keys between the rows of one notification's work: an event's notifications,
--   their runs and deliveries, and the history of each (attempts, delivery and run
--   transitions). Each is written by a statement that has just written or locked its parent
--   (the trigger writes event, notification, run, delivery and their history together; a
--   transition writes history for the rows it moves; an attempt is recorded on a claimed
--   delivery), so the checks only cost a lookup and a row lock of the parent per inserted
--   row: about ten per step. Retention (the one place that deletes these rows) now deletes
--   the children itself (retention_events_delete); tests/integration/test_retention.py
--   checks it leaves no orphans. Keys that guard input stay (digests, webhook ingress,
--   workflow steps), and so does a delivery's key to its run: deleting a run by hand takes
--   its deliveries (tests/integration/test_resilience.py), so no worker sends for a run
--   that is gone.
ALTER TABLE chimeway_notifications
    DROP CONSTRAINT chimeway_notifications_event_id_fkey;
ALTER TABLE chimeway_workflow_runs
    DROP CONSTRAINT chimeway_workflow_runs_notification_id_fkey;
ALTER TABLE chimeway_deliveries
    DROP CONSTRAINT chimeway_deliveries_notification_id_fkey;
ALTER TABLE chimeway_delivery_attempts
    DROP CONSTRAINT chimeway_delivery_attempts_delivery_id_fkey;
ALTER TABLE chimeway_delivery_transitions
    DROP CONSTRAINT chimeway_delivery_transitions_delivery_id_fkey;
ALTER TABLE chimeway_workflow_transitions
    DROP CONSTRAINT chimeway_workflow_transitions_run_id_fkey;
