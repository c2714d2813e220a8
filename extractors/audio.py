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

    `start`/`end` (seconds) cut a span; the returned array starts at `start`. A file without an
    audio stream gives an empty array and a warning, or MediaError when `require_audio` is set.
    Missing, unreadable or corrupt files raise MediaError.
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
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            # No seeking for `start`: the resampler's sample grid would then depend on where the
            # seek landed, and a span would differ from the same slice of the full decode.
            # Decoding compressed audio runs at several hundred times real time.
            first_time: float | None = None
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = float(frame.time) if frame.time is not None else 0.0
                for resampled in resampler.resample(frame):
                    chunks.append(resampled.to_ndarray().reshape(-1))
                if end is not None and frame.time is not None and frame.time > end:
                    break
            for resampled in resampler.resample(None):  # flush the resampler's buffer
                chunks.append(resampled.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as error:
            raise MediaError(f"cannot decode the audio of {path}: {error}; the file may be corrupt") from error
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    # Index 0 of the result is time `start` (or 0): trim decoded samples before it, and pad with
    # silence when the stream starts later (mp4 audio often begins a few ms after the video).
    origin = start or 0.0
    lead = int(round(((first_time or 0.0) - origin) * sample_rate))
    audio = np.concatenate([np.zeros(lead, np.float32), audio]) if lead > 0 else audio[-lead:]
    if end is not None:
        audio = audio[: max(0, int(round((end - origin) * sample_rate)))]
    return np.clip(audio, -1.0, 1.0)


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
