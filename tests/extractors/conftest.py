"""Fixtures for the extractor tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Two threads on two cores shared with other jobs slow MTCNN tenfold (OpenMP spinning); one is robust.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def extractor():
    """The visual extractor with default settings, loaded once (MTCNN, dlib, expression model)."""
    from extractors.visual_features import VisualExtractor

    return VisualExtractor()
