"""Integrations with the frameworks apps already use: each hands Chimeway the psycopg
connection of the app's open transaction, or applies Chimeway's migrations in the app's
own migration history. Each module needs its framework installed (an optional extra:
``chimeway[sqlalchemy]``, ``chimeway[django]``); importing this package needs none."""
