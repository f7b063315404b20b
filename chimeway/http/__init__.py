"""The ASGI application behind ``chimeway serve`` and ``cw.asgi()`` (design §14): provider
webhooks, health and metrics, over one :class:`~chimeway.engine.context.Engine`."""

from chimeway.http.app import build

__all__ = ["build"]
