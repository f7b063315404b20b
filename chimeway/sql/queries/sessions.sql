-- Settings of a connection's session (chimeway/store/sessions.py).

-- name: session_tune_for_delivery
-- The delivery path's connections (chimeway/engine/connections.py): its statements keep
-- one plan per connection instead of being planned on every call, and that plan never
-- reads a table whole, so none made while a table was tiny stays stuck to it.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false)

-- name: session_set_local
-- A setting for the rest of this transaction only (is_local), and the value it had before
-- (computed first: the subquery is not flattened).
SELECT p.was, set_config(%(name)s, %(value)s, true) AS now
FROM (SELECT current_setting(%(name)s) AS was OFFSET 0) AS p

-- name: session_set_local_back
-- Back to the value session_set_local found, for the rest of this transaction.
SELECT set_config(%(name)s, %(was)s, true)
