-- The migration runner's tracking table and lock (chimeway/store/migrations.py).

-- name: migrations_table_create
CREATE TABLE IF NOT EXISTS chimeway_migrations (
    line text NOT NULL,
    version text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (line, version)
)

-- name: migrations_table_exists
SELECT to_regclass('chimeway_migrations') IS NOT NULL AS present

-- name: migration_list
SELECT line, version, name, checksum, applied_at
FROM chimeway_migrations
ORDER BY applied_at, line, version

-- name: migration_record
INSERT INTO chimeway_migrations (line, version, name, checksum)
VALUES (%(line)s, %(version)s, %(name)s, %(checksum)s)

-- name: migration_lock_try
SELECT pg_try_advisory_lock(hashtextextended('chimeway.migrate', 0)) AS locked

-- name: migration_lock
SELECT pg_advisory_lock(hashtextextended('chimeway.migrate', 0))

-- name: migration_lock_xact
-- Inside a caller's transaction (Alembic, Django): released by its commit or rollback.
SELECT pg_advisory_xact_lock(hashtextextended('chimeway.migrate', 0))

-- name: migration_unlock
SELECT pg_advisory_unlock(hashtextextended('chimeway.migrate', 0))

-- name: procrastinate_schema_present
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present

-- name: migration_record_script
-- The tracking row as a literal statement, for `chimeway migrate print` (values filled in
-- with psycopg.sql.Literal).
INSERT INTO chimeway_migrations (line, version, name, checksum)
VALUES ({line}, {version}, {name}, {checksum})

-- name: fetch_plans_unpinned
-- Procrastinate's job-fetch functions that may still cache a generic plan: a plan built on
-- an empty, analysed procrastinate_jobs is then kept while the queue fills, and fetches
-- sort the whole table (research: fetch-plan-collapse.md). Procrastinate migrations that
-- CREATE OR REPLACE a function drop its settings, so the runner checks after each run.
SELECT p.oid::regprocedure::text AS signature
FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace
  AND p.proname ~ '^procrastinate_fetch_job_v[0-9]+$'
  AND NOT coalesce('plan_cache_mode=force_custom_plan' = ANY(p.proconfig), false)
ORDER BY 1

-- name: fetch_plans_pin
-- Every job-fetch function plans each call with its actual arguments and statistics.
-- Idempotent: functions that have the setting already are left alone.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname ~ '^procrastinate_fetch_job_v[0-9]+$'
          AND NOT coalesce('plan_cache_mode=force_custom_plan' = ANY(p.proconfig), false)
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_custom_plan', f);
    END LOOP;
END
$$

-- name: fetch_plan_settings
-- The settings of the job-fetch function the installed Procrastinate calls (`chimeway doctor`).
SELECT coalesce(p.proconfig, '{}') AS settings
FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = %(name)s

-- name: procrastinate_functions_missing
-- The functions Chimeway calls that a Procrastinate schema managed elsewhere lacks.
SELECT name FROM unnest(%(names)s::text[]) AS name
WHERE NOT EXISTS (SELECT FROM pg_proc p WHERE p.proname = name)
ORDER BY name
