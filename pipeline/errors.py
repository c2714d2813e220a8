"""Errors a user can act on: the CLI prints their message and exits non-zero, no traceback."""

from __future__ import annotations

from extractors.errors import ExtractorError
from ramer_core.errors import RamerInputError


class UserError(Exception):
    """Bad arguments, unwritable output: anything the user can fix."""


# Every exception class whose message is meant for the user.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, ExtractorError, RamerInputError)
