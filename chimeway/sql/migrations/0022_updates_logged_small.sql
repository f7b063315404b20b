-- Less WAL per delivery update (issue #18). PostgreSQL logs an update whose new row version
-- stays on the page of the old one as only the bytes between the first and the last byte
-- that changed; an update that moves the row to another page logs the whole row.
--
-- * A delivery's status was its sixth column and its claim's columns its last ones, so its
--   claim and its record each logged nearly the whole row: its rendered content
--   (render_data, inline up to about 2 KB) included. The columns a claim, a record, a retry
--   or a deferral changes now come last, those changed on every update at the very end;
--   what is written once (ids, recipient, channel, rendered content, run and step,
--   category...) comes first and is not logged again. PostgreSQL cannot move a column: each
--   moved one is added at the end, filled from the old one, and the old one dropped (its
--   space in existing rows is freed as they are next updated). This rewrites every row of
--   chimeway_deliveries once, in this migration's transaction (docs/production.md,
--   "Upgrading").
-- * A delivery is updated two or three times while it is sent (claim, record, retries), and
--   at fillfactor 50 its last update (not HOT: the open index's predicate reads
--   terminal_at) mostly found its page full and logged the whole row. At 30 it stays on
--   its page. Measured with bench.wal (one-recipient two-step runs): 6.46 KB of WAL per
--   step before this migration, 6.08 KB after; with a 1.5 KB email body, 10.2 KB before and
--   8.0 KB after. The table's size per delivery after the run: about the same at both
--   settings (dead versions dominate), 7% more with the larger bodies.
-- * A notification is updated when it enters the inbox (inbox_at: not HOT, an indexed
--   column) and when it is marked seen, read or archived. At fillfactor 80 the first of
--   these mostly stays on the page.

ALTER TABLE chimeway_deliveries
    ADD COLUMN planning_reason_m text,
    ADD COLUMN planning_context_m jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN orchestration_state_m chimeway_orchestration_state NOT NULL DEFAULT 'ready',
    ADD COLUMN next_eligible_at_m timestamptz,
    ADD COLUMN takeovers_m integer NOT NULL DEFAULT 0,
    ADD COLUMN suppression_reason_m chimeway_delivery_reason,
    ADD COLUMN retry_at_m timestamptz,
    ADD COLUMN provider_message_id_m text,
    ADD COLUMN terminal_at_m timestamptz,
    ADD COLUMN claimed_by_m uuid,
    ADD COLUMN status_m chimeway_delivery_status NOT NULL DEFAULT 'pending',
    ADD COLUMN status_changed_at_m timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN updated_at_m timestamptz NOT NULL DEFAULT now();

UPDATE chimeway_deliveries SET
    planning_reason_m = planning_reason,
    planning_context_m = planning_context,
    orchestration_state_m = orchestration_state,
    next_eligible_at_m = next_eligible_at,
    takeovers_m = takeovers,
    suppression_reason_m = suppression_reason,
    retry_at_m = retry_at,
    provider_message_id_m = provider_message_id,
    terminal_at_m = terminal_at,
    claimed_by_m = claimed_by,
    status_m = status,
    status_changed_at_m = status_changed_at,
    updated_at_m = updated_at;

-- Drops with them the indexes and checks that read them (recreated below).
ALTER TABLE chimeway_deliveries
    DROP COLUMN planning_reason,
    DROP COLUMN planning_context,
    DROP COLUMN orchestration_state,
    DROP COLUMN next_eligible_at,
    DROP COLUMN takeovers,
    DROP COLUMN suppression_reason,
    DROP COLUMN retry_at,
    DROP COLUMN provider_message_id,
    DROP COLUMN terminal_at,
    DROP COLUMN claimed_by,
    DROP COLUMN status,
    DROP COLUMN status_changed_at,
    DROP COLUMN updated_at;

ALTER TABLE chimeway_deliveries RENAME COLUMN planning_reason_m TO planning_reason;
ALTER TABLE chimeway_deliveries RENAME COLUMN planning_context_m TO planning_context;
ALTER TABLE chimeway_deliveries RENAME COLUMN orchestration_state_m TO orchestration_state;
ALTER TABLE chimeway_deliveries RENAME COLUMN next_eligible_at_m TO next_eligible_at;
ALTER TABLE chimeway_deliveries RENAME COLUMN takeovers_m TO takeovers;
ALTER TABLE chimeway_deliveries RENAME COLUMN suppression_reason_m TO suppression_reason;
ALTER TABLE chimeway_deliveries RENAME COLUMN retry_at_m TO retry_at;
ALTER TABLE chimeway_deliveries RENAME COLUMN provider_message_id_m TO provider_message_id;
ALTER TABLE chimeway_deliveries RENAME COLUMN terminal_at_m TO terminal_at;
ALTER TABLE chimeway_deliveries RENAME COLUMN claimed_by_m TO claimed_by;
ALTER TABLE chimeway_deliveries RENAME COLUMN status_m TO status;
ALTER TABLE chimeway_deliveries RENAME COLUMN status_changed_at_m TO status_changed_at;
ALTER TABLE chimeway_deliveries RENAME COLUMN updated_at_m TO updated_at;

ALTER TABLE chimeway_deliveries
    ADD CONSTRAINT chimeway_deliveries_takeovers_check CHECK (takeovers >= 0),
    ADD CONSTRAINT chimeway_deliveries_reason_only_when_ended
        CHECK (suppression_reason IS NULL OR status IN ('suppressed', 'cancelled'));

CREATE INDEX chimeway_deliveries_open_idx ON chimeway_deliveries (created_at)
    WHERE terminal_at IS NULL;
CREATE INDEX chimeway_deliveries_deferred_idx ON chimeway_deliveries (next_eligible_at)
    WHERE orchestration_state = 'deferred';

ALTER TABLE chimeway_deliveries SET (fillfactor = 30);
ALTER TABLE chimeway_notifications SET (fillfactor = 80);
