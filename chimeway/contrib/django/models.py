"""No models: Chimeway's tables are its own (``chimeway_*``), created by its SQL
migrations. This module exists because Django sends ``post_migrate`` only to apps that
have one, and the app applies newer Chimeway migrations then (apps.py)."""
