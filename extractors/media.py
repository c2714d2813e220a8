"""Video probing and streaming frame decoding at an analysis sampling rate.

Frames are decoded one at a time with PyAV (never the whole video in memory). Each sampled frame carries
its exact presentation time (``pts * time_base``), so variable-frame-rate video gives true times, and the
rotation stored in the container's display matrix is applied so images are upright.

Every time this module returns is seconds from the first frame of the video stream, not from the
container's zero: broadcast recordings (MPEG-TS) start hours into their timeline, and audio may start
before or after the video. :func:`timeline_origin` is that zero; :mod:`extractors.audio` aligns the
sound track to it, and :class:`VideoInfo` records each stream's own start.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from extractors.contracts import VideoInfo
from extractors.errors import MediaError

log = logging.getLogger(__name__)

DEFAULT_ANALYSIS_FPS = 4.0  # frames per second looked at by the visual stages


@dataclass
class Frame:
    index: int          # 0-based count of decoded frames; after a seek (start > 0) it counts from the keyframe
                        # the seek landed on, so use ``t``, not ``index``, to place a frame in the video
    t: float            # presentation time in seconds from the first frame of the video
    image: np.ndarray   # [H, W, 3] uint8 RGB, upright (rotation applied)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file; check the path")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise MediaError(
            f"{path}: cannot be read as media ({error}); it is truncated, corrupt or not a video: "
            "re-download it or re-encode it (e.g. ffmpeg -i in.mkv out.mp4)"
        ) from None


def _video_stream(container, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: has no video stream; give a video file (mp4, mkv, ...)")
    return container.streams.video[0]


def _stream_rotation(stream) -> int:
    """Clockwise degrees to apply so the picture is upright, from the stream's display matrix (0 if none)."""
    rotate = stream.metadata.get("rotate") if stream.metadata else None
    if rotate is not None:
        try:
            return int(rotate) % 360
        except ValueError:
            return 0
    return 0


def _clockwise_from_display(display_rotation: float) -> int:
    # The display matrix stores a counter-clockwise angle; FFmpeg's autorotate turns the picture back by it.
    return int(round(-display_rotation / 90.0)) * 90 % 360


def _stream_start(stream) -> float | None:
    """Start of ``stream`` in the container timeline (seconds), None when the container does not say."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def timeline_origin(container) -> float:
    """The container time (seconds) that every returned time counts from: the start of the first video
    stream, else of the first audio stream (an audio-only file), else 0."""
    for streams in (container.streams.video, container.streams.audio):
        if streams and (start := _stream_start(streams[0])) is not None:
            return start
    return 0.0


def header_end(container, stream=None) -> float | None:
    """Where the header says ``stream`` (default: the whole file) ends, in container seconds; None if unknown.

    A stream's own duration counts from its start. Matroska has no per-stream duration: its Segment
    Duration counts from the container's zero (timestamps are relative to the segment), while other
    containers' durations count from their first timestamp.
    """
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return (_stream_start(stream) or 0.0) + float(stream.duration * stream.time_base)
    if container.duration is None:
        return None
    duration = container.duration / av.time_base
    if "matroska" in container.format.name:
        return duration
    return (container.start_time or 0) / av.time_base + duration


def probe(path: str | os.PathLike) -> VideoInfo:
    """Reads the container header (and the first frame, for rotation) into a :class:`VideoInfo`."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise MediaError(f"{path}: the video stream has no picture size; the file is corrupt")
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        video_start = timeline_origin(container)
        end = header_end(container, stream)
        duration = max(0.0, end - video_start) if end is not None else 0.0
        rotation = _stream_rotation(stream)
        try:  # the display matrix arrives as frame side data in FFmpeg 7
            first = next(container.decode(stream))
            rotation = _clockwise_from_display(first.rotation) or rotation
        except (StopIteration, av.error.FFmpegError):
            raise MediaError(f"{path}: no decodable video frame; the file is truncated or corrupt") from None
        if rotation in (90, 270):
            width, height = height, width
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path),
            duration=duration,
            fps=fps,
            width=int(width),
            height=int(height),
            rotation=rotation,
            has_audio=audio is not None,
            audio_sample_rate=int(audio.sample_rate) if audio is not None and audio.sample_rate else None,
            frame_count=int(stream.frames) if stream.frames else None,
            video_start=video_start,
            audio_start=_stream_start(audio) if audio is not None else None,
        )
    finally:
        container.close()


