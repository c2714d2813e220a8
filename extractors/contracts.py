"""Data contracts shared by the extractor stages (see DESIGN.md).

Times are seconds (float) from the start of the video; boxes are pixels ``(x1, y1, x2, y2)`` in the
source frame. Every record has ``serialize()`` returning plain JSON types, so stage outputs can be
cached and exported without knowing their classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


def _plain(value):
    """Turns numpy scalars/arrays inside a dataclass dict into JSON types."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Serializable:
    def serialize(self) -> dict:
        return _plain(asdict(self))


@dataclass
class VideoInfo(_Serializable):
    path: str
    duration: float          # seconds
    fps: float               # average frame rate of the video stream (0.0 when unknown)
    width: int               # display width (after rotation)
    height: int              # display height (after rotation)
    rotation: int            # degrees clockwise applied on decode (0, 90, 180, 270)
    has_audio: bool
    audio_sample_rate: int | None
    frame_count: int | None  # from the container; None when it does not say
    # Stream starts in the container timeline (seconds). Every time elsewhere counts from video_start, the
    # first video frame: MPEG-TS recordings start hours in, and audio may start before or after the video.
    video_start: float = 0.0
    audio_start: float | None = None  # None without audio, or when the container does not say

    @classmethod
    def from_dict(cls, data: dict) -> VideoInfo:
        """Inverse of serialize(); a dict from before the stream starts were recorded reads as starting at 0."""
        def optional(key: str, kind):
            return None if data.get(key) is None else kind(data[key])

        return cls(
            path=str(data["path"]), duration=float(data["duration"]), fps=float(data["fps"]),
            width=int(data["width"]), height=int(data["height"]), rotation=int(data["rotation"]),
            has_audio=bool(data["has_audio"]), audio_sample_rate=optional("audio_sample_rate", int),
            frame_count=optional("frame_count", int), video_start=float(data.get("video_start", 0.0)),
            audio_start=optional("audio_start", float),
        )


@dataclass
class FaceDetection(_Serializable):
    t: float                               # presentation time of the frame
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels
    score: float
    landmarks: np.ndarray                  # [5, 2]: left eye, right eye, nose, mouth left, mouth right

    @classmethod
    def from_dict(cls, data: dict) -> FaceDetection:
        return cls(float(data["t"]), tuple(float(v) for v in data["box"]), float(data["score"]),
                   np.asarray(data["landmarks"], dtype=np.float32).reshape(-1, 2))


@dataclass
class FaceTrack(_Serializable):
    id: str                 # "T0", "T1", ...
    shot: int               # index of the shot the track lives in; tracks never cross a cut
    detections: list[FaceDetection] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> FaceTrack:
        return cls(data["id"], int(data["shot"]), [FaceDetection.from_dict(d) for d in data["detections"]])

    @property
    def start(self) -> float:
        return self.detections[0].t

    @property
    def end(self) -> float:
        return self.detections[-1].t


@dataclass
class Character(_Serializable):
    id: str                  # "C0", "C1", ...
    track_ids: list[str]
    name: str | None         # from a cast file; None when unnamed
    embedding: np.ndarray    # [D] mean identity embedding (L2-normalised)
    personality: np.ndarray | None = None  # from a cast file only; never invented

    @classmethod
    def from_dict(cls, data: dict) -> Character:
        personality = data.get("personality")
        return cls(data["id"], list(data["track_ids"]), data.get("name"),
                   np.asarray(data["embedding"], dtype=np.float32),
                   None if personality is None else np.asarray(personality, dtype=np.float32))


@dataclass
class Word(_Serializable):
    text: str
    start: float
    end: float
    prob: float

    @classmethod
    def from_dict(cls, data: dict) -> Word:
        return cls(**data)


@dataclass
class SpeechSegment(_Serializable):
    id: str                  # "S0", "S1", ...
    start: float
    end: float
    text: str
    words: list[Word]
    turn: str | None = None          # diarization speaker label ("SPK0", ...)
    character: str | None = None     # on-screen character talking, when known
    speaker_confidence: float = 0.0
    language: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> SpeechSegment:
        return cls(**{**data, "words": [Word.from_dict(w) for w in data["words"]]})


@dataclass
class SpeakerTurn(_Serializable):
    start: float
    end: float
    speaker: str             # "SPK0", "SPK1", ...

    @classmethod
    def from_dict(cls, data: dict) -> SpeakerTurn:
        return cls(**data)
