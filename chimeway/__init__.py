"""Chimeway: a Postgres-native notification workflow engine with no broker."""

from chimeway.errors import ChimewayError

__all__ = ["ChimewayError"]
