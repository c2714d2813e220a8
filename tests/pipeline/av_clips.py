"""Edited clips with known speakers, built from the real talking heads in ../shared/media.

Each builder writes an H.264 + AAC file with PyAV and returns the ground truth: which tile (a name of
the source clip) is audible when. The talking heads keep talking on screen whether or not their sound is
kept, so a muted tile is a face whose lips move without its voice: exactly what a who-is-talking stage
must not be fooled by.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from extractors.audio import SAMPLE_RATE, load_audio
from extractors.media import iter_frames

FPS = 25


@dataclass
class Source:
    name: str
    frames: np.ndarray   # [N, side, side, 3] uint8 at FPS
    audio: np.ndarray    # [samples] float32 at SAMPLE_RATE

    def frame(self, t: float) -> np.ndarray:
        return self.frames[int(t * FPS) % len(self.frames)]

    def sound(self, start: float, end: float) -> np.ndarray:
        """The source's own audio over [start, end) of its timeline (looping like the frames)."""
        period = len(self.frames) / FPS
        n = int(round((end - start) * SAMPLE_RATE))
        index = (np.arange(n) + int(round(start * SAMPLE_RATE))) % int(round(period * SAMPLE_RATE))
        return np.take(self.audio, np.minimum(index, len(self.audio) - 1)) if len(self.audio) else np.zeros(n)


def load_source(path: Path, side: int = 360) -> Source:
    """The clip as a centre square at FPS (each output instant shows the latest source frame), and its sound."""
    times, images = [], []
    for frame in iter_frames(path, None):
        h, w = frame.image.shape[:2]
        crop = min(h, w)
        y, x = (h - crop) // 2, (w - crop) // 2
        times.append(frame.t)
        images.append(cv2.resize(frame.image[y: y + crop, x: x + crop], (side, side), interpolation=cv2.INTER_AREA))
    ticks = np.arange(int(times[-1] * FPS) + 1) / FPS
    index = np.clip(np.searchsorted(np.array(times), ticks + 1e-6, side="right") - 1, 0, len(images) - 1)
    return Source(path.stem, np.stack([images[i] for i in index]), load_audio(path))


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray | None) -> Path:
    """H.264 at FPS, and AAC mono at 16 kHz unless ``audio`` is None (a video without a sound track)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        sound = None
        if audio is not None:  # every stream is added before the first packet is written
            sound = container.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is None:
            return path
        samples = np.clip(audio, -1, 1).astype(np.float32)
        step = 1024
        for i in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, i: i + step], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, i, Fraction(1, SAMPLE_RATE)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return path


Schedule = list[tuple[float, float, str]]   # (start, end, name of the audible source or None)


def side_by_side(path: Path, sources: list[Source], schedule: Schedule) -> Schedule:
    """Tiles left to right, all playing; only the scheduled tile's own sound is heard."""
    duration = max(end for _, end, _ in schedule)
    frames = [np.concatenate([s.frame(i / FPS) for s in sources], axis=1) for i in range(int(duration * FPS))]
    by_name = {s.name: s for s in sources}
    audio = np.zeros(int(round(duration * SAMPLE_RATE)), np.float32)
    for start, end, name in schedule:
        if name is not None:
            piece = by_name[name].sound(start, end)
            a = int(round(start * SAMPLE_RATE))
            audio[a: a + len(piece)] = piece[: len(audio) - a]
    write_clip(path, frames, audio)
    return schedule


def cut_alone(path: Path, shots: list[tuple[float, float, Source, Source | None]]) -> Schedule:
    """Shots of one face each, (start, end, shown, heard): heard None = silence, another source = its voice
    off screen over the shown face."""
    duration = max(end for _, end, _, _ in shots)
    frames, audio = [], np.zeros(int(round(duration * SAMPLE_RATE)), np.float32)
    truth: Schedule = []
    for start, end, shown, heard in shots:
        for i in range(int(round(start * FPS)), int(round(end * FPS))):
            frames.append(shown.frame(i / FPS))
        if heard is not None:
            piece = heard.sound(start, end)
            a = int(round(start * SAMPLE_RATE))
            audio[a: a + len(piece)] = piece[: len(audio) - a]
        truth.append((start, end, None if heard is None else heard.name))
    write_clip(path, frames, audio)
    return truth


def mirrored(source: Source, offset_s: float, name: str | None = None) -> Source:
    """The same talking head flipped left-right and started ``offset_s`` later: other words on the lips at
    any instant, its own sound kept in sync (a second speaker with exact ground truth)."""
    shift = int(round(offset_s * FPS)) % len(source.frames)
    frames = np.roll(source.frames[:, :, ::-1], -shift, axis=0)
    period = int(round(len(source.frames) / FPS * SAMPLE_RATE))
    audio = np.roll(source.audio[:period], -int(round(offset_s * SAMPLE_RATE)) % max(period, 1))
    return Source(name or f"{source.name}_mirrored", np.ascontiguousarray(frames), audio)


def revoiced(source: Source, semitones: float, name: str) -> Source:
    """The same picture with its sound pitch-shifted: timing (and so lip sync) kept, a different voice for
    the diarizer. With :func:`mirrored` it makes a second, distinct-sounding speaker with exact ground truth."""
    import librosa

    audio = librosa.effects.pitch_shift(source.audio.astype(np.float32), sr=SAMPLE_RATE, n_steps=semitones)
    return Source(name, source.frames, audio.astype(np.float32))
