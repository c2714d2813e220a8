"""Audio decoding: real files, spans, a video without sound, and bad files."""

from __future__ import annotations

import logging
import tracemalloc

import av
import numpy as np
import pytest

from extractors.audio import SAMPLE_RATE, has_audio_stream, load_audio
from extractors.errors import MediaError


def make_video_without_audio(path, seconds: float = 1.0, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((48, 64, 3), i * 20 % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_flac_decodes_to_16k_mono_float32(media_dir):
    audio = load_audio(media_dir / "jfk.flac")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 176000  # 11.0 s at 16 kHz
    assert 0.15 < float(np.sqrt(np.mean(audio**2))) < 0.25
    assert np.abs(audio).max() <= 1.0


def test_span_matches_slice_of_full_decode(media_dir):
    full = load_audio(media_dir / "jfk.flac")
    span = load_audio(media_dir / "jfk.flac", start=2.0, end=5.0)
    assert len(span) == 3 * SAMPLE_RATE
    np.testing.assert_allclose(span, full[2 * SAMPLE_RATE: 5 * SAMPLE_RATE], atol=1e-4)


def test_audio_track_of_a_video_is_resampled(media_dir):
    audio = load_audio(media_dir / "visualvoice_interview.mp4")
    assert abs(len(audio) / SAMPLE_RATE - 17.6) < 0.2
    assert has_audio_stream(media_dir / "visualvoice_interview.mp4")


def write_flac(path, signal: np.ndarray):
    """``signal`` (16 kHz mono float32) as a FLAC file at ``path``; returns the path."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        for first in range(0, len(signal), 4096):
            frame = av.AudioFrame.from_ndarray(signal[None, first: first + 4096], format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_without_audio_is_silent_with_a_warning(tmp_path, caplog):
    video = tmp_path / "silent.mp4"
    make_video_without_audio(video)
    assert not has_audio_stream(video)
    with caplog.at_level(logging.WARNING, logger="extractors.audio"):
        audio = load_audio(video)
    assert audio.shape == (0,) and audio.dtype == np.float32
    assert "has no audio stream" in caplog.text


def test_strict_load_of_video_without_audio_raises(tmp_path):
    video = tmp_path / "silent.mp4"
    make_video_without_audio(video)
    with pytest.raises(MediaError, match=r"silent\.mp4 has no audio stream"):
        load_audio(video, require_audio=True)


def test_missing_and_corrupt_files_raise_media_error(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="corrupt"):
        load_audio(corrupt)


def _write_noisy_clip(path, seconds: float = 4.0, options: dict | None = None) -> None:
    """Random-picture H.264 + noise AAC, so that the data is spread evenly over the file."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options or {}) as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for _ in range(int(seconds * 25)):
            image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        noise = (rng.standard_normal(int(seconds * 16000)) * 0.3).astype(np.float32)
        for first in range(0, len(noise), 1024):
            frame = av.AudioFrame.from_ndarray(noise[None, first: first + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, first
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


@pytest.mark.parametrize("name,options", [("clip.mp4", {"movflags": "faststart"}), ("clip.mkv", None)])
def test_a_truncated_file_gives_what_is_there_and_warns(tmp_path, caplog, name, options):
    whole = tmp_path / name
    _write_noisy_clip(whole, options=options)   # mp4 with its header first, else a cut one cannot be opened
    with caplog.at_level(logging.WARNING, logger="extractors.audio"):
        assert len(load_audio(whole)) / SAMPLE_RATE == pytest.approx(4.0, abs=0.1)
    assert "truncated" not in caplog.text
    data = whole.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="extractors.audio"):
        audio = load_audio(cut)
    assert 0.5 < len(audio) / SAMPLE_RATE < 3.5
    assert "looks truncated" in caplog.text and cut.name in caplog.text


def test_decoding_holds_one_copy_of_the_signal(tmp_path, media_dir):
    # An hour at 16 kHz is 230 MB; decoded chunks joined, padded and clipped held three or four copies.
    speech = load_audio(media_dir / "jfk.flac")
    path = write_flac(tmp_path / "long.flac", np.tile(speech, 11))   # 121 s
    tracemalloc.start()   # numpy reports its buffers to tracemalloc
    try:
        audio = load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(audio) == 11 * len(speech)                           # 121 s, 7.7 MB
    assert peak < 1.3 * audio.nbytes, peak / audio.nbytes
