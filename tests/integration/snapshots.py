"""Snapshots of what a run's progression wrote, to compare two ways of doing the same work."""

from __future__ import annotations

import re
import uuid

import psycopg


def snapshot(url: str, run_id: uuid.UUID) -> str:
    """Everything a run's progression wrote, as text with its own ids and times masked."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT r.recipient_id, r.notification_id::text, json_build_object(
              'run', (SELECT to_jsonb(x) - 'id' - 'started_at' - 'last_transition_at'
                      - 'notification_id' - 'current_step_id' - 'definition_id'
                        || jsonb_build_object('step', st.step_key)
                      FROM chimeway_workflow_runs x WHERE x.id = r.id),
              'transitions', (SELECT json_agg(json_build_object(
                  'reason', t.reason, 'from', t.from_state, 'to', t.to_state,
                  'step', ts.step_key, 'with_delivery', t.delivery_id IS NOT NULL,
                  'context', t.context) ORDER BY t.id)
                FROM chimeway_workflow_transitions t
                LEFT JOIN chimeway_workflow_steps ts ON ts.id = t.step_id
                WHERE t.run_id = r.id),
              'deliveries', (SELECT json_agg(json_build_object(
                  'step', ds.step_key, 'channel', d.channel, 'status', d.status,
                  'render_data', d.render_data, 'max_attempts', d.max_attempts,
                  'history', (SELECT json_agg(json_build_array(h.from_status, h.to_status,
                      h.reason, h.context) ORDER BY h.id) FROM chimeway_delivery_transitions h
                      WHERE h.delivery_id = d.id),
                  'suppression_reason', d.suppression_reason,
                  'retry_at', d.retry_at IS NOT NULL,
                  'attempts', (SELECT json_agg(json_build_array(a.attempt_number, a.outcome,
                      a.error_class, a.error, a.provider_response) ORDER BY a.attempt_number)
                      FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id),
                  -- A batch's deliveries share chunk jobs, a timer's has its own: the job
                  -- that will send it is compared, not the job's shape.
                  'jobs', (SELECT json_agg(json_build_array(j.queue_name, j.priority,
                      j.status, j.scheduled_at IS NULL))
                      FROM procrastinate_jobs j WHERE j.args->>'delivery_id' = d.id::text
                        OR j.args->'delivery_ids' ? d.id::text))
                  ORDER BY ds.step_order)
                FROM chimeway_deliveries d
                JOIN chimeway_workflow_steps ds ON ds.id = d.workflow_step_id
                WHERE d.workflow_run_id = r.id)
            )::text
            FROM chimeway_workflow_runs r
            JOIN chimeway_workflow_steps st ON st.id = r.current_step_id
            WHERE r.id = %s
            """,
            [run_id],
        ).fetchone()
    assert row is not None
    recipient, notification, text = row
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[0-9:.]+(\+00:00)?", "<time>", text)
    return text.replace(f'"{recipient}"', '"<recipient>"').replace(notification, "<id>")
