-- Design §13: the policy that decides, when a delivery is planned and again when it is
-- claimed, whether it is sent now, later or not at all: preferences (0002's table), quiet
-- hours, caps and throttles.
-- New enum values are only added here, never used: PostgreSQL allows their use once the
-- migration's transaction has committed.

-- A workflow (or notifier) turned off by the recipient or the tenant.
ALTER TYPE chimeway_delivery_reason ADD VALUE 'workflow_disabled';

-- What policy decides a delivery on, fixed when it is planned (a workflow's later steps take
-- their first step's): the notifier's category, the workflow key (the notifier key for a
-- delivery outside a workflow), and the notifier's `critical` (bypasses opt-outs and caps)
-- and `bypass_quiet_hours` flags.
ALTER TABLE chimeway_deliveries
    ADD COLUMN category text,
    ADD COLUMN workflow_key text,
    ADD COLUMN critical boolean NOT NULL DEFAULT false,
    ADD COLUMN bypass_quiet_hours boolean NOT NULL DEFAULT false;

-- Caps count a recipient's deliveries planned in a recent window.
CREATE INDEX chimeway_deliveries_recipient_recent_idx
    ON chimeway_deliveries (tenant_id, recipient_id, created_at);

-- Quiet hours: a recipient's own, or the tenant's default (recipient_id NULL) for recipients
-- without one. NULL times: explicitly none (a recipient's row then overrides the default).
-- A NULL time zone is the recipient's profile zone, else UTC.
CREATE TABLE chimeway_quiet_hours (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    recipient_id text CHECK (btrim(recipient_id) <> ''),
    start_time time,
    end_time time,
    timezone text CHECK (btrim(timezone) <> ''),
    set_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_quiet_hours_both_or_neither
        CHECK ((start_time IS NULL) = (end_time IS NULL)),
    CONSTRAINT chimeway_quiet_hours_not_empty CHECK (start_time <> end_time)
);
CREATE UNIQUE INDEX chimeway_quiet_hours_owner
    ON chimeway_quiet_hours (tenant_id, coalesce(recipient_id, ''));

-- Delivery caps: at most max_count deliveries per `per` to a recipient, on one channel or on
-- all (channel NULL). A recipient's row overrides the tenant's default (recipient_id NULL)
-- of the same channel scope; NULL max_count: explicitly none.
CREATE TABLE chimeway_delivery_caps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL CHECK (btrim(tenant_id) <> ''),
    recipient_id text CHECK (btrim(recipient_id) <> ''),
    channel text CHECK (btrim(channel) <> ''),
    max_count integer CHECK (max_count >= 1),
    per interval CHECK (per > interval '0'),
    set_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chimeway_delivery_caps_both_or_neither CHECK ((max_count IS NULL) = (per IS NULL))
);
CREATE UNIQUE INDEX chimeway_delivery_caps_scope
    ON chimeway_delivery_caps (tenant_id, coalesce(recipient_id, ''), coalesce(channel, ''));

-- Throttles: the sends granted under each throttle key, at the instant of their claim (the
-- attempts' start). Claimers of a key take its advisory lock, count the sends of the last
-- `per` and add theirs, so no window of `per` ever holds more than the limit, whatever the
-- number of workers. Old rows are pruned as grants are made.
CREATE TABLE chimeway_throttle_sends (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL CHECK (btrim(key) <> ''),
    sent_at timestamptz NOT NULL,
    sends integer NOT NULL CHECK (sends >= 1)
);
CREATE INDEX chimeway_throttle_sends_key_idx ON chimeway_throttle_sends (key, sent_at);
