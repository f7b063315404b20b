-- The trace context a worker continues (chimeway/store/traces.py), read only when a tracer
-- provider is set (chimeway.telemetry).

-- name: traces_for_deliveries
-- Each delivery's trigger's traceparent; deliveries whose trigger was not traced are left out.
SELECT d.id, e.traceparent
FROM chimeway_deliveries d
JOIN chimeway_notifications n ON n.id = d.notification_id
JOIN chimeway_events e ON e.id = n.event_id
WHERE d.id = ANY(%(ids)s) AND e.traceparent IS NOT NULL

-- name: traces_for_run
-- The traceparent of the trigger that started a run (NULL when it was not traced).
SELECT e.traceparent
FROM chimeway_workflow_runs r
JOIN chimeway_notifications n ON n.id = r.notification_id
JOIN chimeway_events e ON e.id = n.event_id
WHERE r.id = %(run_id)s
