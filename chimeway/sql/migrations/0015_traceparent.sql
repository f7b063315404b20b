-- OpenTelemetry (the operate issue): the W3C trace context of the span that triggered an
-- event, so that its sends, run in workers, continue the caller's trace (job arguments stay
-- ids). NULL when nothing traced the trigger. A traceparent is an opaque id, not personal
-- data.
ALTER TABLE chimeway_events ADD COLUMN traceparent text;
