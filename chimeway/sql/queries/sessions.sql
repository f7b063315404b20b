-- Settings of a connection's session (chimeway/store/sessions.py).

-- name: session_tune_for_delivery
-- The delivery path's connections (chimeway/engine/connections.py): its statements keep
-- one plan per connection instead of being planned on every call, and that plan never
-- reads a table whole, so none made while a table was tiny stays stuck to it.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false)

-- name: session_generic_plans
-- Generic plans for the rest of this transaction only (is_local), and the mode it had before
-- (computed first: the subquery is not flattened).
SELECT p.previous, set_config('plan_cache_mode', 'force_generic_plan', true) AS mode
FROM (SELECT current_setting('plan_cache_mode') AS previous OFFSET 0) AS p

-- name: session_plan_cache_mode_restore
-- Back to the mode session_generic_plans found, for the rest of this transaction.
SELECT set_config('plan_cache_mode', %(previous)s, true)
