-- The processes that claim deliveries, and their beats (chimeway/store/processes.py).

-- name: process_beat
-- Register or beat. A beat later than `gap` after the previous one starts a new unbroken run
-- (`alive_since`): this process was away (or the database was).
INSERT INTO chimeway_processes AS p (id, host, pid)
VALUES (%(id)s, %(host)s, %(pid)s)
ON CONFLICT (id) DO UPDATE
SET beat_at = now(),
    alive_since = CASE WHEN now() - p.beat_at > %(gap)s::interval THEN now()
                       ELSE p.alive_since END

-- name: process_forget
DELETE FROM chimeway_processes WHERE id = %(id)s

-- name: processes_prune
-- Processes silent for longer than `older_than` (their claims are long taken over or done).
DELETE FROM chimeway_processes WHERE beat_at < now() - %(older_than)s::interval
