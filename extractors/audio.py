"""Audio from any media file (video or audio) as 16 kHz mono float32, decoded with PyAV.

Every audio stage downstream (voice activity, speech recognition, diarization, acoustic features)
takes this array, so the file is decoded once; or the same samples on disk (`decode_audio_to_file`),
which the stages read a span at a time, so an hour's audio is not held in memory. A video without an
audio stream is a normal case (silent footage): `load_audio` logs a warning and returns an empty array, which every stage turns
into "no speech". Callers that cannot do without audio use `load_audio(..., require_audio=True)`.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path

import av
import numpy as np

from extractors.disk_arrays import RowsOnDisk
from extractors.errors import MediaError
from extractors.media import header_end, timeline_origin

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; what whisper, silero-vad and resemblyzer all expect

# 16 kHz mono samples: in memory, or on disk and read a span at a time (see `decode_audio_to_file`).
AudioSamples = np.ndarray | RowsOnDisk


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
    starts earlier is cut, so sample times and frame times agree. Every decoded frame goes where its
    timestamp says (see :class:`_Timeline`): a hole in the audio timestamps (broadcast MPEG-TS, a
    stream-copied concatenation) is silence, so sound after it stays on its picture. `start`/`end` (seconds, same
    timeline) cut a span; the returned array starts at `start`. A file without an audio stream gives
    an empty array and a warning, or MediaError when `require_audio` is set. A file that ends before
    its header says (truncated) gives what is there and a warning. Missing, unreadable or corrupt
    files raise MediaError.
    """
    return _decode(Path(path), _Output, sample_rate, start, end, require_audio)


def decode_audio_to_file(path: str | Path, target: str | Path, *, require_audio: bool = False) -> RowsOnDisk:
    """The audio of `path` as :func:`load_audio` gives it, written to `target` as raw float32 samples as it is
    decoded and read back a span at a time: a long video's audio (230 MB an hour) is never whole in memory."""
    return _decode(Path(path), lambda capacity: _FileOutput(target), SAMPLE_RATE, None, None, require_audio)


def as_samples(audio: AudioSamples) -> AudioSamples:
    """What the audio stages take: a 1-d float32 array, or audio on disk as it is (read a span at a time)."""
    if isinstance(audio, RowsOnDisk):
        return audio
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def mean_square(audio: AudioSamples, block: int = 60 * SAMPLE_RATE) -> float:
    """Mean of the squared samples (0 for no samples); audio on disk a block at a time (an array in memory in
    one product, so its value is the one the stages always computed)."""
    if not len(audio):
        return 0.0
    if isinstance(audio, np.ndarray):
        return float(np.dot(audio, audio)) / len(audio)
    return sum(float(np.dot(piece, piece)) for _, piece in audio.blocks(block)) / len(audio)


