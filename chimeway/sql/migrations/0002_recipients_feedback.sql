-- Design §12: the recipient directory, provider feedback as it is processed, and the
-- preferences a complaint or an unsubscribe writes (read by the policy of §13).
-- New enum values are only added here, never used: PostgreSQL allows their use once the
-- migration's transaction has committed.

-- A channel whose adapter needs an address the recipient's profile lacks.
ALTER TYPE chimeway_delivery_reason ADD VALUE 'no_address';
-- Every kind of provider feedback (chimeway.feedback.FeedbackKind), not only outcomes.
ALTER TYPE chimeway_feedback_status ADD VALUE 'complained';
ALTER TYPE chimeway_feedback_status ADD VALUE 'opened';
ALTER TYPE chimeway_feedback_status ADD VALUE 'clicked';
ALTER TYPE chimeway_feedback_status ADD VALUE 'unsubscribed';

-- Who a recipient is, per tenant: the addresses adapters send to, read at send time.
-- Personal data: erased by `forget`, never copied into traces, logs or job arguments.
CREATE TABLE chimeway_recipients (
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    recipient_id text NOT NULL CHECK (btrim(recipient_id) <> ''),
    email text,
    phone text,
    locale text,
    timezone text,
    data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, recipient_id)
);

-- Opt-ins and opt-outs (chimeway.policy.PreferenceScope): a recipient's own, or the tenant's
-- default when recipient_id is NULL; one row per scope, the last one set wins.
CREATE TABLE chimeway_preferences (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    recipient_id text CHECK (btrim(recipient_id) <> ''),
    channel text CHECK (btrim(channel) <> ''),
    category text CHECK (btrim(category) <> ''),
    workflow text CHECK (btrim(workflow) <> ''),
    enabled boolean NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now(),
    -- Who set it: "api", or "complained:<provider>" / "unsubscribed:<provider>" for feedback.
    source text NOT NULL CHECK (btrim(source) <> ''),
    CONSTRAINT chimeway_preferences_has_scope
        CHECK (channel IS NOT NULL OR category IS NOT NULL OR workflow IS NOT NULL),
    CONSTRAINT chimeway_preferences_category_or_workflow
        CHECK (category IS NULL OR workflow IS NULL)
);
-- The empty string stands for NULL: no column may hold it (the CHECKs above).
CREATE UNIQUE INDEX chimeway_preferences_scope ON chimeway_preferences (
    tenant_id, coalesce(recipient_id, ''), coalesce(channel, ''), coalesce(category, ''),
    coalesce(workflow, '')
);

-- Webhook ingress as provider feedback: what the verified webhook said (`delivery_ref`, the
-- delivery id the provider echoed, is checked only when the row is processed and then
-- becomes `delivery_id`), and what processing did with it (`outcome`).
ALTER TABLE chimeway_webhook_ingress RENAME COLUMN adapter TO provider;
ALTER TABLE chimeway_webhook_ingress RENAME COLUMN normalized_status TO kind;
ALTER TABLE chimeway_webhook_ingress
    ADD COLUMN delivery_ref uuid,
    ADD COLUMN occurred_at timestamptz,
    ADD COLUMN permanent boolean,
    ADD COLUMN evidence jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN outcome text,
    DROP CONSTRAINT chimeway_webhook_ingress_target,
    ADD CONSTRAINT chimeway_webhook_ingress_target
        CHECK (delivery_ref IS NOT NULL OR delivery_id IS NOT NULL
               OR provider_message_id IS NOT NULL OR ingress_state = 'ignored');

-- GET /metrics reads the send latency of the attempts finished in the last minutes.
CREATE INDEX chimeway_delivery_attempts_finished_idx ON chimeway_delivery_attempts (finished_at);
