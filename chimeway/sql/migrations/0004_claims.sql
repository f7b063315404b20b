-- Who holds a dispatched delivery, and how often a send was taken over (the reliability
-- issue): a takeover needs its claimant to have stopped beating for `stuck_after` while the
-- taker was alive, and stops after a bound with a dead-letter end state.

-- Every process that claims deliveries beats here a few times a minute. `alive_since` is the
-- start of its current unbroken run of beats: after an outage it starts again, so no live
-- claimant is presumed dead because the database was away.
CREATE TABLE chimeway_processes (
    id uuid PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at timestamptz NOT NULL DEFAULT now(),
    alive_since timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE chimeway_deliveries
    ADD COLUMN claimed_by uuid,
    ADD COLUMN takeovers integer NOT NULL DEFAULT 0 CHECK (takeovers >= 0);

-- A send taken over too many times without any outcome recorded: the dead-letter end.
ALTER TYPE chimeway_delivery_reason ADD VALUE 'abandoned';
