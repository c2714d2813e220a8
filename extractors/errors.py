"""Errors of the extractor stages that a user can act on (bad input, missing model).

The CLI turns any of these into a one-line message and a non-zero exit.
"""

from __future__ import annotations


class ExtractorError(Exception):
    """Base class: the message says what is wrong and what to do."""


class MediaError(ExtractorError):
    """A file is missing, unreadable, corrupt or not the media it should be."""


class ModelNotFoundError(ExtractorError):
    """No copy of a model was found at the configured path, in the cache or in a package."""