def _upright(image: np.ndarray, clockwise: int) -> np.ndarray:
    if clockwise == 0:
        return np.ascontiguousarray(image)  # rows may be padded by FFmpeg; dlib and cv2 want packed rows
    return np.ascontiguousarray(np.rot90(image, k=-(clockwise // 90)))


def _open_video(path, threads: int) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    container = _open(path)
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    if threads:
        stream.thread_count = threads
    return container, stream


def _landed_at_or_before(container, stream, target_pts: int) -> bool:
    """Whether the first packet after a seek is at or before ``target_pts`` (False past the end)."""
    for packet in container.demux(stream):
        if packet.pts is not None:
            return packet.pts <= target_pts
    return False


def iter_frames(
    path: str | os.PathLike,
    fps: float | None = DEFAULT_ANALYSIS_FPS,
    start: float = 0.0,
    end: float | None = None,
    threads: int = 0,
) -> Iterator[Frame]:
    """Yields upright RGB frames sampled at ``fps`` (every frame when ``fps`` is None).

    ``t``, ``start`` and ``end`` are seconds from the first frame of the video (see :func:`timeline_origin`).
    Sampling follows presentation times: the first frame at or after each tick ``start + k / fps`` is
    yielded once, so variable frame rates and dropped frames give correct times. Only sampled frames are
    converted to RGB. ``threads`` = 0 lets FFmpeg choose; a truncated file ends the stream with a warning
    after the last decodable frame, and an unreadable one raises :class:`MediaError`.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive or None, got {fps}")
    container, stream = _open_video(path, threads)
    period = None if fps is None else 1.0 / fps
    next_tick = start
    half_frame = 0.5 / float(stream.average_rate) if stream.average_rate else 0.0
    # A frame within half a frame before the tick counts as on the tick (timestamps are rounded).
    tolerance = min(half_frame, 0.5 * period) if period else 0.0
    time_base = stream.time_base or Fraction(1, 1)
    origin = timeline_origin(container)
    # The origin in exact stream units, so that a frame at 600.8 s is 0.8 s, not 0.79999...
    exact_origin = stream.start_time * time_base if stream.start_time is not None else Fraction(origin)
    expected_end = header_end(container, stream)   # read now: the container is closed after decoding
    yielded = 0
    index = -1
    last_t = None
    finished = False
    try:
        if start > 0:
            target = int((origin + start) / time_base)
            container.seek(target, stream=stream, backward=True)
            if _landed_at_or_before(container, stream, target):
                container.seek(target, stream=stream, backward=True)   # again: the check used up a packet
            else:
                # MPEG-TS seeks to an estimated byte position and can land after the span or past the end
                # (one keyframe in a long GOP); decoding from the top is slower but right.
                container.close()
                container, stream = _open_video(path, threads)
        for frame in container.decode(stream):
            index += 1
            if frame.pts is None:
                continue
            t = float(frame.pts * time_base - exact_origin)
            last_t = t
            if t < start - tolerance:
                continue
            if end is not None and t >= end:
                break
            if period is not None:
                if t < next_tick - tolerance:
                    continue
                next_tick = start + (math.floor((t + tolerance - start) / period) + 1) * period
            image = frame.to_ndarray(format="rgb24")
            yield Frame(index=index, t=t, image=_upright(image, _clockwise_from_display(frame.rotation)))
            yielded += 1
        else:
            finished = True
    except av.error.FFmpegError as error:
        if yielded == 0:
            raise MediaError(f"{path}: cannot decode video ({error}); the file is truncated or corrupt") from None
        log.warning("%s: decoding stopped after %.2f s (%s); the file looks truncated", path, last_t or 0.0, error)
    finally:
        container.close()
    if yielded == 0 and index < 0:
        raise MediaError(f"{path}: no decodable video frame; the file is truncated or corrupt")
    if finished and last_t is not None and expected_end is not None:
        expected = expected_end - origin
        if last_t < expected - max(1.0, 4 * half_frame):
            log.warning("%s: video data ends at %.2f s but the header says %.2f s; the file looks truncated",
                        path, last_t, expected)
