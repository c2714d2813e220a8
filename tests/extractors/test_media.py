"""Probing and sampled decoding: exact timestamps, variable frame rate, rotation, unreadable input."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from extractors.errors import MediaError
from extractors.media import iter_frames, probe


def _write_video(path, times, size=(64, 48), rotation=None, time_base=Fraction(1, 1000)):
    """H.264 video whose frame i is shown at times[i] seconds (any spacing: variable frame rate)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, : width // 8] = 255          # white band on the left
            image[0, 0] = i                        # frame number, for reference
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_probe_reads_the_interview_header(media_dir):
    info = probe(media_dir / "visualvoice_interview.mp4")
    assert (info.width, info.height, info.rotation) == (1280, 720, 0)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(17.52, abs=0.05)
    assert info.frame_count == 438
    assert info.has_audio and info.audio_sample_rate is not None


def test_sampling_follows_presentation_times(media_dir):
    frames = list(iter_frames(media_dir / "visualvoice_interview.mp4", fps=4.0))
    times = np.array([f.t for f in frames])
    assert len(frames) == 71                       # ticks 0, 0.25, ..., 17.5 over 17.52 s
    assert times[0] == 0.0 and times[1] == pytest.approx(0.24)   # 25 fps: frame at 0.24 is within half a frame
    assert np.all(np.diff(times) > 0.2) and np.all(np.diff(times) < 0.3)
    assert frames[0].image.shape == (720, 1280, 3) and frames[0].image.dtype == np.uint8
    assert all(f.index == round(f.t * 25) for f in frames)


def test_variable_frame_rate_gives_exact_times(tmp_path):
    times = [0.0, 0.1, 0.15, 0.2, 0.9, 1.0, 1.05, 2.4, 2.5]
    path = _write_video(tmp_path / "vfr.mp4", times)
    every = list(iter_frames(path, fps=None))
    assert [f.t for f in every] == pytest.approx(times, abs=1e-3)
    sampled = [f.t for f in iter_frames(path, fps=2.0)]
    # Ticks 0, 0.5, 1.0, 1.5, 2.0, 2.5: the first frame at or after each tick, each frame at most once.
    assert sampled == pytest.approx([0.0, 0.9, 1.0, 2.4, 2.5], abs=1e-3)


def test_display_rotation_is_applied(tmp_path):
    path = _write_video(tmp_path / "rotated.mp4", [0.0, 0.04, 0.08], rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    image = next(iter_frames(path, fps=None)).image
    assert image.shape == (64, 48, 3)
    # Rotated 90 degrees counter-clockwise for display: the left band ends at the bottom.
    assert image[-6:, :, 0].mean() > 200 and image[:50, :, 0].mean() < 30


def test_missing_file_is_a_media_error(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "absent.mp4")


def test_non_video_file_is_a_media_error(tmp_path, media_dir):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match="notes.mp4"):
        probe(text)
    with pytest.raises(MediaError, match="no video stream"):
        probe(media_dir / "jfk.flac")
    with pytest.raises(MediaError):
        list(iter_frames(text))


def test_truncated_file_is_a_media_error(tmp_path, media_dir):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((media_dir / "visualvoice_interview.mp4").read_bytes()[:4096])
    with pytest.raises(MediaError, match="truncated.mp4"):
        probe(truncated)
    with pytest.raises(MediaError, match="truncated.mp4"):
        list(iter_frames(truncated))


def test_seeking_to_a_span_gives_the_same_frames_as_decoding_from_the_start(media_dir):
    path = media_dir / "visualvoice_interview.mp4"
    span = list(iter_frames(path, fps=4.0, start=5.0, end=6.0))
    assert len(span) == 4 and all(5.0 - 0.02 <= f.t < 6.0 for f in span)
    sequential = {f.t: f.image for f in iter_frames(path, fps=None, end=6.0) if f.t >= 4.9}
    for frame in span:
        np.testing.assert_array_equal(frame.image, sequential[frame.t])


def test_a_file_cut_mid_stream_yields_what_is_there_and_warns(tmp_path, caplog):
    path = tmp_path / "faststart.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:   # header first, then data
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(100):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert probe(cut).duration == pytest.approx(4.0)
    with caplog.at_level("WARNING", logger="extractors.media"):
        frames = list(iter_frames(cut, fps=None))
    assert 20 < len(frames) < 100
    assert "looks truncated" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="extractors.media"):
        assert len(list(iter_frames(path, fps=None))) == 100
    assert "truncated" not in caplog.text


def test_a_cut_matroska_file_warns_too(tmp_path, caplog):
    # Matroska keeps no per-stream duration; the segment duration in its header is what was promised.
    path = tmp_path / "whole.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(100):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with caplog.at_level("WARNING", logger="extractors.media"):
        assert len(list(iter_frames(path, fps=None))) == 100
    assert "truncated" not in caplog.text
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    assert probe(cut).duration == pytest.approx(4.0)
    with caplog.at_level("WARNING", logger="extractors.media"):
        frames = list(iter_frames(cut, fps=None))
    assert 20 < len(frames) < 100
    assert "looks truncated" in caplog.text
