"""The store: the only modules that run SQL.

One module per named-query file (``store/deliveries.py`` runs ``sql/queries/deliveries.sql``),
each function taking the connection first so that it runs inside whatever transaction the
caller holds (a pool connection's, the app's, a test's rolled-back one), and each returning
typed rows (dataclasses), never bare tuples. ``tests/unit/test_layers.py`` keeps it that way.
"""
