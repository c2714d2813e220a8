"""What the timeline says about one instant: faces on screen, who talks, each character's emotions.

The overlay asks this for every video frame, so lookups are binary searches over sorted arrays built
once. Face boxes exist only at the analysed frames (``faces.analysis_fps``); between two detections of a
track the box is interpolated, and at a track's ends or around a gap in it the nearest box is held for
half an analysis period: a face is never drawn where the analysis did not see it, nor carried across a
shot cut (a frame's shot is decided by the caller, see :class:`ShotClock`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.render.colors import character_color

EPS = 1e-3  # seconds: frame times from pts and analysis times are rounded differently


@dataclass(frozen=True)
class Character:
    id: str
    label: str            # the name, else the id
    color: str
    index: int
    thumbnail: Path | None


@dataclass(frozen=True)
class FaceBox:
    track: str
    character: str | None
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 in source pixels


@dataclass
class TrackBoxes:
    """One face track's detections as arrays, for interpolation at any time."""
    id: str
    character: str | None
    shot: int
    times: np.ndarray      # [n] seconds, increasing
    boxes: np.ndarray      # [n, 4]

    def box_at(self, t: float, max_step: float, hold: float) -> tuple[float, float, float, float] | None:
        """Interpolated between detections at most ``max_step`` apart; else the nearest within ``hold``."""
        times = self.times
        if t < times[0] - hold - EPS or t > times[-1] + hold + EPS:
            return None
        i = int(np.searchsorted(times, t + EPS, side="right")) - 1
        if 0 <= i < len(times) - 1 and times[i + 1] - times[i] <= max_step + EPS:
            w = (t - times[i]) / (times[i + 1] - times[i])
            w = min(1.0, max(0.0, w))
            return tuple(float(v) for v in (1 - w) * self.boxes[i] + w * self.boxes[i + 1])
        if i >= 0 and t - times[i] <= hold + EPS:
            return tuple(float(v) for v in self.boxes[i])
        if i + 1 < len(times) and times[i + 1] - t <= hold + EPS:
            return tuple(float(v) for v in self.boxes[i + 1])
        return None


@dataclass
class _Spans:
    """Items with [start, end) sorted by start, for "which cover t" queries."""
    starts: list[float] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    longest: float = 0.0

    @classmethod
    def of(cls, items: Sequence[dict]) -> _Spans:
        ordered = sorted(items, key=lambda item: item["start"])
        longest = max((item["end"] - item["start"] for item in ordered), default=0.0)
        return cls([item["start"] for item in ordered], list(ordered), longest)

    def covering(self, t: float) -> list[dict]:
        """Items with start <= t < end, latest start last."""
        hi = bisect.bisect_right(self.starts, t)
        lo = bisect.bisect_left(self.starts, t - self.longest - EPS, 0, hi)
        return [item for item in self.items[lo:hi] if t < item["end"]]


class Scene:
    """The timeline JSON indexed by time."""

    def __init__(self, timeline: dict, base_dir: Path | None = None):
        faces = timeline["faces"]
        period = 1.0 / float(faces["analysis_fps"])
        self.max_step = 1.5 * period   # consecutive analysed frames (one period apart, with slack)
        self.hold = 0.5 * period
        self.labels: list[str] = list(timeline["model"]["labels"])
        self.characters: dict[str, Character] = {}
        for index, entry in enumerate(timeline["characters"]):
            thumb = (entry.get("thumbnail") or {}).get("file")
            path = (base_dir / thumb) if thumb and base_dir is not None else None
            self.characters[entry["id"]] = Character(entry["id"], entry["name"] or entry["id"],
                                                     character_color(index), index, path)
        self.shots: list[tuple[int, float, float]] = sorted(
            ((s["index"], s["start"], s["end"]) for s in faces["shots"]), key=lambda s: s[1])
        self.tracks_by_shot: dict[int, list[TrackBoxes]] = {}
        for track in faces["tracks"]:
            detections = sorted(track["detections"], key=lambda d: d["t"])
            if not detections:
                continue
            boxes = TrackBoxes(track["id"], track["character"], track["shot"],
                               np.array([d["t"] for d in detections], float),
                               np.array([d["box"] for d in detections], float))
            self.tracks_by_shot.setdefault(track["shot"], []).append(boxes)
        self.segments = _Spans.of(timeline["segments"])
        self.segment_by_id = {segment["id"]: segment for segment in timeline["segments"]}
        by_character: dict[str, list[dict]] = {}
        for entry in timeline["timeline"]:
            by_character.setdefault(entry["character"], []).append(entry)
        self.entries = {character: _Spans.of(items) for character, items in by_character.items()}

    def faces_at(self, t: float, shot: int | None) -> list[FaceBox]:
        """Boxes of the tracks of ``shot`` visible at ``t`` (none when the shot is unknown)."""
        if shot is None:
            return []
        found = []
        for track in self.tracks_by_shot.get(shot, []):
            box = track.box_at(t, self.max_step, self.hold)
            if box is not None:
                found.append(FaceBox(track.id, track.character, box))
        return found

    def entry_at(self, character: str, t: float) -> dict | None:
        spans = self.entries.get(character)
        covering = spans.covering(t) if spans else []
        return covering[-1] if covering else None

    def segments_at(self, t: float) -> list[dict]:
        return self.segments.covering(t)

    def shot_at(self, t: float) -> int | tuple[int, int] | None:
        """The shot analysed around ``t``; (before, after) between two shots' analysed frames (the cut is
        somewhere in there); None when there are no shots."""
        if not self.shots:
            return None
        starts = [start for _, start, _ in self.shots]
        k = bisect.bisect_right(starts, t + EPS) - 1
        if k < 0:
            return self.shots[0][0]
        index, _, end = self.shots[k]
        if t <= end + EPS or k == len(self.shots) - 1:
            return index
        return index, self.shots[k + 1][0]
