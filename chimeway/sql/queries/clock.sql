-- The database is the clock.

-- name: clock_now
SELECT now()
