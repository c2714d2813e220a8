"""CSV tables: the long per-(moment, character) table, and a per-frame face table in py-feat's style.

The long table has one row per timeline entry, lists joined with ``;`` and one column per model label
holding its probability, so it loads straight into R, pandas or a spreadsheet.

The face table follows the columns of py-feat's ``Fex`` (``feat.utils``: ``frame``,
``FaceRectX/Y/Width/Height``, ``FaceScore``, the emotion columns ``anger, disgust, fear, happiness,
sadness, surprise, neutral``, ``input``, and the video detector's ``approx_time`` and ``Identity``), one
row per analysed face: ``frame = round(t * fps)``, ``Identity`` the character id (empty for a face no
character was made of), the emotions from the face expression classifier (fer's ``angry``, ``happy``,
``sad`` renamed to py-feat's words), and ``speaking``: whether a segment attributed to that character
covers the time.
"""

from __future__ import annotations

import bisect
import csv
from pathlib import Path

from pipeline.errors import UserError
from pipeline.export.common import Speakers, seconds, writing

BASE_COLUMNS = ("moment", "character", "name", "start", "end", "role", "segment", "modalities",
                "untrained_modalities", "labels")
FEAT_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
FER_TO_FEAT = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
FACE_COLUMNS = ("frame", "approx_time", "Identity", "name", "track", "FaceRectX", "FaceRectY", "FaceRectWidth",
                "FaceRectHeight", "FaceScore")


def _write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    def write(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    return writing(path, write)


def write_csv(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    labels = list(timeline["model"]["labels"])
    clash = sorted(set(labels) & set(BASE_COLUMNS))
    if clash:
        raise UserError(f"model labels {clash} have the names of fixed CSV columns; cannot write {path}")
    speakers = Speakers(timeline)
    rows = []
    for entry in timeline["timeline"]:
        rows.append([
            entry["moment"], entry["character"], speakers.of_character(entry["character"]).label,
            f"{seconds(entry['start']):.3f}", f"{seconds(entry['end']):.3f}", entry["role"],
            entry["segment"] or "", ";".join(entry["modalities"]), ";".join(entry["untrained_modalities"]),
            ";".join(entry["labels"]),
        ] + [_number(entry["probs"].get(label)) for label in labels])
    return _write_rows(path, [*BASE_COLUMNS, *labels], rows)


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class _SpeakingTimes:
    """When each character speaks (union of its segments), answering "at time t?" by bisection."""

    def __init__(self, segments: list[dict]):
        spans: dict[str, list[tuple[float, float]]] = {}
        for segment in segments:
            if segment["character"] is not None:
                spans.setdefault(segment["character"], []).append((segment["start"], segment["end"]))
        self._merged: dict[str, tuple[list[float], list[float]]] = {}
        for character, items in spans.items():
            starts, ends = [], []
            for start, end in sorted(items):
                if starts and start <= ends[-1]:
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(start)
                    ends.append(end)
            self._merged[character] = (starts, ends)

    def __call__(self, character: str | None, t: float) -> bool:
        if character not in self._merged:
            return False
        starts, ends = self._merged[character]
        index = bisect.bisect_right(starts, t) - 1
        return index >= 0 and t <= ends[index]


def emotion_columns(expression_labels: list[str]) -> tuple[list[str], list[int | None]]:
    """py-feat's emotion columns (then any label it lacks), and where each is in ``expression``."""
    names = [FER_TO_FEAT.get(label, label) for label in expression_labels]
    columns = list(FEAT_EMOTIONS) + [name for name in names if name not in FEAT_EMOTIONS]
    return columns, [names.index(c) if c in names else None for c in columns]


def write_faces_csv(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    faces, fps = timeline["faces"], timeline["video"]["fps"]
    speakers = Speakers(timeline)
    speaking = _SpeakingTimes(timeline["segments"])
    columns, where = emotion_columns(faces["expression_labels"])
    video = timeline["video"]["path"]
    rows = []
    for track in faces["tracks"]:
        character = track["character"]
        name = speakers.of_character(character).label if character is not None else ""
        for detection in track["detections"]:
            t = detection["t"]
            x1, y1, x2, y2 = detection["box"]
            expression = detection["expression"]
            rows.append(((t, track["id"]), [
                round(t * fps), f"{seconds(t):.3f}", character or "", name, track["id"],
                round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1), detection["score"],
                *[_number(expression[i]) if i is not None and i < len(expression) else "" for i in where],
                speaking(character, t), video,
            ]))
    rows.sort(key=lambda row: row[0])
    return _write_rows(path, [*FACE_COLUMNS, *columns, "speaking", "input"], [row for _, row in rows])
