-- The database is the clock (chimeway/store/clock.py).

-- name: clock_now
SELECT now()
