"""Character thumbnails: one decoding pass in time order gives the crops a seek per character gives."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from extractors.contracts import FaceDetection, FaceTrack
from pipeline.thumbnails import write_thumbnails


def _visual(times):
    """A stand-in VisualResult: one character per time, each with one detection there (boxes differ)."""
    tracks = {f"T{i}": FaceTrack(f"T{i}", 0, [FaceDetection(t, (100.0 + 10 * i, 80.0, 260.0 + 10 * i, 260.0), 0.99,
                                                             np.zeros((5, 2), np.float32))])
              for i, t in enumerate(times)}
    characters = [SimpleNamespace(id=f"C{i}", track_ids=[f"T{i}"]) for i in range(len(times))]
    return SimpleNamespace(characters=characters, track=lambda track_id: tracks[track_id])


def test_one_pass_gives_the_crops_of_a_seek_per_face(media_dir, tmp_path):
    video = media_dir / "visualvoice_interview.mp4"
    times = [12.4, 0.52, 3.0, 3.0, 16.9, 7.76, 0.0]     # unordered, a repeated frame, the first frame
    visual = _visual(times)
    (tmp_path / "pass").mkdir()
    (tmp_path / "seek").mkdir()
    one_pass = write_thumbnails(video, visual, tmp_path / "pass", seek_gap_s=1e9)
    seeking = write_thumbnails(video, visual, tmp_path / "seek", seek_gap_s=0.0)
    assert list(one_pass) == [f"C{i}" for i in range(len(times))]      # in the characters' order
    for character_id, entry in one_pass.items():
        assert entry["file"] is not None
        assert (tmp_path / entry["file"]).read_bytes() == (tmp_path / seeking[character_id]["file"]).read_bytes()
        assert entry["t"] == seeking[character_id]["t"]
