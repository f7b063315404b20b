-- Retention (the reliability issue): the periodic prune finds old finished history by age,
-- a batch at a time; these indexes let each batch start where the old rows are instead of
-- reading whole tables.

CREATE INDEX chimeway_events_created_idx ON chimeway_events (created_at);
CREATE INDEX chimeway_signals_routed_idx ON chimeway_signals (routed_at)
    WHERE routed_at IS NOT NULL;
CREATE INDEX chimeway_webhook_ingress_done_idx ON chimeway_webhook_ingress (created_at)
    WHERE ingress_state <> 'queued';
