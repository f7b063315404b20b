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

-- name: migration_unlock
SELECT pg_advisory_unlock(hashtextextended('chimeway.migrate', 0))

-- name: procrastinate_schema_present
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present

-- name: migration_record_script
-- The tracking row as a literal statement, for `chimeway migrate print` (values filled in
-- with psycopg.sql.Literal).
INSERT INTO chimeway_migrations (line, version, name, checksum)
VALUES ({line}, {version}, {name}, {checksum})
