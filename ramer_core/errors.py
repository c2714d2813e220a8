"""Errors of ramer_core that a user can act on (malformed dataset file, bad checkpoint)."""

from __future__ import annotations


class RamerInputError(Exception):
    """A dataset file or checkpoint is missing or not in the expected layout; the message says which."""
