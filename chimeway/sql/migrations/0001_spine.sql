-- The spine of design §4: events -> notifications -> deliveries -> attempts, durable
-- workflow definitions/steps/runs/transitions, signals and webhook ingress.
-- Entities use uuid keys; append-only logs use bigint identities so "oldest first" is exact
-- even for rows written in one transaction.

CREATE TYPE chimeway_delivery_status AS ENUM (
    'pending', 'dispatched', 'succeeded', 'failed', 'suppressed', 'cancelled', 'digested'
);
CREATE TYPE chimeway_delivery_reason AS ENUM (
    'retries_exhausted', 'permanent_failure', 'bounced', 'channel_disabled',
    'category_disabled', 'delivery_cap_reached', 'already_read', 'superseded', 'manual'
);
CREATE TYPE chimeway_orchestration_state AS ENUM ('ready', 'deferred', 'digest_held');
CREATE TYPE chimeway_attempt_outcome AS ENUM ('succeeded', 'failed', 'bounced', 'rejected');
CREATE TYPE chimeway_error_class AS ENUM ('temporary', 'permanent', 'bounced', 'unknown');
CREATE TYPE chimeway_run_state AS ENUM ('active', 'waiting', 'completed', 'stopped', 'failed');
CREATE TYPE chimeway_ingress_state AS ENUM ('queued', 'processed', 'ignored', 'failed');
CREATE TYPE chimeway_feedback_status AS ENUM ('delivered', 'bounced', 'failed');

CREATE TABLE chimeway_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    notification_key text NOT NULL CHECK (btrim(notification_key) <> ''),
    notification_version integer NOT NULL CHECK (notification_version >= 1),
    idempotency_key text NOT NULL CHECK (btrim(idempotency_key) <> ''),
    correlation_id text,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_events_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX chimeway_events_correlation_idx ON chimeway_events (tenant_id, correlation_id)
    WHERE correlation_id IS NOT NULL;

CREATE TABLE chimeway_workflow_definitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_key text NOT NULL CHECK (btrim(workflow_key) <> ''),
    workflow_version integer NOT NULL CHECK (workflow_version >= 1),
    notification_key text NOT NULL,
    checksum text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_workflow_definitions_key_version_key
        UNIQUE (workflow_key, workflow_version)
);

CREATE TABLE chimeway_workflow_steps (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    definition_id uuid NOT NULL REFERENCES chimeway_workflow_definitions (id) ON DELETE CASCADE,
    step_key text NOT NULL CHECK (btrim(step_key) <> ''),
    step_order integer NOT NULL CHECK (step_order >= 1),
    channel text NOT NULL CHECK (btrim(channel) <> ''),
    config jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT chimeway_workflow_steps_definition_key UNIQUE (definition_id, step_key),
    CONSTRAINT chimeway_workflow_steps_definition_order UNIQUE (definition_id, step_order)
);

CREATE TABLE chimeway_notifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id uuid NOT NULL REFERENCES chimeway_events (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    recipient_id text NOT NULL CHECK (btrim(recipient_id) <> ''),
    recipient_type text NOT NULL DEFAULT 'user',
    category text,
    assigns jsonb NOT NULL DEFAULT '{}',
    -- Validated content per channel, rendered at trigger time: later workflow steps are
    -- planned from it without calling the notifier again.
    contents jsonb NOT NULL DEFAULT '{}',
    seen_at timestamptz,
    read_at timestamptz,
    archived_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_notifications_event_recipient UNIQUE (event_id, recipient_id)
);
CREATE INDEX chimeway_notifications_inbox_idx
    ON chimeway_notifications (tenant_id, recipient_id, created_at DESC);

