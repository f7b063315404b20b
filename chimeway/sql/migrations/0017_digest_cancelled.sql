-- A digest whose run an operator cancels (cw.cancel_run) closes with it, as `run_cancelled`,
-- so that later triggers open a new batch instead of joining one nobody will send.
ALTER TABLE chimeway_digests DROP CONSTRAINT chimeway_digests_close_reason_check;
ALTER TABLE chimeway_digests ADD CONSTRAINT chimeway_digests_close_reason_check
    CHECK (close_reason IN ('window_elapsed', 'max_items', 'run_cancelled'));
