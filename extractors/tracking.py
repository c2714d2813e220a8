"""Face tracks within shots: detections linked frame to frame by box overlap and appearance.

Online: feed each sampled frame's detections with :meth:`FaceTracker.update` in time order. Detections
are assigned to live tracks of the same shot by the Hungarian algorithm (scipy) on a cost mixing box
overlap and the similarity of a small grey-level appearance patch; a track survives missed detections for
``max_gap_seconds`` (gaps bridged), a cut ends every track, and tracks with too few detections are
dropped as spurious. :meth:`FaceTracker.take_closed` reports tracks as they close, so callers can finish
the work of a track (identity chips) then and hold nothing per track until the end of the video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from extractors.contracts import FaceDetection, FaceTrack

log = logging.getLogger(__name__)

_PATCH = 24  # side of the appearance patch in pixels


@dataclass
class TrackerConfig:
    max_gap_seconds: float = 1.0      # a track waits this long for its face to be detected again
    min_detections: int = 3           # shorter tracks are dropped as spurious
    min_iou: float = 0.1              # below this, boxes match only by appearance and nearness
    max_center_shift: float = 1.0     # ...centres at most this many box sizes apart
    min_appearance: float = 0.5       # ...and appearance similarity at least this
    max_size_ratio: float = 2.0       # box sizes of one track differ at most by this factor frame to frame
    appearance_weight: float = 0.5    # cost = 1 - ((1 - w) * IoU + w * appearance similarity)
    appearance_momentum: float = 0.7  # track appearance = momentum * old + (1 - momentum) * new


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def appearance_patch(image: np.ndarray, box) -> np.ndarray:
    """Zero-mean, unit-norm grey patch of the face box: [_PATCH * _PATCH] float32 (dot product = similarity)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, min(x1, width - 1)), max(0, min(y1, height - 1))
    x2, y2 = max(x1 + 1, min(x2, width)), max(y1 + 1, min(y2, height))
    crop = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    patch = cv2.resize(crop, (_PATCH, _PATCH), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else patch


@dataclass
class _LiveTrack:
    track: FaceTrack
    appearance: np.ndarray
    last_t: float
    last_box: np.ndarray


@dataclass
class ClosedTracks:
    """Tracks closed since the last :meth:`FaceTracker.take_closed`."""

    kept: list[FaceTrack]   # with at least ``min_detections`` detections, in the order they closed
    dropped: list[str]      # ids of tracks too short to keep (spurious), now forgotten


@dataclass
class FaceTracker:
    config: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self):
        self._live: list[_LiveTrack] = []
        self._finished: list[FaceTrack] = []   # every kept closed track, for finish()
        self._closed: list[FaceTrack] = []     # closed since the last take_closed()
        self._shot: int | None = None
        self._next_id = 0

    def _close(self, lives: list[_LiveTrack]) -> None:
        for live in lives:
            self._closed.append(live.track)
            if len(live.track.detections) >= self.config.min_detections:
                self._finished.append(live.track)

    def _close_all(self) -> None:
        self._close(self._live)
        self._live = []

    def update(self, t: float, shot: int, detections: list[FaceDetection], image: np.ndarray | None = None) -> list[str]:
        """Assigns the frame's detections to tracks; returns the track id of each detection.

        ``image`` (the frame the boxes refer to) enables appearance matching; without it only overlap is used.
        """
        cfg = self.config
        if shot != self._shot:
            self._close_all()
            self._shot = shot
        # Tracks whose face has been missing too long are closed.
        expired = [live for live in self._live if t - live.last_t > cfg.max_gap_seconds]
        self._close(expired)
        self._live = [live for live in self._live if t - live.last_t <= cfg.max_gap_seconds]
        if not detections:
            return []
        boxes = np.array([d.box for d in detections], dtype=np.float64)
        patches = (np.stack([appearance_patch(image, d.box) for d in detections]) if image is not None else None)
        assigned: list[_LiveTrack | None] = [None] * len(detections)
        if self._live:
            cost = self._cost(boxes, patches)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] < 1.0:
                    assigned[c] = self._live[r]
        ids = []
        for index, detection in enumerate(detections):
            live = assigned[index]
            patch = patches[index] if patches is not None else np.zeros(_PATCH * _PATCH, np.float32)
            if live is None:
                live = _LiveTrack(FaceTrack(id=f"T{self._next_id}", shot=shot), patch, t, boxes[index])
                self._next_id += 1
                self._live.append(live)
            else:
                mixed = cfg.appearance_momentum * live.appearance + (1 - cfg.appearance_momentum) * patch
                live.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-6)
                live.last_t, live.last_box = t, boxes[index]
            live.track.detections.append(detection)
            ids.append(live.track.id)
        return ids

    def _cost(self, boxes: np.ndarray, patches: np.ndarray | None) -> np.ndarray:
        """[live tracks, detections] cost in [0, 1]; 1.0 or more means "may not match"."""
        cfg = self.config
        last = np.stack([live.last_box for live in self._live])
        iou = box_iou(last, boxes)
        if patches is not None:
            appearance = np.clip(np.stack([live.appearance for live in self._live]) @ patches.T, 0.0, 1.0)
        else:
            appearance = np.zeros_like(iou)
        size_last = np.sqrt((last[:, 2] - last[:, 0]) * (last[:, 3] - last[:, 1]))
        size_new = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        center_last = (last[:, :2] + last[:, 2:]) / 2
        center_new = (boxes[:, :2] + boxes[:, 2:]) / 2
        shift = np.linalg.norm(center_last[:, None] - center_new[None], axis=-1) / np.maximum(size_last[:, None], 1e-6)
        ratio = np.maximum(size_last[:, None] / size_new[None], size_new[None] / size_last[:, None])
        allowed = (ratio <= cfg.max_size_ratio) & (
            (iou >= cfg.min_iou)
            | ((shift <= cfg.max_center_shift) & (appearance >= cfg.min_appearance))
        )
        score = (1 - cfg.appearance_weight) * iou + cfg.appearance_weight * appearance
        return np.where(allowed, 1.0 - 0.999 * score, 1e6)

    def open_since(self) -> float | None:
        """The first detection time of the earliest track still open (None: none is): every track that
        started before it has closed."""
        return min((live.track.detections[0].t for live in self._live), default=None)

    def take_closed(self) -> ClosedTracks:
        """The tracks that closed (gap, cut or :meth:`finish`) since the last call, kept and dropped."""
        closed, self._closed = self._closed, []
        kept = [t for t in closed if len(t.detections) >= self.config.min_detections]
        return ClosedTracks(kept, [t.id for t in closed if len(t.detections) < self.config.min_detections])

    def finish(self) -> list[FaceTrack]:
        """Closes every live track; returns all tracks with at least ``min_detections`` detections by start time.

        The tracks closed by this call are still reported by the next :meth:`take_closed`.
        """
        self._close_all()
        kept, self._finished = self._finished, []
        dropped = sum(1 for t in self._closed if len(t.detections) < self.config.min_detections)
        if dropped:
            log.debug("dropped %d spurious tracks (fewer than %d detections)", dropped, self.config.min_detections)
        return sorted(kept, key=lambda tr: (tr.start, int(tr.id[1:])))


def track_faces(
    frames_detections: list[tuple[float, int, list[FaceDetection], np.ndarray | None]],
    config: TrackerConfig | None = None,
) -> list[FaceTrack]:
    """Tracks over (t, shot, detections, image-or-None) tuples in time order."""
    tracker = FaceTracker(config or TrackerConfig())
    for t, shot, detections, image in frames_detections:
        tracker.update(t, shot, detections, image)
    return tracker.finish()
