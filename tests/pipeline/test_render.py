"""``pipeline render``: the overlay video, the lane plots and the refusals, on a real pipeline run.

The interview clip's timeline (the session's pipeline run, tests/pipeline/conftest.py) is rendered once; its
render is checked frame by frame against the source: same frames at the same times, the audio kept, and
each character's box colour on the outline of its detections (and not there in the source picture).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from extractors.audio import load_audio
from extractors.media import iter_frames
from pipeline.cli import main
from pipeline.render.colors import rgb
from pipeline.render.plots import DPI, emotion_mix, figure_width, timeline_figure
from pipeline.render.scene import Scene, TrackBoxes
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def interview(interview_run) -> Path:
    """timeline.json of the pipeline run on visualvoice_interview.mp4 (17.5 s, 1280x720, 25 fps)."""
    return interview_run[1] / "timeline.json"


@pytest.fixture(scope="module")
def rendered(interview, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render_out")
    assert main(["-q", "render", str(interview), "-o", str(out)]) == 0
    return out


def _timeline(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _video_frames(path: Path) -> list[tuple[int, float]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(frame.pts, float(frame.pts * stream.time_base)) for frame in container.decode(stream)]


def _stream_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def _source_video(timeline_path: Path) -> Path:
    return Path(_timeline(timeline_path)["video"]["path"])


def test_overlay_has_the_sources_frames_duration_and_audio(interview, rendered):
    source, overlay = _source_video(interview), rendered / "overlay.mp4"
    ours, theirs = _video_frames(overlay), _video_frames(source)
    assert len(ours) == len(theirs) == 438  # 17.52 s at 25 fps
    assert [t for _, t in ours] == pytest.approx([t for _, t in theirs], abs=1e-4)
    assert _stream_duration(overlay) == pytest.approx(_stream_duration(source), abs=1e-3)
    with av.open(str(overlay)) as container:
        assert container.streams.audio, "the overlay keeps the sound track"
        assert float(container.streams.video[0].average_rate) == pytest.approx(25.0)
    heard, original = load_audio(overlay), load_audio(source)
    assert len(heard) == pytest.approx(len(original), abs=1600)
    n = min(len(heard), len(original))
    assert np.sqrt(np.mean(original[:n] ** 2)) > 0.01, "the clip has speech"
    assert np.corrcoef(heard[:n], original[:n])[0, 1] > 0.99


def test_audio_mp4_cannot_carry_is_re_encoded(interview, media_dir, tmp_path, capsys):
    """PCM sound (a .mov straight from a camera, say) becomes AAC in the overlay, still in time."""
    from fractions import Fraction

    source = media_dir / "deep_lip_reading_demo.mp4"
    sound = load_audio(source)
    camera = tmp_path / "camera.mov"
    with av.open(str(camera), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 160, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for frame in iter_frames(source, None):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame.image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = (np.clip(sound, -1, 1) * 32767).astype(np.int16)
        for i in range(0, len(samples), 1600):
            piece = av.AudioFrame.from_ndarray(samples[None, i: i + 1600], format="s16", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = 16000, i, Fraction(1, 16000)
            for packet in audio.encode(piece):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert main(["-q", "render", str(interview), "--video", str(camera), "-o", str(out), "--force",
                 "--no-report"]) == 0, capsys.readouterr().err
    with av.open(str(out / "overlay.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    heard = load_audio(out / "overlay.mp4")
    n = min(len(heard), len(sound))
    assert n > 0.9 * len(sound)
    lag = int(np.argmax(np.correlate(heard[:n], sound[:n], mode="full"))) - (n - 1)
    assert abs(lag) < 160, f"the sound is {lag / 16:.0f} ms off"


def _outline(box: list[float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (rows, cols) on the middle half of the box's four edges, inside the frame."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    xs = np.arange(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4)
    ys = np.arange(y1 + (y2 - y1) // 4, y2 - (y2 - y1) // 4)
    rows = np.concatenate([np.full_like(xs, y1), np.full_like(xs, y2), ys, ys])
    cols = np.concatenate([xs, xs, np.full_like(ys, x1), np.full_like(ys, x2)])
    keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return rows[keep], cols[keep]


def _frames_at(path: Path, times: list[float]) -> dict[float, np.ndarray]:
    """The frames shown at ``times`` (each the frame at that time, within 10 ms), decoding the file once."""
    found: dict[float, np.ndarray] = {}
    for frame in iter_frames(path, None):
        found.update({t: frame.image.astype(int) for t in times if abs(frame.t - t) < 0.01})
    assert sorted(found) == sorted(times)
    return found


def test_overlay_draws_each_characters_box_on_its_detections(interview, rendered):
    timeline = _timeline(interview)
    colors = {c.id: np.array(rgb(c.color)) for c in Scene(timeline).characters.values()}
    checks = [(track["character"], detection) for track in timeline["faces"]["tracks"] if track["character"]
              for detection in track["detections"][1:-1:4]]
    assert len({character for character, _ in checks}) == 2, "both people of the interview have tracks"
    times = sorted({detection["t"] for _, detection in checks})
    drawn, plain = _frames_at(rendered / "overlay.mp4", times), _frames_at(_source_video(interview), times)
    for character, detection in checks:
        t = detection["t"]
        rows, cols = _outline(detection["box"], drawn[t].shape[1], drawn[t].shape[0])
        on_box = [np.abs(image[rows, cols] - colors[character]).max(axis=1) < 60 for image in (drawn[t], plain[t])]
        assert on_box[0].mean() > 0.9, (character, t)
        assert on_box[1].mean() < 0.1, "the source has no such colour there: the box is ours"


def test_timeline_png_has_one_lane_per_character(interview, rendered):
    timeline = _timeline(interview)
    plot = timeline_figure(timeline, interview.parent)
    assert list(plot.lanes) == [c["id"] for c in timeline["characters"]]
    assert len(plot.lanes) == 2, "two people in the interview"
    lane_labels = [ax.get_yticklabels()[-1].get_text() for ax in plot.lanes.values()]
    assert lane_labels == ["speech"] * 2
    with Image.open(rendered / "timeline.png") as image:
        assert image.width == round(figure_width(timeline["video"]["duration"]) * DPI)
        assert image.height == round(plot.figure.get_figheight() * DPI)
    with Image.open(rendered / "emotion_mix.png") as image:
        assert image.width > 600 and image.height > 200


def test_emotion_mix_is_time_weighted():
    labels = ["joy", "anger"]
    entry = {"character": "C0", "moment": "M0", "segment": None, "role": "listener", "modalities": ["visual"],
             "untrained_modalities": []}
    timeline = {"model": {"labels": labels}, "characters": [{"id": "C0"}], "timeline": [
        {**entry, "start": 0.0, "end": 3.0, "probs": {"joy": 0.9, "anger": 0.1}, "labels": ["joy"]},
        {**entry, "start": 3.0, "end": 4.0, "probs": {"joy": 0.1, "anger": 0.5}, "labels": ["anger"]}]}
    mix = emotion_mix(timeline)["C0"]
    assert mix["joy"] == pytest.approx(((0.9 * 3 + 0.1) / 4, 0.75))     # (mean probability, share labelled)
    assert mix["anger"] == pytest.approx(((0.3 + 0.5) / 4, 0.25))


def test_boxes_interpolate_within_a_track_and_stop_at_gaps():
    track = TrackBoxes("T0", "C0", 0, np.array([0.0, 0.25, 1.5]),
                       np.array([[0, 0, 10, 10], [10, 0, 20, 10], [50, 0, 60, 10]], float))
    step, hold = 1.5 * 0.25, 0.125
    assert track.box_at(0.125, step, hold) == pytest.approx((5, 0, 15, 10))    # halfway between analysed frames
    assert track.box_at(0.3, step, hold) == pytest.approx((10, 0, 20, 10))     # held just after
    assert track.box_at(0.9, step, hold) is None                               # a gap is not bridged
    assert track.box_at(1.45, step, hold) == pytest.approx((50, 0, 60, 10))
    assert track.box_at(1.7, step, hold) is None and track.box_at(-0.2, step, hold) is None


def test_cut_is_found_between_two_shots_analysed_frames():
    """The bundled sample's cuts are at 8.12 s and 12.94 s (samples/two_people.json); the analysis saw the
    shots change between frames 0.24 s apart, and the overlay puts the change on the right frame."""
    from pipeline.render.overlay import ShotClock

    truth = json.loads((REPO_ROOT / "samples" / "two_people.json").read_text())["layout"]
    cuts = [span["start"] for span in truth[1:]]
    assert cuts == [8.12, 12.94]
    scene = Scene({"faces": {"analysis_fps": 4.0, "shots": [{"index": 0, "start": 0.0, "end": 8.0},
                                                         {"index": 1, "start": 8.24, "end": 12.76},
                                                         {"index": 2, "start": 13.0, "end": 17.24}],
                             "tracks": []},
                   "model": {"labels": []}, "characters": [], "segments": [], "timeline": []})
    clock = ShotClock(scene, fps=25.0)
    shots = []
    for frame in iter_frames(REPO_ROOT / "samples" / "two_people.mp4", None, start=7.6, end=13.4):
        shots += [(t, shot) for t, _, _, shot in clock.push(frame.t, frame.image, 0)]
    shots += [(t, shot) for t, _, _, shot in clock.flush()]
    first = {shot: min(t for t, s in shots if s == shot) for shot in (1, 2)}
    assert first[1] == pytest.approx(8.12, abs=0.005)
    assert first[2] == pytest.approx(12.96, abs=0.005)   # the first frame at or after 12.94 s


def _refused(capsys, code: int, phrase: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert phrase in err, err


def test_another_video_is_refused_or_forced(interview, media_dir, tmp_path, capsys):
    other = media_dir / "deep_lip_reading_demo.mp4"
    out = tmp_path / "out"
    _refused(capsys, main(["-q", "render", str(interview), "--video", str(other), "-o", str(out)]),
             "is not the video this timeline was made from")
    assert not out.exists(), "a refused render writes nothing"
    code = main(["-q", "render", str(interview), "--video", str(other), "-o", str(out), "--force", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "WARNING" in err and "--force" in err
    assert len(_video_frames(out / "overlay.mp4")) == len(_video_frames(other))
    assert (out / "timeline.png").is_file()


def test_missing_video_is_an_error_only_when_given(interview, tmp_path, capsys):
    _refused(capsys, main(["-q", "render", str(interview), "--video", str(tmp_path / "nope.mp4"),
                           "-o", str(tmp_path / "a")]), "no such file")
    moved = tmp_path / "elsewhere" / "timeline.json"
    moved.parent.mkdir()
    document = _timeline(interview)
    document["video"]["path"] = "gone.mp4"
    moved.write_text(json.dumps(document))
    assert main(["-q", "render", str(moved), "-o", str(tmp_path / "b"), "--no-report"]) == 0
    assert "not found" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["emotion_mix.png", "timeline.png"]


def test_bad_timeline_is_refused(interview, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text(interview.read_text()[:500])
    _refused(capsys, main(["-q", "render", str(broken), "-o", str(tmp_path / "a")]), "not a readable JSON")
    invalid = tmp_path / "invalid.json"
    document = _timeline(interview)
    del document["faces"]
    invalid.write_text(json.dumps(document))
    _refused(capsys, main(["-q", "render", str(invalid), "-o", str(tmp_path / "b")]), "does not follow")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unwritable_output_is_refused(interview, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _refused(capsys, main(["-q", "render", str(interview), "-o", str(blocker / "out")]), "cannot write to")
    assert blocker.read_text() == "not a folder"


def test_no_half_written_files_on_failure(interview, tmp_path, monkeypatch):
    """A render that fails mid-video leaves no overlay and no temporary file beside the finished plots."""
    from pipeline.render import overlay

    def broken(*args, **kwargs):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(overlay.Painter, "paint", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        main(["-q", "render", str(interview), "-o", str(out), "--no-report"])
    assert sorted(p.name for p in out.iterdir()) == ["emotion_mix.png", "timeline.png"]


def test_the_readme_picture_is_small():
    picture = REPO_ROOT / "docs" / "images" / "timeline.png"
    assert picture.stat().st_size < 300_000
    with Image.open(picture) as image:
        assert image.width >= 800
