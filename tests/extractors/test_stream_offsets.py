"""Stream start times: every time is seconds from the first video frame, and audio stays in sync.

Broadcast recordings (MPEG-TS) start hours into the container timeline, and audio often starts a little
before or after the video. PyAV writes files with chosen stream start times and one audio-visual event
(a white frame and a click at the same instant); the event must land at the same time on both sides.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from extractors.audio import SAMPLE_RATE, load_audio
from extractors.contracts import VideoInfo
from extractors.media import iter_frames, probe

FPS = 25
EVENT = 1.0        # seconds after the first video frame: white frame + click
LENGTH = 2.0       # seconds of video


def write_event_clip(path, video_start: float, audio_start: float, container_format: str | None = None,
                     audio_rate: int = 48000):
    """A 2 s 25 fps clip whose video starts at ``video_start`` and audio at ``audio_start`` (container
    timeline, seconds); frame ``EVENT * FPS`` is white and the audio clicks at the same instant."""
    frame_base = Fraction(1, FPS)
    with av.open(str(path), "w", format=container_format) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono"
        for i in range(int(LENGTH * FPS)):
            image = np.full((48, 64, 3), 255 if i == round(EVENT * FPS) else 0, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(video_start * FPS) + i, frame_base
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        signal = np.zeros(int(LENGTH * audio_rate), np.float32)          # [S] mono
        click = round((video_start + EVENT - audio_start) * audio_rate)
        signal[click: click + 48] = 0.9                                    # 1 ms click
        for first in range(0, len(signal), 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, first: first + 1024], format="flt", layout="mono")
            frame.sample_rate = audio_rate
            frame.pts, frame.time_base = round(audio_start * audio_rate) + first, Fraction(1, audio_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


CONTAINERS = [("mp4", None), ("mkv", None), ("ts", "mpegts")]
OFFSETS = [(600.0, 600.0), (600.0, 600.5), (600.0, 599.7), (0.0, 0.4)]


@pytest.mark.parametrize("extension,container_format", CONTAINERS)
@pytest.mark.parametrize("video_start,audio_start", OFFSETS)
def test_event_time_agrees_between_frames_and_audio(tmp_path, extension, container_format, video_start, audio_start):
    path = write_event_clip(tmp_path / f"clip.{extension}", video_start, audio_start, container_format)
    info = probe(path)
    # The MPEG-TS muxer delays a stream starting at 0 by its B-frame reorder delay (80 ms here).
    shift = 0.08 if extension == "ts" and video_start == 0 else 0.0
    assert info.video_start == pytest.approx(video_start + shift, abs=1e-3)
    # AAC encoders put ~21 ms of priming before the first sample; the stream start counts it.
    assert info.audio_start == pytest.approx(audio_start + shift, abs=0.03)
    # Matroska keeps no per-stream duration: its header gives the end of the file, here of whichever
    # stream ends last.
    audio_end = audio_start - video_start + LENGTH
    expected_duration = max(LENGTH, audio_end) if extension == "mkv" else LENGTH
    assert info.duration == pytest.approx(expected_duration, abs=0.05)

    frames = list(iter_frames(path, fps=None))
    times = np.array([f.t for f in frames])
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert times[-1] == pytest.approx(LENGTH - 1 / FPS, abs=1e-3)
    flash = times[int(np.argmax([f.image.mean() for f in frames]))]
    assert flash == pytest.approx(EVENT, abs=1e-3)

    audio = load_audio(path)
    click = int(np.argmax(np.abs(audio))) / SAMPLE_RATE
    assert abs(click - flash) < 1 / FPS
    # Audio that starts later is preceded by silence, audio that starts earlier is cut, so that
    # sample 0 is the first video frame and the track ends where the audio stream ends.
    assert len(audio) / SAMPLE_RATE == pytest.approx(audio_end, abs=0.03)
    lead = max(0.0, audio_start - video_start - 0.03)   # less the AAC priming
    assert not audio[: int(lead * SAMPLE_RATE)].any()


def test_spans_are_in_video_time(tmp_path):
    path = write_event_clip(tmp_path / "clip.ts", 600.0, 600.5, "mpegts")
    span = list(iter_frames(path, fps=None, start=0.8, end=1.2))
    assert [round(f.t, 3) for f in span] == [0.8, 0.84, 0.88, 0.92, 0.96, 1.0, 1.04, 1.08, 1.12, 1.16]
    assert max(span, key=lambda f: f.image.mean()).t == pytest.approx(EVENT, abs=1e-3)
    audio = load_audio(path, start=0.5, end=1.5)
    assert len(audio) == SAMPLE_RATE
    assert abs(int(np.argmax(np.abs(audio))) / SAMPLE_RATE + 0.5 - EVENT) < 1 / FPS


def test_video_info_round_trips_through_its_dict(tmp_path):
    info = probe(write_event_clip(tmp_path / "clip.mkv", 600.0, 600.5))
    data = info.serialize()
    assert data["video_start"] == pytest.approx(600.0) and data["audio_start"] == pytest.approx(600.5, abs=0.03)
    again = VideoInfo.from_dict(data)
    assert again == info and again.serialize() == data
    assert VideoInfo.from_dict({**data, "audio_start": None, "has_audio": False}).audio_start is None
