-- Batching (digests, design §15): a workflow that starts with a Batch collects a recipient's
-- notifications into one run. A digest is that batch: open while it collects, closed at its
-- window's end or when it holds max_items; its run then sends one delivery for all members.
CREATE TYPE chimeway_digest_state AS ENUM ('open', 'closed');

CREATE TABLE chimeway_digests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL,
    workflow_key text NOT NULL,
    recipient_id text NOT NULL,
    -- The value of the Batch's key field in the first trigger's params ('' without a key).
    batch_key text NOT NULL,
    -- The run that collects the members and sends the digest (set in the transaction that
    -- opens the digest).
    run_id uuid REFERENCES chimeway_workflow_runs (id) ON DELETE CASCADE,
    state chimeway_digest_state NOT NULL DEFAULT 'open',
    opened_at timestamptz NOT NULL DEFAULT now(),
    closes_at timestamptz NOT NULL,
    max_items integer CHECK (max_items >= 2),
    member_count integer NOT NULL DEFAULT 1 CHECK (member_count >= 1),
    closed_at timestamptz,
    close_reason text CHECK (close_reason IN ('window_elapsed', 'max_items')),
    -- The delivery that sent the digest (the run's first step), once planned.
    delivery_id uuid REFERENCES chimeway_deliveries (id) ON DELETE SET NULL,
    CONSTRAINT chimeway_digests_closed_when
        CHECK ((state = 'closed') = (closed_at IS NOT NULL AND close_reason IS NOT NULL))
);
-- At most one open digest per (tenant, workflow, recipient, batch key): concurrent triggers
-- meet on this index, and all but the first join the one it opened.
CREATE UNIQUE INDEX chimeway_digests_open
    ON chimeway_digests (tenant_id, workflow_key, recipient_id, batch_key) WHERE state = 'open';
CREATE UNIQUE INDEX chimeway_digests_run ON chimeway_digests (run_id);
CREATE INDEX chimeway_digests_delivery_idx ON chimeway_digests (delivery_id)
    WHERE delivery_id IS NOT NULL;

-- A digest's members in the order they joined: the first is the run's own notification;
-- every later one has a delivery of its own, held (pending/digest_held) until the digest
-- closes and then `digested` into the digest's delivery.
CREATE TABLE chimeway_digest_members (
    digest_id uuid NOT NULL REFERENCES chimeway_digests (id) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 1),
    notification_id uuid NOT NULL REFERENCES chimeway_notifications (id) ON DELETE CASCADE,
    delivery_id uuid REFERENCES chimeway_deliveries (id) ON DELETE CASCADE,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (digest_id, position),
    CONSTRAINT chimeway_digest_members_notification UNIQUE (notification_id)
);
CREATE INDEX chimeway_digest_members_delivery_idx ON chimeway_digest_members (delivery_id)
    WHERE delivery_id IS NOT NULL;
