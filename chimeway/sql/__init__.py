"""SQL shipped with the package: numbered migrations, named queries, the schema snapshot."""