CREATE TABLE chimeway_workflow_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    definition_id uuid NOT NULL REFERENCES chimeway_workflow_definitions (id),
    notification_id uuid NOT NULL REFERENCES chimeway_notifications (id) ON DELETE CASCADE,
    recipient_id text NOT NULL,
    current_step_id uuid NOT NULL REFERENCES chimeway_workflow_steps (id),
    state chimeway_run_state NOT NULL DEFAULT 'active',
    status_reason text NOT NULL,
    status_context jsonb NOT NULL DEFAULT '{}',
    suspended_until timestamptz,
    pending_signals text[] NOT NULL DEFAULT '{}',
    terminal_reason text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_transition_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_workflow_runs_notification UNIQUE (notification_id),
    CONSTRAINT chimeway_workflow_runs_waiting_has_due
        CHECK (state <> 'waiting' OR suspended_until IS NOT NULL)
);
-- Due sweeps: only waiting runs are indexed, so the index stays as small as the backlog.
CREATE INDEX chimeway_workflow_runs_due_idx
    ON chimeway_workflow_runs (suspended_until) WHERE state = 'waiting';
-- Signal routing: a tenant's waiting runs for one actor.
CREATE INDEX chimeway_workflow_runs_waiting_actor_idx
    ON chimeway_workflow_runs (tenant_id, recipient_id) WHERE state = 'waiting';
-- Operator listing: a tenant's runs, newest first.
CREATE INDEX chimeway_workflow_runs_tenant_idx
    ON chimeway_workflow_runs (tenant_id, started_at DESC);
CREATE INDEX chimeway_workflow_runs_definition_idx ON chimeway_workflow_runs (definition_id);
CREATE INDEX chimeway_workflow_runs_step_idx ON chimeway_workflow_runs (current_step_id);

CREATE TABLE chimeway_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    notification_id uuid NOT NULL REFERENCES chimeway_notifications (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    recipient_id text NOT NULL,
    channel text NOT NULL CHECK (btrim(channel) <> ''),
    status chimeway_delivery_status NOT NULL DEFAULT 'pending',
    suppression_reason chimeway_delivery_reason,
    orchestration_state chimeway_orchestration_state NOT NULL DEFAULT 'ready',
    next_eligible_at timestamptz,
    planning_reason text,
    planning_context jsonb NOT NULL DEFAULT '{}',
    delay_fallback boolean NOT NULL DEFAULT false,
    render_data jsonb NOT NULL DEFAULT '{}',
    workflow_run_id uuid REFERENCES chimeway_workflow_runs (id) ON DELETE CASCADE,
    workflow_step_id uuid REFERENCES chimeway_workflow_steps (id) ON DELETE CASCADE,
    provider_message_id text,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    retry_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    terminal_at timestamptz,
    CONSTRAINT chimeway_deliveries_reason_only_when_ended
        CHECK (suppression_reason IS NULL OR status IN ('suppressed', 'cancelled')),
    CONSTRAINT chimeway_deliveries_step_with_run
        CHECK ((workflow_run_id IS NULL) = (workflow_step_id IS NULL))
);
CREATE UNIQUE INDEX chimeway_deliveries_notification_channel
    ON chimeway_deliveries (notification_id, channel) WHERE workflow_run_id IS NULL;
CREATE UNIQUE INDEX chimeway_deliveries_run_step
    ON chimeway_deliveries (workflow_run_id, workflow_step_id) WHERE workflow_run_id IS NOT NULL;
CREATE INDEX chimeway_deliveries_notification_idx ON chimeway_deliveries (notification_id);
CREATE INDEX chimeway_deliveries_step_idx ON chimeway_deliveries (workflow_step_id)
    WHERE workflow_step_id IS NOT NULL;
-- Sweeps: due deferred deliveries, and deliveries stuck before a terminal state.
CREATE INDEX chimeway_deliveries_deferred_due_idx ON chimeway_deliveries (next_eligible_at)
    WHERE status = 'pending' AND orchestration_state = 'deferred';
CREATE INDEX chimeway_deliveries_in_flight_idx ON chimeway_deliveries (status_changed_at)
    WHERE status IN ('pending', 'dispatched');
