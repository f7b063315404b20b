-- Settings of a connection's session (chimeway/store/sessions.py).

-- name: session_tune_for_delivery
-- The delivery path's connections (chimeway/engine/connections.py): its statements keep
-- one plan per connection instead of being planned on every call, and that plan never
-- reads a table whole, so none made while a table was tiny stays stuck to it.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false)

-- name: session_forget_prepared
-- Drops every statement prepared on this connection; psycopg, seeing the command, forgets
-- them too (chimeway/store/sessions.py, Replanning: a migration changed the columns one
-- returns).
DEALLOCATE ALL

-- name: session_set_local
-- A setting for the rest of this transaction only (is_local), and the value it had before
-- (computed first: the subquery is not flattened).
SELECT p.was, set_config(%(name)s, %(value)s, true) AS now
FROM (SELECT current_setting(%(name)s) AS was OFFSET 0) AS p

-- name: session_set_local_back
-- Back to the value session_set_local found, for the rest of this transaction.
SELECT set_config(%(name)s, %(was)s, true)

-- name: session_savepoint
-- Work sent to the server in one round trip (chimeway/engine/connections.py, together):
-- a savepoint in the caller's open transaction, so that an error in that work rolls back
-- only the work.
SAVEPOINT chimeway_together

-- name: session_savepoint_release
RELEASE SAVEPOINT chimeway_together

-- name: session_savepoint_back
-- The work failed: back to where the savepoint was taken (the caller's transaction
-- usable again); session_savepoint_release then drops it.
ROLLBACK TO SAVEPOINT chimeway_together
