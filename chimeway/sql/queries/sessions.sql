-- Settings of a connection's session (chimeway/store/sessions.py).

-- name: session_tune_for_delivery
-- The delivery path's connections (chimeway/engine/connections.py): its statements keep
-- one plan per connection instead of being planned on every call, and that plan never
-- reads a table whole, so none made while a table was tiny stays stuck to it.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false)
