"""Audio whose timestamps jump: every decoded frame is placed at its presentation time on the video's timeline.

Broadcast MPEG-TS has holes in its audio timestamps, and a stream-copied concatenation of clips has a gap
at every join. Joining the decoded samples end to end would pull all later audio earlier than its
picture (a 60-minute concatenation of the interview clip fell 36 s behind). The files here are written
with PyAV with a deliberate hole or overlap and one audio-visual event after it (a white frame and a
click at the same instant), or stream-copied from a shared clip, as benchmarks/memory.py builds its
long inputs.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
from scipy.signal import correlate

from extractors.audio import SAMPLE_RATE, load_audio
from extractors.media import iter_frames, probe

FPS = 25
LENGTH = 3.0       # seconds of video
HOLE_AT = 1.2      # seconds after the first video frame: the audio timestamps jump here ...
HOLE = 0.5         # ... by this much (no audio packets in between)
EVENT = 2.2        # seconds after the first video frame: white frame + click


def write_clip_with_hole(path, start: float = 10.0, container_format: str | None = None,
                         audio_rate: int = 48000, hole: float = HOLE):
    """A 3 s 25 fps clip (both streams starting at ``start`` container seconds) whose audio has no
    packets from ``HOLE_AT`` to ``HOLE_AT + hole``; frame ``EVENT * FPS`` is white and the audio clicks
    at the same instant."""
    with av.open(str(path), "w", format=container_format) as container:
        # Both streams before the first packet: the muxer writes its header then.
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono"
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(LENGTH * FPS)):
            image = np.full((48, 64, 3), 255 if i == round(EVENT * FPS) else 0, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(start * FPS) + i, Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        signal = np.zeros(int((LENGTH - hole) * audio_rate), np.float32)         # [S] mono, hole left out
        click = round((EVENT - hole) * audio_rate)
        signal[click: click + 48] = 0.9                                           # 1 ms click
        jump_from = round(HOLE_AT * audio_rate)
        for first in range(0, len(signal), 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, first: first + 1024], format="flt", layout="mono")
            frame.sample_rate = audio_rate
            shift = round(hole * audio_rate) if first >= jump_from else 0
            frame.pts, frame.time_base = round(start * audio_rate) + first + shift, Fraction(1, audio_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("name,container_format,start", [("clip.mp4", None, 0.0), ("clip.ts", "mpegts", 600.0)])
def test_click_after_a_hole_in_the_audio_lands_on_its_flash(tmp_path, name, container_format, start):
    path = write_clip_with_hole(tmp_path / name, start, container_format)
    frames = list(iter_frames(path, fps=None))
    flash = frames[int(np.argmax([f.image.mean() for f in frames]))].t
    assert flash == pytest.approx(EVENT, abs=1e-3)

    audio = load_audio(path)
    click = int(np.argmax(np.abs(audio))) / SAMPLE_RATE
    assert abs(click - flash) < 1 / FPS, click            # joined end to end, the click came 0.5 s early
    # The hole is silence of its own length, so the track ends with the video.
    assert len(audio) / SAMPLE_RATE == pytest.approx(probe(path).duration, abs=0.05)
    hole = audio[int((HOLE_AT + 0.05) * SAMPLE_RATE): int((HOLE_AT + HOLE - 0.05) * SAMPLE_RATE)]
    assert not hole.any()
    # Sound on both sides of the hole is kept: the encoder's noise floor is there, the click is not lost.
    assert np.abs(audio[int((EVENT - 0.01) * SAMPLE_RATE): int((EVENT + 0.01) * SAMPLE_RATE)]).max() > 0.3


def test_span_after_a_hole_is_in_video_time(tmp_path):
    path = write_clip_with_hole(tmp_path / "clip.ts", 600.0, "mpegts")
    full = load_audio(path)
    span = load_audio(path, start=2.0, end=2.5)
    assert len(span) == SAMPLE_RATE // 2
    assert abs(int(np.argmax(np.abs(span))) / SAMPLE_RATE + 2.0 - EVENT) < 1 / FPS
    np.testing.assert_allclose(span, full[2 * SAMPLE_RATE: 2 * SAMPLE_RATE + SAMPLE_RATE // 2], atol=1e-4)


def _decoded_samples(path) -> int:
    """How many 16 kHz samples the audio frames of ``path`` hold, joined end to end."""
    with av.open(str(path)) as container:
        total = sum(frame.samples / frame.sample_rate for frame in container.decode(audio=0))
    return round(total * SAMPLE_RATE)


def test_a_hole_under_the_tolerance_is_joined_over(tmp_path):
    # Timestamps a few milliseconds off (rounding, encoder jitter) are no hole: no silence is inserted
    # and the resampler runs on, so the samples stay contiguous, as they always were.
    path = write_clip_with_hole(tmp_path / "clip.mp4", 0.0, hole=0.01)
    audio = load_audio(path)
    assert abs(len(audio) - _decoded_samples(path)) < 16        # 10 ms of silence would be 160
    click = int(np.argmax(np.abs(audio))) / SAMPLE_RATE
    assert abs(click - (EVENT - 0.01)) < 1 / FPS


@pytest.mark.parametrize("name", ["visualvoice_interview.mp4", "facenet_pytorch_video.mp4", "jfk.flac"])
def test_files_without_holes_decode_as_one_resampled_run(media_dir, name):
    # The shared clips have no holes: their audio is every frame resampled in one run, behind the
    # silence that puts its first sample at its start time (the crowd clip's audio starts 10 ms late).
    with av.open(str(media_dir / name)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks, lead = [], None
        for frame in container.decode(stream):
            if lead is None:
                lead = round((frame.time - float(stream.start_time * stream.time_base)) * SAMPLE_RATE)
            chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(frame)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
        video_start = container.streams.video[0].start_time * container.streams.video[0].time_base \
            if container.streams.video else stream.start_time * stream.time_base
        lead += round(float(stream.start_time * stream.time_base - video_start) * SAMPLE_RATE)
    reference = np.clip(np.concatenate([np.zeros(lead, np.float32), *chunks]), -1, 1)
    audio = load_audio(media_dir / name)
    np.testing.assert_array_equal(audio, reference)


def _audio_only_ts(path, start: float, signal: np.ndarray, rate: int = 48000):
    """An audio-only MPEG-TS whose AAC audio (``signal``, [S] mono) starts at ``start`` container seconds."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for first in range(0, len(signal), 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, first: first + 1024], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts, frame.time_base = round(start * rate) + first, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _byte_concatenation(tmp_path, second_start: float, rate: int = 48000):
    """Two audio-only MPEG-TS files joined byte for byte (``cat a.ts b.ts``), as recordings get joined:
    a 1 s tone starting at 600 s, then 3 s of silence with a click at ``EVENT`` whose timestamps restart
    at ``second_start``. Muxers refuse timestamps that go back; joined files have them."""
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    clicked = np.zeros(int(LENGTH * rate), np.float32)
    clicked[round(EVENT * rate): round(EVENT * rate) + 48] = 0.9
    first = _audio_only_ts(tmp_path / "a.ts", 600.0, tone, rate)
    second = _audio_only_ts(tmp_path / "b.ts", second_start, clicked, rate)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    return joined


