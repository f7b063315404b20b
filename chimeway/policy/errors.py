"""Errors of the policy core (the classes live in :mod:`chimeway.errors`)."""

from chimeway.errors import InvalidToken, TokenExpired

__all__ = ["InvalidToken", "TokenExpired"]
