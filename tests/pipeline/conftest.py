"""Fixtures for the end-to-end pipeline tests: one runner (models load once) and the edited clips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.extractors.conftest import _one_torch_thread  # noqa: F401  (autouse: one torch thread per module)

sys.path.insert(0, str(Path(__file__).parent))  # av_clips, beside this file


@pytest.fixture(scope="session")
def runner():
    """The pipeline with the default checkpoint and configuration (the models load on first use)."""
    from pipeline.run import PipelineRunner

    return PipelineRunner(device="cpu")


@pytest.fixture(scope="session")
def interview_run(runner, media_dir, tmp_path_factory):
    """(RunResult, output folder) of one pipeline run on visualvoice_interview.mp4, shared by the run and
    render tests (read it, never change it)."""
    out = tmp_path_factory.mktemp("interview")
    return runner.run(media_dir / "visualvoice_interview.mp4", out), out


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def face1(media_dir):
    import av_clips

    return av_clips.load_source(media_dir / "retalking_face1.mp4")