def _rms(audio: np.ndarray, start: float, stop: float) -> float:
    return float(np.sqrt(np.mean(audio[int(start * SAMPLE_RATE): int(stop * SAMPLE_RATE)] ** 2)))


def test_audio_that_steps_back_keeps_the_sound_already_there(tmp_path):
    # The second part starts 0.3 s before the first one ends: its samples go where their times say,
    # except over the tone already there, which stays (iter_frames too keeps the earlier frame).
    joined = _byte_concatenation(tmp_path, 600.7)
    audio = load_audio(joined)
    assert len(audio) / SAMPLE_RATE == pytest.approx(0.7 + LENGTH, abs=0.05)   # end to end: 1.0 + 3.0
    click = int(np.argmax(np.abs(audio))) / SAMPLE_RATE
    assert abs(click - (0.7 + EVENT)) < 1 / FPS
    assert _rms(audio, 0.75, 0.95) > 0.3          # the tone, not the second part's silence over it
    assert _rms(audio, 1.1, 0.7 + EVENT - 0.1) < 0.01


def test_audio_whose_clock_restarts_is_placed_by_its_times_with_a_warning(tmp_path, caplog):
    # Timestamps that go back a whole part (files appended to each other): the second part's first
    # second falls on the tone and is dropped, the rest follows on at its own times, and a warning says so.
    joined = _byte_concatenation(tmp_path, 600.0)
    with caplog.at_level(logging.WARNING, logger="extractors.audio"):
        audio = load_audio(joined)
    assert "go back" in caplog.text and joined.name in caplog.text
    assert len(audio) / SAMPLE_RATE == pytest.approx(LENGTH, abs=0.05)         # end to end: 4.0
    assert _rms(audio, 0.05, 0.95) > 0.3
    click = int(np.argmax(np.abs(audio))) / SAMPLE_RATE
    assert abs(click - EVENT) < 1 / FPS


