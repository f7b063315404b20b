"""Errors of the policy core; they join :mod:`chimeway.errors` when the package settles."""

from __future__ import annotations

from chimeway.errors import ChimewayError


class InvalidToken(ChimewayError):
    """The token is not valid: forged, tampered with, malformed, expired or for another use."""


class TokenExpired(InvalidToken):
    """The token has expired."""