def _decode(path: Path, make_output, sample_rate: int, start: float | None, end: float | None,
            require_audio: bool):
    """Decodes into ``make_output(capacity in samples)`` (see :class:`_Output`); returns its result."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            message = f"{path} has no audio stream"
            if require_audio:
                raise MediaError(f"{message}; use a file with a sound track")
            log.warning("%s: treating it as silent (no speech, no acoustic features)", message)
            return make_output(0).result(0)
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        origin = timeline_origin(container)
        span_start = start or 0.0
        header = header_end(container, stream)
        expected_end = None if header is None else header - origin       # seconds from the origin
        known_end = min(e for e in (end, expected_end, float("inf")) if e is not None)
        output = make_output(sample_rate * (known_end - span_start + 2.0) if np.isfinite(known_end) else 0)
        timeline = _Timeline(output, sample_rate, origin=origin, span_start=span_start, path=path)
        stopped_early = False
        try:
            # No seeking for `start`: the resampler's sample grid would then depend on where the
            # seek landed, and a span would differ from the same slice of the full decode.
            # Decoding compressed audio runs at several hundred times real time.
            for frame in container.decode(stream):
                timeline.add(frame)
                if end is not None and frame.time is not None and frame.time - origin > end:
                    stopped_early = True
                    break
        except (av.error.FFmpegError, ValueError) as error:
            if timeline.position is None:
                raise MediaError(f"cannot decode the audio of {path}: {error}; the file may be corrupt") from error
            stopped_early = True
            log.warning("%s: audio decoding stopped after %.2f s (%s); the file looks truncated",
                        path, span_start + timeline.position / sample_rate, error)
        timeline.finish()
    position = timeline.end
    length = max(0, position)
    if end is not None:
        length = min(length, max(0, int(round((end - span_start) * sample_rate))))
    decoded_end = span_start + position / sample_rate
    if not stopped_early and expected_end is not None and decoded_end < expected_end - 1.0:
        log.warning("%s: audio data ends at %.2f s but the header says %.2f s; the file looks truncated",
                    path, decoded_end, expected_end)
    return output.result(length)


class _Timeline:
    """Puts each decoded frame at its presentation time: samples are joined end to end only while the
    timestamps say they follow on.

    Broadcast MPEG-TS has holes in its audio timestamps, and so does a stream-copied concatenation at
    every join; joined end to end, all later sound came early (36 s by the end of a 60-minute
    concatenation). A frame whose time is more than `GAP_TOLERANCE` from where the samples so far end
    starts a new run: the resampler is flushed (its filter would smear the two sides together) and a
    fresh one starts at the frame's own time, so a hole stays silent. Where timestamps step back, the
    sound already there is kept and the overlapping new samples are dropped, as
    :func:`extractors.media.iter_frames` keeps the earlier frame at each tick. Within the tolerance
    (timestamp rounding) samples run on, so a file without holes gives exactly the one resampled run it
    always did, and drift stays under the tolerance.
    """

    GAP_TOLERANCE = 0.02    # seconds; a 1024-sample AAC frame at 48 kHz is 21 ms
    WARN_STEP_BACK = 0.5    # seconds; a step back this long is more than muxing jitter: say so

    def __init__(self, output: _Output, sample_rate: int, origin: float, span_start: float, path: Path):
        self.output, self.sample_rate, self.path = output, sample_rate, path
        self.origin = origin                # container seconds of the first video frame
        self.zero = origin + span_start     # container seconds of output index 0
        self.position: int | None = None    # output index of the next resampled sample
        self.end = 0                        # output index after the last sample written by any run
        self.resampler: av.AudioResampler | None = None
        self.run_format: tuple | None = None
        self.run_start_time = 0.0           # container seconds of the current run's first sample
        self.run_samples = 0                # input samples (at the run's input rate) fed since then
        self.run_first = 0                  # output index where the current run started
        # Output [start, stop) intervals written by earlier runs, sorted and disjoint; a hole-free
        # file never adds one. `blocked` holds those still ahead of the current run's position.
        self.runs: list[tuple[int, int]] = []
        self.blocked: list[tuple[int, int]] = []
        self.holes = 0
        self.silence = 0                    # output samples of silence put into holes
        self.dropped = 0                    # output samples dropped where timestamps stepped back

    def add(self, frame: av.AudioFrame) -> None:
        time = float(frame.time) if frame.time is not None else None
        frame_format = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.position is None:
            time = time if time is not None else self.origin
            self.position = self._index(time)
            self._start_run(time, frame_format)
        else:
            follows_at = self.run_start_time + self.run_samples / self.run_format[2]
            jumped = time is not None and abs(time - follows_at) > self.GAP_TOLERANCE
            if jumped or frame_format != self.run_format:   # the resampler is set up for one input format
                self._flush()
                self._end_run()
                if jumped:
                    self._jump_to(time)
                self._start_run(time if time is not None else follows_at, frame_format)
        for resampled in self.resampler.resample(frame):
            self._write(resampled.to_ndarray().reshape(-1))
        self.run_samples += frame.samples

    def finish(self) -> None:
        if self.position is None:
            return
        self._flush()
        self._end_run()
        if self.holes:
            log.info("%s: %d hole(s) in the audio timestamps, filled with %.2f s of silence",
                     self.path, self.holes, self.silence / self.sample_rate)
        if self.dropped:
            log.info("%s: audio timestamps stepped back; %.2f s of overlapping audio dropped",
                     self.path, self.dropped / self.sample_rate)

    def _index(self, time: float) -> int:
        """Output index of container time ``time``."""
        return int(round((time - self.zero) * self.sample_rate))

    def _jump_to(self, time: float) -> None:
        target = self._index(time)
        if target > self.position:
            self.holes += 1
            self.silence += target - self.position
        elif target < self.position - self.WARN_STEP_BACK * self.sample_rate:
            log.warning("%s: audio timestamps go back %.2f s at %.2f s (files appended to each other?); "
                        "audio where there is sound already is dropped, as video frames are",
                        self.path, (self.position - target) / self.sample_rate, self.position / self.sample_rate)
        self.position = target

    def _start_run(self, time: float, frame_format: tuple) -> None:
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        self.run_format = frame_format
        self.run_start_time = time
        self.run_samples = 0
        self.run_first = self.position
        if self.runs and self.runs[-1][1] > self.position:   # stepped back: earlier sound lies ahead
            self.blocked = self.runs[bisect.bisect_right(self.runs, self.position, key=lambda run: run[1]):]
        else:
            self.blocked = []

    def _end_run(self) -> None:
        """Records the run just flushed in `runs`, merged with its neighbours."""
        if self.position <= self.run_first:
            return
        start, stop = self.run_first, self.position
        if not self.runs or self.runs[-1][1] < start:      # after a hole: the usual case
            self.runs.append((start, stop))
            return
        kept = []
        for run in self.runs:
            if run[1] < start or run[0] > stop:
                kept.append(run)
            else:
                start, stop = min(start, run[0]), max(stop, run[1])
        bisect.insort(kept, (start, stop))
        self.runs = kept

    def _write(self, samples: np.ndarray) -> None:
        """Writes resampled ``samples`` at `position`, except where an earlier run wrote already."""
        start, stop = self.position, self.position + len(samples)
        self.position = stop
        self.end = max(self.end, stop)
        while self.blocked and self.blocked[0][1] <= start:   # passed
            self.blocked.pop(0)
        if not self.blocked or self.blocked[0][0] >= stop:
            self.output.put(start, samples)
            return
        cursor = start
        for blocked_start, blocked_stop in self.blocked:
            if blocked_start >= stop:
                break
            if blocked_start > cursor:
                self.output.put(cursor, samples[cursor - start: blocked_start - start])
            overlap_end = min(max(cursor, blocked_stop), stop)
            self.dropped += overlap_end - max(cursor, blocked_start)
            cursor = overlap_end
        if cursor < stop:
            self.output.put(cursor, samples[cursor - start:])

    def _flush(self) -> None:
        for resampled in self.resampler.resample(None):   # the resampler's buffered tail
            self._write(resampled.to_ndarray().reshape(-1))


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


class _FileOutput:
    """The decoded signal written into a file of raw float32 samples as it comes, clipped on the way (what
    :class:`_Output` does in memory); a hole left by the timestamps reads as zeros."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "wb")

    def put(self, position: int, samples: np.ndarray) -> int:
        skip = max(0, -position)
        if skip < len(samples):
            self.handle.seek((position + skip) * 4)
            self.handle.write(np.clip(samples[skip:], -1.0, 1.0).astype(np.float32, copy=False).tobytes())
        return position + len(samples)

    def result(self, length: int) -> RowsOnDisk:
        self.handle.truncate(length * 4)   # cuts a span's end, or pads a silent tail with zeros
        self.handle.close()
        return RowsOnDisk.raw(self.path, np.float32)

    def __del__(self):   # a failed decode closes its file (the caller removes it)
        handle = getattr(self, "handle", None)
        if handle is not None and not handle.closed:
            handle.close()


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
