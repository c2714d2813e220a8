"""The speaking stage's mouth measurement in several threads: the same series as one thread, in time order,
and an interruption drops the windows not yet started (real interview tracks and the real face mesh)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from extractors.active_speaker import ActiveSpeakerDetector
from extractors.contracts import SpeechSegment
from extractors.visual_features import VisualResult
from pipeline.run import STAGE_FOLDER


@pytest.fixture(scope="module")
def tracks(interview_run):
    _, out = interview_run
    document = json.loads((out / STAGE_FOLDER / "visual.json").read_text())
    with np.load(out / STAGE_FOLDER / "visual.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    return VisualResult.from_dict(document["data"], arrays).tracks


# Four windows apart from each other (context 0.4 s each side), so two threads share them out.
SEGMENTS = [SpeechSegment(id=f"s{i}", start=start, end=start + 1.2, text="x", words=[])
            for i, start in enumerate((0.5, 4.0, 8.0, 12.0))]


def test_two_workers_give_the_series_of_one(tracks, media_dir):
    video = media_dir / "visualvoice_interview.mp4"
    one = ActiveSpeakerDetector(workers=1).mouth_samples(video, tracks, SEGMENTS).by_segment(SEGMENTS, 0.4, 20)
    two = ActiveSpeakerDetector(workers=2).mouth_samples(video, tracks, SEGMENTS).by_segment(SEGMENTS, 0.4, 20)
    assert one[0].keys() == two[0].keys() == {s.id for s in SEGMENTS}
    for segment_id, times in one[0].items():
        np.testing.assert_array_equal(times, two[0][segment_id])
        assert np.all(np.diff(times) > 0)
    assert one[1].keys() == two[1].keys() and len(one[1]) == 2 * len(SEGMENTS)   # host and guest each time
    for key, series in one[1].items():
        np.testing.assert_allclose(series, two[1][key], rtol=1e-5, equal_nan=True)


def test_an_interruption_drops_the_windows_not_started(tracks, media_dir):
    detector = ActiveSpeakerDetector(workers=2)
    measured = []

    def counting(meter):
        def measure(image, faces):
            measured.append(1)
            return meter(image, faces)
        return measure

    detector._meters = [counting(detector.mouth_meter), counting(detector._new_meter())]   # one mesh per thread

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    many = [SpeechSegment(id=f"m{i}", start=0.5 + 2.0 * i, end=1.0 + 2.0 * i, text="x", words=[]) for i in range(8)]
    with pytest.raises(Stop):
        detector.mouth_samples(media_dir / "visualvoice_interview.mp4", tracks, many, progress=stop)
    frames_per_window = 1.3 * 25   # 0.5 s + 2 x 0.4 s context at 25 frames/s
    assert 0 < len(measured) <= 3 * frames_per_window + 2, len(measured)   # at most the first windows ran

