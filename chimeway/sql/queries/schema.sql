-- Catalog queries: a canonical description of the current schema, used to check that the
-- migrations and the committed chimeway/sql/schema.sql snapshot agree (chimeway/store/schema.py).

-- name: schema_describe
SELECT kind, name, definition FROM (
    SELECT 'relation' AS kind, c.relname::text AS name,
           c.relkind::text || ': ' || string_agg(
               a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''),
               ', ' ORDER BY a.attnum) AS definition
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'c')
    GROUP BY c.relname, c.relkind
    UNION ALL
    SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = current_schema()::regnamespace AND conrelid <> 0
    UNION ALL
    SELECT 'index', indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema()
    UNION ALL
    SELECT 'enum', t.typname::text, string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = current_schema()::regnamespace GROUP BY t.typname
    UNION ALL
    SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           md5(p.prosrc) || coalesce(' SET ' || array_to_string(p.proconfig, ', '), '')
    FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace
) described
ORDER BY kind, name

-- name: schema_enum_labels
SELECT t.typname::text AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typnamespace = current_schema()::regnamespace AND t.typname LIKE 'chimeway\_%'
GROUP BY t.typname
