"""Fixtures shared by every test folder: where the third-party test material lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    """``../shared`` beside the checkout (CI lays it there); ``RAMER_SHARED_DIR`` overrides."""
    return Path(os.environ.get("RAMER_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "media").is_dir():
        pytest.fail(f"test material not found at {path}; clone the project beside shared/ or set RAMER_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "media"


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"