CREATE INDEX chimeway_deliveries_retry_due_idx ON chimeway_deliveries (retry_at)
    WHERE status = 'failed';
CREATE INDEX chimeway_deliveries_provider_message_idx ON chimeway_deliveries (provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Every status move of a delivery, written by the one guarded transition function.
CREATE TABLE chimeway_delivery_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES chimeway_deliveries (id) ON DELETE CASCADE,
    from_status chimeway_delivery_status,
    to_status chimeway_delivery_status NOT NULL,
    reason text NOT NULL,
    context jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chimeway_delivery_transitions_delivery_idx
    ON chimeway_delivery_transitions (delivery_id, id);

CREATE TABLE chimeway_delivery_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES chimeway_deliveries (id) ON DELETE CASCADE,
    attempt_number integer NOT NULL CHECK (attempt_number >= 1),
    outcome chimeway_attempt_outcome NOT NULL,
    error_class chimeway_error_class,
    error text,
    provider_message_id text,
    provider_response jsonb NOT NULL DEFAULT '{}',
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_delivery_attempts_number UNIQUE (delivery_id, attempt_number),
    CONSTRAINT chimeway_delivery_attempts_error_class
        CHECK ((outcome = 'succeeded') = (error_class IS NULL))
);
CREATE INDEX chimeway_delivery_attempts_provider_message_idx
    ON chimeway_delivery_attempts (provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE chimeway_workflow_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES chimeway_workflow_runs (id) ON DELETE CASCADE,
    step_id uuid REFERENCES chimeway_workflow_steps (id) ON DELETE SET NULL,
    delivery_id uuid REFERENCES chimeway_deliveries (id) ON DELETE SET NULL,
    from_state chimeway_run_state,
    to_state chimeway_run_state NOT NULL,
    reason text NOT NULL,
    context jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chimeway_workflow_transitions_run_idx ON chimeway_workflow_transitions (run_id, id);
CREATE INDEX chimeway_workflow_transitions_delivery_idx ON chimeway_workflow_transitions (delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX chimeway_workflow_transitions_step_idx ON chimeway_workflow_transitions (step_id)
    WHERE step_id IS NOT NULL;

CREATE TABLE chimeway_signals (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    actor_id text NOT NULL CHECK (btrim(actor_id) <> ''),
    event_name text NOT NULL CHECK (btrim(event_name) <> ''),
    payload jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    routed_at timestamptz,
    CONSTRAINT chimeway_signals_event_name_length CHECK (char_length(event_name) <= 200)
);
CREATE UNIQUE INDEX chimeway_signals_tenant_idempotency_key
    ON chimeway_signals (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX chimeway_signals_actor_idx ON chimeway_signals (tenant_id, actor_id, created_at);

CREATE TABLE chimeway_webhook_ingress (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    adapter text NOT NULL CHECK (btrim(adapter) <> ''),
    provider_event_id text,
    delivery_id uuid REFERENCES chimeway_deliveries (id) ON DELETE SET NULL,
    provider_message_id text,
    normalized_status chimeway_feedback_status NOT NULL,
    ingress_state chimeway_ingress_state NOT NULL DEFAULT 'queued',
    ignored_reason text,
    processed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_webhook_ingress_target
        CHECK (delivery_id IS NOT NULL OR provider_message_id IS NOT NULL
               OR ingress_state = 'ignored')
);
CREATE UNIQUE INDEX chimeway_webhook_ingress_provider_event
    ON chimeway_webhook_ingress (adapter, provider_event_id) WHERE provider_event_id IS NOT NULL;
CREATE INDEX chimeway_webhook_ingress_delivery_idx ON chimeway_webhook_ingress (delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX chimeway_webhook_ingress_queued_idx ON chimeway_webhook_ingress (created_at)
    WHERE ingress_state = 'queued';
