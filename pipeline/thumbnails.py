"""One thumbnail per character: its clearest face (frame time + box in the JSON, a JPEG crop beside it)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from extractors.io import write_atomically
from extractors.media import iter_frames

log = logging.getLogger(__name__)


def best_face(visual, character) -> tuple[float, tuple[float, float, float, float]] | None:
    """(time, box) of the character's detection with the best score x sqrt(area)."""
    best, best_value = None, -1.0
    for track_id in character.track_ids:
        for d in visual.track(track_id).detections:
            x1, y1, x2, y2 = d.box
            value = d.score * float(np.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)))
            if value > best_value:
                best, best_value = (d.t, tuple(float(v) for v in d.box)), value
    return best


def write_thumbnails(video: Path, visual, folder: Path, size: int = 160, margin: float = 0.3) -> dict[str, dict]:
    """character id -> {"t", "box", "file"} (file relative to the timeline's folder)."""
    out: dict[str, dict] = {}
    for character in visual.characters:
        found = best_face(visual, character)
        if found is None:
            continue
        t, box = found
        entry = {"t": round(t, 3), "box": [round(v, 1) for v in box], "file": None}
        frame = next(iter_frames(video, None, start=max(0.0, t - 1e-3), end=t + 0.5), None)
        if frame is not None:
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            height, width = frame.image.shape[:2]
            a, b = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
            c, d = int(min(width, x2 + margin * w)), int(min(height, y2 + margin * h))
            crop = frame.image[b:d, a:c]
            if crop.size:
                scale = size / max(crop.shape[:2])
                crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                                  interpolation=cv2.INTER_AREA)
                ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                                           [cv2.IMWRITE_JPEG_QUALITY, 90])
                if ok:
                    path = folder / f"{character.id}.jpg"
                    write_atomically(path, lambda temporary, data=encoded: temporary.write_bytes(data.tobytes()))
                    entry["file"] = f"{folder.name}/{path.name}"
        out[character.id] = entry
    return out
