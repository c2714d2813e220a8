"""Audio from any media file (video or audio) as 16 kHz mono float32, decoded with PyAV.

Every audio stage downstream (voice activity, speech recognition, diarization, acoustic features)
takes this array, so the file is decoded once. A video without an audio stream is a normal case
(silent footage): `load_audio` logs a warning and returns an empty array, which every stage turns
into "no speech". Callers that cannot do without audio use `load_audio(..., require_audio=True)`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

from extractors.errors import MediaError
from extractors.media import header_end, timeline_origin

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; what whisper, silero-vad and resemblyzer all expect


def has_audio_stream(path: str | Path) -> bool:
    """True when the container holds at least one audio stream."""
    with _open(path) as container:
        return len(container.streams.audio) > 0


def load_audio(
    path: str | Path,
    *,
    sample_rate: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
    require_audio: bool = False,
) -> np.ndarray:
    """Decodes the first audio stream of `path` to mono float32 in [-1, 1] at `sample_rate`.

    Sample 0 is the first frame of the video (see :func:`extractors.media.timeline_origin`; for an
    audio file, the start of the audio): audio that starts later is preceded by silence, audio that
    starts earlier is cut, so sample times and frame times agree. `start`/`end` (seconds, same
    timeline) cut a span; the returned array starts at `start`. A file without an audio stream gives
    an empty array and a warning, or MediaError when `require_audio` is set. A file that ends before
    its header says (truncated) gives what is there and a warning. Missing, unreadable or corrupt
    files raise MediaError.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            message = f"{path} has no audio stream"
            if require_audio:
                raise MediaError(f"{message}; use a file with a sound track")
            log.warning("%s: treating it as silent (no speech, no acoustic features)", message)
            return np.zeros(0, dtype=np.float32)
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        origin = timeline_origin(container)
        span_start = start or 0.0
        header = header_end(container, stream)
        expected_end = None if header is None else header - origin       # seconds from the origin
        known_end = min(e for e in (end, expected_end, float("inf")) if e is not None)
        output = _Output(sample_rate * (known_end - span_start + 2.0) if np.isfinite(known_end) else 0)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        position: int | None = None   # output index of the next resampled sample
        stopped_early = False
        try:
            # No seeking for `start`: the resampler's sample grid would then depend on where the
            # seek landed, and a span would differ from the same slice of the full decode.
            # Decoding compressed audio runs at several hundred times real time.
            for frame in container.decode(stream):
                if position is None:
                    first_time = float(frame.time) if frame.time is not None else origin
                    position = int(round((first_time - origin - span_start) * sample_rate))
                for resampled in resampler.resample(frame):
                    position = output.put(position, resampled.to_ndarray().reshape(-1))
                if end is not None and frame.time is not None and frame.time - origin > end:
                    stopped_early = True
                    break
        except (av.error.FFmpegError, ValueError) as error:
            if position is None:
                raise MediaError(f"cannot decode the audio of {path}: {error}; the file may be corrupt") from error
            stopped_early = True
            log.warning("%s: audio decoding stopped after %.2f s (%s); the file looks truncated",
                        path, span_start + position / sample_rate, error)
        if position is not None:
            for resampled in resampler.resample(None):  # flush the resampler's buffer
                position = output.put(position, resampled.to_ndarray().reshape(-1))
    length = max(0, position or 0)
    if end is not None:
        length = min(length, max(0, int(round((end - span_start) * sample_rate))))
    decoded_end = span_start + (position or 0) / sample_rate
    if not stopped_early and expected_end is not None and decoded_end < expected_end - 1.0:
        log.warning("%s: audio data ends at %.2f s but the header says %.2f s; the file looks truncated",
                    path, decoded_end, expected_end)
    return output.result(length)


class _Output:
    """The decoded signal, written in place into one buffer sized from the header.

    A list of decoded chunks joined at the end, then padded and clipped, held three or four copies of
    the signal at once (an hour at 16 kHz is 230 MB per copy); this holds one. The buffer is
    zero-filled lazily by the OS, so leading silence and unused headroom cost no memory.
    """

    def __init__(self, capacity: float):
        self.buffer = np.zeros(max(int(capacity), SAMPLE_RATE), np.float32)

    def put(self, position: int, samples: np.ndarray) -> int:
        """Writes ``samples`` at ``position`` (indices below 0 fall before the span and are dropped)."""
        stop = position + len(samples)
        if stop > len(self.buffer):   # the header under-stated the length: grow by half
            grown = np.zeros(max(stop, len(self.buffer) * 3 // 2), np.float32)
            grown[: len(self.buffer)] = self.buffer
            self.buffer = grown
        skip = max(0, -position)
        if skip < len(samples):
            self.buffer[position + skip: stop] = samples[skip:]
        return stop

    def result(self, length: int) -> np.ndarray:
        audio = self.buffer[:length]
        np.clip(audio, -1.0, 1.0, out=audio)
        return audio


def audio_duration(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return len(audio) / sample_rate


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise MediaError(f"cannot open {path} as media: {error}; check that it is a complete audio or video file") from error