def stream_copied_concatenation(clip, copies: int, out):
    """``clip`` repeated as benchmarks/memory.py builds its 60-minute input (see edited_media)."""
    from tests.extractors.edited_media import repeat_by_stream_copy

    return out, repeat_by_stream_copy(clip, copies, out)


def test_stream_copied_concatenation_keeps_audio_as_long_as_video(tmp_path, media_dir):
    path, period = stream_copied_concatenation(media_dir / "retalking_face2.mp4", 3, tmp_path / "three.mp4")
    info = probe(path)
    assert info.duration == pytest.approx(2 * period + 5.0, abs=0.05)
    audio = load_audio(path)
    # Joined end to end the audio was 0.4 s short, and each copy's speech came 0.2 s earlier than the last.
    assert len(audio) / SAMPLE_RATE == pytest.approx(info.duration, abs=0.1)
    single = load_audio(media_dir / "retalking_face2.mp4")
    for copy in range(3):
        begin = int(round(copy * period * SAMPLE_RATE))
        part = audio[begin: begin + len(single)]
        lags = correlate(part, single, mode="full")[len(single) - 1 - SAMPLE_RATE // 2: len(single) + SAMPLE_RATE // 2]
        lag = (int(np.argmax(lags)) - SAMPLE_RATE // 2) / SAMPLE_RATE
        assert abs(lag) < 1 / FPS, (copy, lag)


def test_sound_on_each_side_of_a_hole_stays_on_its_side(tmp_path):
    # Lossless audio (no encoder smearing): a tone up to the hole, silence after it. The resampler's
    # buffered tail belongs before the hole; carried over, it would sound after it and the tone would
    # end short.
    rate, hole_end = 48000, HOLE_AT + HOLE
    path = tmp_path / "tone.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(round(HOLE_AT * rate)) / rate)).astype(np.float32)
        parts = [(0.0, tone), (hole_end, np.zeros(round(0.8 * rate), np.float32))]   # (start s, [S] samples)
        for start, samples in parts:
            for first in range(0, len(samples), 960):
                frame = av.AudioFrame.from_ndarray(samples[None, first: first + 960], format="flt", layout="mono")
                frame.sample_rate = rate
                frame.pts, frame.time_base = round(start * rate) + first, Fraction(1, rate)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    audio = load_audio(path)
    assert len(audio) == round((hole_end + 0.8) * SAMPLE_RATE)
    assert np.abs(audio[int(HOLE_AT * SAMPLE_RATE) - 8: int(HOLE_AT * SAMPLE_RATE)]).max() > 0.05
    assert not audio[int(HOLE_AT * SAMPLE_RATE) + 8:].any()
