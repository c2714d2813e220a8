"""The published JSON Schema is the pydantic models' schema, and writes refuse documents that break it."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import UserError
from pipeline.timeline import SCHEMA_PATH, json_schema, read_timeline, write_timeline


def test_published_schema_matches_the_models():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), "run `python -m pipeline.timeline` to regenerate"


def minimal() -> dict:
    return {
        "schema_version": 1,
        "video": {"path": "v.mp4", "sha256": "0" * 64, "duration": 2.0, "fps": 25.0, "width": 4, "height": 4,
                  "has_audio": True, "start_offset": 0.0},
        "model": {"checkpoint": "c", "labels": ["joy"], "threshold": 0.5, "thresholds": None,
                  "trained_modalities": ["visual"], "card": {}},
        "characters": [{"id": "C0", "name": None, "tracks": ["T0"], "screen_time": 2.0, "speaking_time": 0.0,
                        "thumbnail": None}],
        "faces": {"analysis_fps": 4.0, "embedder": "dlib-face-descriptor", "expression_labels": ["happy"],
                  "shots": [{"index": 0, "start": 0.0, "end": 2.0}],
                  "tracks": [{"id": "T0", "character": "C0", "shot": 0, "detections": [
                      {"t": 0.0, "box": [0.0, 0.0, 2.0, 2.0], "score": 0.99, "expression": [1.0]}]}]},
        "segments": [],
        "timeline": [{"character": "C0", "start": 0.0, "end": 2.0, "moment": "M0", "segment": None,
                      "role": "listener", "modalities": ["visual"], "untrained_modalities": [],
                      "probs": {"joy": 0.2}, "labels": []}],
        "provenance": {"package_version": "0", "created": "now", "config": {}, "models": {}, "device": "cpu",
                       "stages": {}, "warnings": []},
    }


def test_write_validates_and_is_atomic(tmp_path):
    path = write_timeline(minimal(), tmp_path / "t.json")
    assert read_timeline(path) == minimal()
    broken = minimal()
    broken["timeline"][0]["role"] = "narrator"
    with pytest.raises(UserError, match="role"):
        write_timeline(broken, path)
    assert read_timeline(path) == minimal(), "a refused write leaves the previous timeline"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"], "no temporary file left behind"


def test_unknown_keys_are_refused(tmp_path):
    broken = minimal()
    broken["characters"][0]["mood"] = "sunny"
    with pytest.raises(UserError):
        write_timeline(broken, tmp_path / "t.json")


def many_faces(detections: int) -> dict:
    document = minimal()
    document["faces"]["tracks"][0]["detections"] = [
        {"t": i / 4, "box": [10.5, 20.25, 110.5, 140.75], "score": 0.9931, "expression": [0.1234]}
        for i in range(detections)]
    return document


def test_write_streams_the_text(tmp_path):
    """An hour of TV is a 12 MB timeline: the write holds no copy of its text (json.dumps with an indent
    joins millions of chunks into one string, which was a 60-minute run's peak)."""
    import tracemalloc

    document = many_faces(20_000)
    tracemalloc.start()
    try:
        path = write_timeline(document, tmp_path / "t.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert size > 2_000_000
    assert peak < size / 4, f"the write held {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB of text"
    assert read_timeline(path) == document


def test_a_write_failing_midway_leaves_the_previous_timeline(tmp_path):
    path = write_timeline(minimal(), tmp_path / "t.json")
    broken = many_faces(20_000)   # a long way into the text before the value that cannot be written
    broken["timeline"][0]["probs"]["joy"] = float("nan")
    with pytest.raises(ValueError, match="JSON compliant"):
        write_timeline(broken, path)
    assert read_timeline(path) == minimal()
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"], "no half-written file left behind"
