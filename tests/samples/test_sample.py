"""samples/two_people.mp4: the committed clip decodes as its ground truth says, the ground truth describes a
turn-taking two-party scene, the project's visual stage finds its two characters, and the script that made
it reproduces it byte for byte (where espeak-ng is installed)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from extractors.audio import SAMPLE_RATE, load_audio
from extractors.media import iter_frames, probe

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CLIP = SAMPLES / "two_people.mp4"
LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((SAMPLES / "two_people.json").read_text())


def test_clip_is_small_and_is_the_one_its_ground_truth_describes(truth):
    assert CLIP.stat().st_size < 2_000_000
    assert hashlib.sha256(CLIP.read_bytes()).hexdigest() == truth["video"]["sha256"]


def test_clip_decodes_with_the_described_video_and_audio(truth):
    import av

    info = probe(CLIP)
    video = truth["video"]
    assert (info.width, info.height) == (video["width"], video["height"]) == (640, 360)
    assert info.fps == pytest.approx(video["fps"]) and video["fps"] == 25
    assert info.duration == pytest.approx(video["duration"], abs=0.05)
    assert 10.0 <= video["duration"] <= 20.0
    with av.open(str(CLIP)) as container:
        assert sum(1 for _ in container.decode(video=0)) == video["frames"]
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert stream.rate == video["audio_sample_rate"] >= 16000
    audio = load_audio(CLIP)
    assert len(audio) / SAMPLE_RATE == pytest.approx(video["duration"], abs=0.1)


def test_speech_is_where_the_turns_say(truth):
    """The sound track is loud inside every turn and silent in the pauses between them."""
    audio = load_audio(CLIP)

    def rms(start: float, end: float) -> float:
        span = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        return float(np.sqrt(np.mean(span.astype(np.float64) ** 2)))

    turns = truth["turns"]
    for turn in turns:
        assert rms(turn["start"], turn["end"]) > 0.03, turn
    gaps = [(0.0, turns[0]["start"])] + [(a["end"], b["start"]) for a, b in pairwise(turns)]
    gaps.append((turns[-1]["end"], truth["video"]["duration"]))
    for start, end in gaps:
        assert rms(start + 0.05, end - 0.05) < 0.003, (start, end)


def test_ground_truth_is_a_turn_taking_two_party_scene(truth):
    names = [c["name"] for c in truth["characters"]]
    assert names == ["astronaut", "grace_hopper"]
    assert len({c["voice"] for c in truth["characters"]}) == 2
    turns = truth["turns"]
    assert len(turns) >= 4
    for turn in turns:
        assert turn["speaker"] in names and turn["text"] and turn["emotion"] in LABELS
        assert 0.0 <= turn["start"] < turn["end"] <= truth["video"]["duration"]
    for before, after in pairwise(turns):
        assert before["speaker"] != after["speaker"]           # they take turns
        assert after["start"] - before["end"] >= 0.5            # with a pause between
    for name in names:   # each character shows more than one emotion
        assert len({t["emotion"] for t in turns if t["speaker"] == name}) >= 2


def test_layout_covers_the_clip_shows_the_listener_and_has_a_close_up(truth):
    layout = truth["layout"]
    duration = truth["video"]["duration"]
    assert layout[0]["start"] == 0.0 and layout[-1]["end"] == pytest.approx(duration)
    for before, after in pairwise(layout):
        assert before["end"] == after["start"] and before["shot"] != after["shot"]
    for turn in truth["turns"]:
        span = next(s for s in layout if s["start"] <= turn["start"] < s["end"])
        assert turn["end"] <= span["end"], "cuts fall in pauses, not inside a line"
        visible = [v["character"] for v in span["visible"]]
        assert turn["speaker"] in visible
        if span["shot"] == "close-up":
            assert visible == [turn["speaker"]]
        else:
            assert len(visible) == 2   # the listener is on screen too
    two_shot_time = sum(s["end"] - s["start"] for s in layout if s["shot"] == "two-shot")
    assert two_shot_time > duration / 2
    assert any(s["shot"] == "close-up" for s in layout)


def test_each_mouth_moves_only_with_its_own_speech(truth):
    fps = truth["video"]["fps"]
    for name, opening in truth["mouth_opening"].items():
        opening = np.asarray(opening)
        assert len(opening) == truth["video"]["frames"]
        own = np.zeros(len(opening), dtype=bool)
        for turn in truth["turns"]:
            if turn["speaker"] == name:
                own[int((turn["start"] - 0.1) * fps) : int((turn["end"] + 0.1) * fps) + 1] = True
        assert np.all(opening[~own] == 0.0), name
        assert np.mean(opening[own] > 0.2) > 0.4, name   # open for much of its own lines


@pytest.mark.slow
def test_visual_stage_finds_the_two_characters_and_the_cuts(truth):
    """The project's own visual extractor (at 2 frames/s to stay cheap): 2 characters, faces in the frames."""
    from extractors.visual_features import VisualConfig, extract_visual

    result = extract_visual(CLIP, VisualConfig(analysis_fps=2.0, torch_threads=1))
    assert len(result.characters) == 2
    cuts = [s["start"] for s in truth["layout"][1:]]
    starts = [shot.start for shot in result.shots[1:]]
    assert len(starts) == len(cuts)
    for cut, start in zip(cuts, starts, strict=True):
        assert cut <= start <= cut + 0.5 + 1e-6          # the first analysed frame after the cut
    faces_per_frame: dict[int, int] = {}        # frame index -> faces found in it
    fps = truth["video"]["fps"]
    for track in result.tracks:
        for detection in track.detections:
            index = round(detection.t * fps)
            faces_per_frame[index] = faces_per_frame.get(index, 0) + 1
    # Every analysed frame (the same sampling as the stage's) should show every face the layout puts on screen.
    expected = {}
    for frame in iter_frames(CLIP, 2.0):
        index = round(frame.t * fps)
        span = next(s for s in truth["layout"] if s["start"] <= index / fps < s["end"])
        expected[index] = len(span["visible"])
    matching = sum(faces_per_frame.get(index, 0) == n for index, n in expected.items())
    assert len(expected) == result.frames_analysed
    assert matching >= 0.9 * len(expected), (matching, len(expected))
    # The close-up's face is the same character as one of the two-shot's faces (identity across the cut).
    close_up = next(s for s in truth["layout"] if s["shot"] == "close-up")
    of_track = result.character_of_track()
    inside = {of_track[t.id] for t in result.tracks if close_up["start"] <= t.start < close_up["end"]}
    assert len(inside) == 1


@pytest.mark.slow
def test_make_sample_reproduces_the_committed_clip(truth, tmp_path):
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng); it is needed only to regenerate")
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image is not installed (the dev extra)")
    import av
    import cv2

    version = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    made_by = truth["made_by"]
    if f": {made_by['espeak_ng']} " not in version or av.__version__ != made_by["pyav"] \
            or cv2.__version__ != made_by["opencv"]:
        pytest.skip(f"byte-identical output needs espeak-ng {made_by['espeak_ng']}, PyAV {made_by['pyav']}, "
                    f"OpenCV {made_by['opencv']}; here: {version.strip()}, {av.__version__}, {cv2.__version__}")
    subprocess.run([sys.executable, str(SAMPLES / "make_sample.py"), "--out-dir", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    made = hashlib.sha256((tmp_path / "two_people.mp4").read_bytes()).hexdigest()
    assert made == truth["video"]["sha256"], "make_sample.py no longer makes the committed clip"
    assert json.loads((tmp_path / "two_people.json").read_text()) == truth
