"""Features of a corpus's rows, extracted by ``pipeline run``'s own stages and cached per row.

Each video a row points to is analysed once by :class:`pipeline.run.PipelineRunner` (every stage, with the
stage cache kept in ``FEATURES/videos/<sha>/``), so a row's features are what ``pipeline run`` gives the
model for that stretch of that video. From that analysis a row takes, over its span:

- the character who speaks: the one the active-speaker stage attributes the span's speech to; when the
  speech is attributed to nobody, the only face on screen (or a face that clearly dominates the screen: at
  least twice the presence x size of the next). Otherwise the row cannot be used (it is reported);
- visual: that character's per-face feature rows in the span; acoustic: the acoustic frames of the span;
- text: the token embeddings of the row's Utterance column when it has one, else of the words the speech
  recogniser heard that character say in the span (any words when the face was chosen without attribution).

Features are stored raw (as extracted); the checkpoint being trained prepares them (its visual fill,
frame pooling, length caps: :meth:`pipeline.scoring.EmotionScorer.prepare`), so one cache serves any
checkpoint that reads the same extractors. Each row is one single-sample feature store (the project's
``ramer-feature-store`` format, written atomically) under ``FEATURES/rows/``, keyed by the video's SHA-256,
the span, the transcript and every extractor setting and model version: a rerun with the same settings
reads the store and runs no extractor at all (no model is even loaded). Rows that cannot be used are cached
too, with their reason.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from extractors.contracts import SpeechSegment, Word
from extractors.errors import MediaError
from extractors.io import write_atomically
from pipeline.config import PipelineConfig
from pipeline.stage_cache import StageCache, content_key, file_sha256
from pipeline.training.annotations import AnnotationRow, BadRow

log = logging.getLogger(__name__)

FEATURES_VERSION = 1      # bump when the way a row's features are cut from the analysis changes
DOMINANT_FACE_RATIO = 2.0  # a face counts as "the" face when its presence x size is this much the next one's

# (videos done, videos to analyse) -> None
Progress = Callable[[int, int], None]


@dataclass
class RowFeatures:
    """Raw feature sequences of one row's speaker ([T, D] float32; T = 0: the modality is absent)."""

    character: str
    text: np.ndarray
    visual: np.ndarray
    acoustic: np.ndarray
    speaker_choice: str      # how the character was chosen
    text_source: str         # "Utterance column", "speech recogniser" or "none"
    span: tuple[float, float]

    @property
    def present(self) -> tuple[bool, bool, bool]:
        return tuple(len(x) > 0 for x in (self.text, self.visual, self.acoustic))


@dataclass
class ExtractionReport:
    cached: int = 0            # rows read from the feature cache
    extracted: int = 0         # rows cut from a fresh analysis
    videos_analysed: int = 0   # videos the pipeline ran on (its own stage cache may still have helped)
    bad: list[BadRow] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"features: {self.cached} rows from the cache, {self.extracted} extracted "
                f"({self.videos_analysed} videos analysed), {len(self.bad)} unusable, {self.seconds:.1f} s")


def extraction_settings(config: PipelineConfig, acoustic_kind: str, whisper_blocks: int | None = None,
                        text_tuned_layers: Path | None = None) -> dict:
    """Everything that decides a row's features: stage settings and model versions (not the device)."""
    from pipeline.stages import STAGE_MODELS, StageFactory

    factory = StageFactory(config, text_tuned_layers=text_tuned_layers)
    settings = config.model_dump(mode="json", exclude={"device", "models"})
    models = {stage: factory.model_versions(stage) for stage in STAGE_MODELS}
    return {"version": FEATURES_VERSION, "settings": settings, "models": models, "acoustic_kind": acoustic_kind,
            "whisper_blocks": whisper_blocks}


def row_span(row: AnnotationRow, duration: float) -> tuple[float, float]:
    return (0.0, float(duration)) if row.whole_file else (row.start, row.end)


# ------------------------------------------------------------------------------------------ cache


