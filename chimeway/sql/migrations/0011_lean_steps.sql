-- Cheaper steps, second part (the performance issue): fewer index entries, foreign-key
-- checks and non-HOT updates per step. Measured on 300 one-recipient two-step runs (WAL by
-- relation, pg_walinspect): the history tables wrote five index entries per row, each insert
-- checked and locked its immutable parents, and a run's last move rewrote every index.
--
-- * Definitions and their steps are immutable and never deleted (a trigger now refuses it),
--   so the foreign keys that pointed at them from runs, deliveries and run transitions only
--   cost a lookup and a row lock (a WAL record) per inserted row: they go. A transition's
--   delivery_id is evidence, like its step_id, not a link to keep up: its key goes too.
-- * History is read by its parent only: a run's transitions by run, a delivery's by
--   delivery. Each table keeps one index, its primary key, led by the parent.
-- * A run is waiting exactly when it has a due time (suspended_until), now a checked
--   invariant; the two partial indexes of waiting runs use that column, which a run's moves
--   that do not wait (active -> active -> completed) leave alone, so they can be HOT.

CREATE FUNCTION chimeway_refuse_definition_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chimeway: % rows are immutable and never deleted: runs, deliveries '
        'and their history refer to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER chimeway_definitions_kept BEFORE DELETE ON chimeway_workflow_definitions
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_definition_delete();
CREATE TRIGGER chimeway_definitions_kept_truncate BEFORE TRUNCATE ON chimeway_workflow_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_definition_delete();
CREATE TRIGGER chimeway_steps_kept BEFORE DELETE ON chimeway_workflow_steps
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_definition_delete();
CREATE TRIGGER chimeway_steps_kept_truncate BEFORE TRUNCATE ON chimeway_workflow_steps
    FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_definition_delete();

ALTER TABLE chimeway_workflow_runs
    DROP CONSTRAINT chimeway_workflow_runs_current_step_id_fkey,
    DROP CONSTRAINT chimeway_workflow_runs_definition_id_fkey;
ALTER TABLE chimeway_deliveries
    DROP CONSTRAINT chimeway_deliveries_workflow_step_id_fkey;
ALTER TABLE chimeway_workflow_transitions
    DROP CONSTRAINT chimeway_workflow_transitions_step_id_fkey,
    DROP CONSTRAINT chimeway_workflow_transitions_delivery_id_fkey;

-- History: one index each, the primary key led by the parent.
DROP INDEX chimeway_workflow_transitions_step_idx;
DROP INDEX chimeway_workflow_transitions_delivery_idx;
DROP INDEX chimeway_workflow_transitions_run_idx;
ALTER TABLE chimeway_workflow_transitions
    DROP CONSTRAINT chimeway_workflow_transitions_pkey,
    ADD CONSTRAINT chimeway_workflow_transitions_pkey PRIMARY KEY (run_id, id);
DROP INDEX chimeway_delivery_transitions_delivery_idx;
ALTER TABLE chimeway_delivery_transitions
    DROP CONSTRAINT chimeway_delivery_transitions_pkey,
    ADD CONSTRAINT chimeway_delivery_transitions_pkey PRIMARY KEY (delivery_id, id);

-- Waiting runs: by their due time, whatever their state's name.
UPDATE chimeway_workflow_runs SET suspended_until = NULL
WHERE state <> 'waiting' AND suspended_until IS NOT NULL;
ALTER TABLE chimeway_workflow_runs
    DROP CONSTRAINT chimeway_workflow_runs_waiting_has_due,
    ADD CONSTRAINT chimeway_workflow_runs_waiting_has_due
        CHECK ((state = 'waiting') = (suspended_until IS NOT NULL));
DROP INDEX chimeway_workflow_runs_due_idx;
CREATE INDEX chimeway_workflow_runs_due_idx
    ON chimeway_workflow_runs (suspended_until) WHERE suspended_until IS NOT NULL;
DROP INDEX chimeway_workflow_runs_waiting_actor_idx;
CREATE INDEX chimeway_workflow_runs_waiting_actor_idx
    ON chimeway_workflow_runs (tenant_id, recipient_id) WHERE suspended_until IS NOT NULL;
