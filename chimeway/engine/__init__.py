"""The engine: Chimeway's services (design §2).

Each service takes an :class:`~chimeway.engine.context.Engine` (the resources and settings)
and, where it joins a transaction, the connection; none imports ``chimeway.app``. SQL runs in
``chimeway.store`` only. ``planning`` is the one place a delivery is planned.
"""
