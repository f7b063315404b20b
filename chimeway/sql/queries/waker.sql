-- The due-time waker of the worker (chimeway/store/waker.py, chimeway/waker.py).

-- name: waker_session
-- The waker blocks on its lock and sleeps on LISTEN: no server timeout may end that.
SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
       set_config('idle_session_timeout', '0', false)

-- name: waker_lock
-- One leader per queue set: the others wait here, issuing no queries, and one of them takes
-- over the moment the leader's session ends.
SELECT pg_advisory_lock(hashtextextended(%(key)s, 0))

-- name: waker_listen
-- Future due times, from Chimeway's triggers on procrastinate_jobs (migration 0003).
LISTEN chimeway_waker

-- name: waker_plan
-- On the database's clock: the queues with jobs that came due since `mark` (one job id each,
-- for the notification), the queues whose jobs due a little while ago are still waiting
-- (an announcement a worker may have missed), and the seconds until the next due job.
-- Each part is a range of chimeway_jobs_todo_scheduled_idx.
WITH t AS (SELECT clock_timestamp() AS now),
due AS (
    SELECT j.queue_name::text AS queue_name, min(j.id) AS job_id
    FROM procrastinate_jobs j, t
    WHERE j.status = 'todo' AND j.scheduled_at > %(mark)s AND j.scheduled_at <= t.now
      AND (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
    GROUP BY j.queue_name
),
stale AS (
    SELECT j.queue_name::text AS queue_name
    FROM procrastinate_jobs j, t
    WHERE j.status = 'todo'
      AND j.scheduled_at <= t.now - %(stale_after)s::interval
      AND j.scheduled_at > t.now - %(lookback)s::interval
      AND (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
    LIMIT 100
)
SELECT t.now AS db_now,
       ARRAY(SELECT queue_name FROM due ORDER BY queue_name) AS due_queues,
       ARRAY(SELECT job_id FROM due ORDER BY queue_name) AS due_jobs,
       ARRAY(SELECT DISTINCT queue_name FROM stale) AS stale_queues,
       (SELECT extract(epoch FROM j.scheduled_at - t.now)::float8
        FROM procrastinate_jobs j
        WHERE j.status = 'todo' AND j.scheduled_at > t.now
          AND (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
        ORDER BY j.scheduled_at
        LIMIT 1) AS next_in
FROM t

-- name: waker_announce
-- What Procrastinate's insert trigger sends, so its workers fetch now: per queue, on the
-- queue's channel and on the channel of workers that serve every queue.
SELECT count(pg_notify(c.channel, c.payload))
FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS c (channel, payload)
