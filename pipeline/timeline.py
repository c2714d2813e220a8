"""The timeline JSON (schema_version 1): pydantic models, the published JSON Schema, validated writes.

The models are the single definition; ``pipeline/schemas/timeline.schema.json`` is generated from them
(``python -m pipeline.timeline`` rewrites it; a test keeps the two equal) so programs in other languages
can validate a timeline without this package. Every write validates the document against that file and
replaces the target atomically: a reader sees the old timeline or the whole new one.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from extractors.io import write_atomically
from pipeline.errors import UserError

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schemas") / "timeline.schema.json"
Modality = Literal["text", "visual", "acoustic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoEntry(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    duration: float = Field(ge=0, description="seconds from the first video frame")
    fps: float = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    has_audio: bool
    start_offset: float = Field(0.0, description="container time of the first video frame (removed from all times)")


class ModelEntry(_Strict):
    checkpoint: str
    labels: list[str]
    threshold: float
    thresholds: dict[str, float] | None = Field(None, description="per-label thresholds, when the checkpoint has them")
    trained_modalities: list[Modality] = Field(description="modalities the checkpoint has trained evidence for")
    card: dict[str, Any] = Field(default_factory=dict, description="the checkpoint's model card")


class Thumbnail(_Strict):
    t: float
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in source pixels")
    file: str | None = Field(None, description="JPEG crop beside the JSON, relative to it")


class CharacterEntry(_Strict):
    id: str
    name: str | None
    tracks: list[str]
    screen_time: float = Field(ge=0)
    speaking_time: float = Field(ge=0)
    thumbnail: Thumbnail | None
    embedding: list[float] | None = Field(
        None, description="mean face identity embedding (L2-normalised; faces.embedder says which model), "
                          "for matching characters across episodes")


class DetectionEntry(_Strict):
    t: float
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in source pixels")
    score: float = Field(ge=0, description="face detector confidence")
    expression: list[float] = Field(description="per-face expression probabilities, faces.expression_labels order")


class TrackEntry(_Strict):
    id: str
    character: str | None
    shot: int
    detections: list[DetectionEntry]


class ShotEntry(_Strict):
    index: int
    start: float
    end: float


class FacesEntry(_Strict):
    """Every analysed face, so overlays and per-frame exports need not re-run the analysis."""
    analysis_fps: float = Field(gt=0, description="frames analysed per second of video")
    embedder: str = Field(description="the face identity model behind characters[].embedding")
    expression_labels: list[str] = Field(description="label order of detections[].expression (fer's classifier)")
    shots: list[ShotEntry]
    tracks: list[TrackEntry]


class WordEntry(_Strict):
    text: str
    start: float
    end: float
    prob: float


class SegmentEntry(_Strict):
    id: str
    start: float
    end: float
    character: str | None = Field(description="on-screen character talking; null when off screen or unknown")
    speaker_confidence: float = Field(ge=0, le=1)
    voice: str | None = Field(description="diarization cluster (SPK0, ...)")
    text: str
    words: list[WordEntry]


class TimelineEntry(_Strict):
    character: str
    start: float
    end: float
    moment: str
    segment: str | None
    role: Literal["speaker", "listener"]
    modalities: list[Modality] = Field(description="modalities present for this character in this moment")
    untrained_modalities: list[Modality] = Field(
        description="modalities used here for which the checkpoint has no trained evidence")
    probs: dict[str, float]
    labels: list[str]


class StageEntry(_Strict):
    seconds: float = Field(ge=0)
    cached: bool
    key: str


class Provenance(_Strict):
    package_version: str
    created: str
    config: dict[str, Any]
    models: dict[str, dict[str, Any]] = Field(description="name -> {source, version, path}")
    device: str
    stages: dict[str, StageEntry]
    warnings: list[str] = Field(default_factory=list)


class Timeline(_Strict):
    schema_version: Literal[1]
    video: VideoEntry
    model: ModelEntry
    characters: list[CharacterEntry]
    faces: FacesEntry
    segments: list[SegmentEntry]
    timeline: list[TimelineEntry]
    provenance: Provenance


def json_schema() -> dict:
    schema = Timeline.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ramer-timelines.invalid/timeline.schema.json"
    schema["title"] = "RAMer emotion timeline (schema_version 1)"
    return schema


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate(document: dict) -> None:
    """Raises UserError naming the first problems when ``document`` does not follow the schema."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:3])
        raise UserError(f"timeline does not follow {SCHEMA_PATH.name}: {where}")


def write_timeline(document: dict, path: str | os.PathLike) -> Path:
    """Validates ``document`` against the schema, then writes it atomically as indented UTF-8 JSON."""
    validate(document)

    def write(temporary: Path) -> None:
        # Streamed into the file: json.dumps with an indent joins millions of small chunks into one string
        # (about 200 MB beside the document of a 60-minute run, the run's peak); json.dump writes them as made.
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(document, file, indent=1, ensure_ascii=False, allow_nan=False)
            file.write("\n")

    return write_atomically(path, write)


def read_timeline(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a readable JSON file ({error})") from None
    validate(document)
    return document


if __name__ == "__main__":  # regenerate the published schema
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
    print(SCHEMA_PATH)