class FeatureCache:
    """``folder/rows/<key[:2]>/<key>/`` (a one-sample feature store) beside ``<key>.json`` (what was chosen)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def key(self, row: AnnotationRow, video_sha: str, settings: dict) -> str:
        span = None if row.whole_file else [round(row.start, 3), round(row.end, 3)]
        return content_key({"video": video_sha, "span": span, "text": row.text, "extraction": settings})

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.folder / "rows" / key[:2]
        return base / key, base / f"{key}.json"

    def video_folder(self, video_sha: str) -> Path:
        return self.folder / "videos" / video_sha[:24]

    def load(self, key: str) -> RowFeatures | str | None:
        """The cached features, the cached reason the row is unusable, or None (not cached)."""
        from ramer_core.datasets import read_feature_store
        from ramer_core.errors import RamerInputError

        store, meta_path = self._paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("bad"):
                return str(meta["bad"])
            samples, _, _, _ = read_feature_store(store)
            sample = samples[0]
            arrays = {m: sample.features(m)[0, 0].numpy() for m in ("text", "visual", "acoustic")}
            return RowFeatures(character=meta["character"], speaker_choice=meta["speaker_choice"],
                               text_source=meta["text_source"], span=tuple(meta["span"]), **arrays)
        except (OSError, ValueError, KeyError, IndexError, RamerInputError) as error:
            log.warning("feature cache entry %s unreadable (%s); extracting again", meta_path, error)
            return None

    def store(self, key: str, features: RowFeatures | str, row: AnnotationRow) -> None:
        from ramer_core.datasets import FeatureDims, FeatureStoreWriter

        store, meta_path = self._paths(key)
        meta = {"video": str(row.video), "row": row.id}
        if isinstance(features, str):
            meta["bad"] = features
        else:
            dims = FeatureDims(features.text.shape[1], features.visual.shape[1], features.acoustic.shape[1])
            with FeatureStoreWriter(store, dims, overwrite=True) as writer:
                writer.add("row", features.character, torch.from_numpy(features.text),
                           torch.from_numpy(features.visual), torch.from_numpy(features.acoustic),
                           start=features.span[0], end=features.span[1], role="speaker")
            meta.update(character=features.character, speaker_choice=features.speaker_choice,
                        text_source=features.text_source, span=list(features.span))
        text = json.dumps(meta, indent=1)
        write_atomically(meta_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------------------------------ analysis


@dataclass
class VideoAnalysis:
    """What ``pipeline run`` computed for one video, read back from its stage cache."""

    visual: object                    # extractors.visual_features.VisualResult
    segments: list[SpeechSegment]     # final segmentation, with the attributed character
    acoustic: np.ndarray              # [frames, Da]
    frame_rate: float
    text_encoder: object              # extractors.text_features.TextEncoder (loads on first use)

    @classmethod
    def of_run(cls, runner, result, output: Path) -> VideoAnalysis:
        from extractors.visual_features import VisualResult
        from pipeline.run import STAGE_FOLDER

        cache = StageCache(output / STAGE_FOLDER)

        def stored(stage: str) -> tuple[dict, dict]:
            found = cache.load(stage, result.stages[stage].key)
            if found is None:  # the run has just written it
                raise RuntimeError(f"stage {stage} missing from {output / STAGE_FOLDER}")
            return found

        acoustic_data, acoustic_arrays = stored("acoustic")
        segments = [SpeechSegment(id=s["id"], start=s["start"], end=s["end"], text=s["text"],
                                  words=[Word(**w) for w in s["words"]], turn=s["voice"], character=s["character"],
                                  speaker_confidence=s["speaker_confidence"]) for s in result.document["segments"]]
        return cls(VisualResult.from_dict(*stored("visual")), segments, acoustic_arrays["frames"],
                   float(acoustic_data["frame_rate"]), runner.stages.get("text"))


def choose_speaker(visual, segments: list[SpeechSegment], start: float, end: float) -> tuple[str, str] | str:
    """(character, how it was chosen) of the one speaking in [start, end), or the reason nobody can be."""
    presence: dict[str, float] = {}
    for character in visual.characters:
        _, rows = visual.sequence(character.id, start, end)
        if len(rows):
            presence[character.id] = float(len(rows)) * _mean_face_area(visual, character, start, end)
    if not presence:
        return f"no face on screen between {start:.2f} and {end:.2f} s"
    spoken: dict[str, float] = {}
    for segment in segments:
        overlap = min(end, segment.end) - max(start, segment.start)
        if segment.character in presence and overlap > 0:
            spoken[segment.character] = spoken.get(segment.character, 0.0) + overlap
    if spoken:
        return max(spoken, key=spoken.get), "active speaker"
    if len(presence) == 1:
        return next(iter(presence)), "only face on screen"
    ranked = sorted(presence.values(), reverse=True)
    if ranked[0] >= DOMINANT_FACE_RATIO * ranked[1]:
        return max(presence, key=presence.get), "dominant face on screen"
    return (f"{len(presence)} faces on screen between {start:.2f} and {end:.2f} s and the speech there is "
            "attributed to none of them")


def _mean_face_area(visual, character, start: float, end: float) -> float:
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for tid in character.track_ids
             for d in visual.track(tid).detections if start <= d.t < end]
    return float(np.mean(areas)) if areas else 0.0


def row_features(analysis: VideoAnalysis, row: AnnotationRow) -> RowFeatures | str:
    """The row's features from its video's analysis, or why the row cannot be used."""
    start, end = row_span(row, analysis.visual.info.duration)
    chosen = choose_speaker(analysis.visual, analysis.segments, start, end)
    if isinstance(chosen, str):
        return chosen
    character, how = chosen
    _, visual = analysis.visual.sequence(character, start, end)
    encoder = analysis.text_encoder
    if row.text:
        text = (encoder.sentence_embeddings([row.text]) if encoder.config.granularity == "sentence"
                else encoder.token_embeddings(row.text))
        source = "Utterance column"
    else:
        text = encoder.span_features(analysis.segments, start, end,
                                     character=character if how == "active speaker" else None)
        source = "speech recogniser" if len(text) else "none"
    first = max(0, int(math.floor(start * analysis.frame_rate)))   # as pipeline.run cuts a segment's frames
    last = min(len(analysis.acoustic), int(math.ceil(end * analysis.frame_rate)))
    acoustic = analysis.acoustic[first:last] if last > first else analysis.acoustic[:0]
    return RowFeatures(character, np.ascontiguousarray(text, np.float32), np.ascontiguousarray(visual, np.float32),
                       np.ascontiguousarray(acoustic, np.float32), how, source, (start, end))


# ------------------------------------------------------------------------------------------ driver


def extract_features(rows: list[AnnotationRow], cache: FeatureCache, settings: dict,
                     make_runner: Callable[[], object], progress: Progress | None = None,
                     ) -> tuple[dict[int, RowFeatures], ExtractionReport]:
    """Features of every row (by CSV line) from the cache or a fresh analysis; unusable rows in the report.

    ``make_runner`` is called at most once, and only when some row is not cached.
    """
    started = time.perf_counter()
    report = ExtractionReport()
    found: dict[int, RowFeatures] = {}
    shas: dict[Path, str] = {}
    todo: dict[Path, list[tuple[AnnotationRow, str]]] = {}
    for row in rows:
        if row.video not in shas:
            shas[row.video] = file_sha256(row.video)
        key = cache.key(row, shas[row.video], settings)
        cached = cache.load(key)
        if cached is None:
            todo.setdefault(row.video, []).append((row, key))
            continue
        report.cached += 1
        if isinstance(cached, str):
            report.bad.append(BadRow(row.line, cached))
        else:
            found[row.line] = cached
    if todo:
        runner = make_runner()
        for done, (video, pending) in enumerate(todo.items()):
            results = _analyse(runner, video, shas[video], cache, pending)
            report.videos_analysed += 1
            for (row, key), features in zip(pending, results, strict=True):
                cache.store(key, features, row)
                report.extracted += 1
                if isinstance(features, str):
                    report.bad.append(BadRow(row.line, features))
                else:
                    found[row.line] = features
            if progress is not None:
                progress(done + 1, len(todo))
    report.bad.sort(key=lambda b: b.line)
    report.seconds = time.perf_counter() - started
    log.info("%s", report.summary())
    return found, report


def _analyse(runner, video: Path, sha: str, cache: FeatureCache, pending: list[tuple[AnnotationRow, str]]
             ) -> list[RowFeatures | str]:
    """Runs the pipeline on ``video`` and cuts every pending row out of it (the video's failure: every row's)."""
    output = cache.video_folder(sha)
    try:
        result = runner.run(video, output)
    except MediaError as error:  # no faces at all, too short, corrupt: a fact about the video (a missing model is not)
        return [f"video cannot be analysed: {error}"] * len(pending)
    analysis = VideoAnalysis.of_run(runner, result, output)
    return [row_features(analysis, row) for row, _ in pending]
