"""Feature caches for the default checkpoint: the real labelled sets encoded by the project's own extractors.

Run ``python -m benchmarks.default_model_features [text|acoustic|visual|whisper|geometry|all]`` from the
repository root; each cache is written once (atomically) under ``$RAMER_CACHE_DIR/default_model`` (default
``~/.cache/ramer-timelines/default_model``), skipped when present, and read by ``benchmarks/default_model.py``.
Nothing here goes into the repository. ``acoustic --actors 1 6`` (and 7 12, 13 18, 19 24) builds the speech
cache in four parts that can run in parallel processes; ``text --only NAME`` builds one text cache.

- text: MELD (train/dev/test utterances, 7 labels) and GoEmotions-Ekman (dev/test, and train in chunks of
  TEXT_CHUNK comments, multi-label) through :class:`extractors.text_features.TextEncoder`: the hidden states
  after the frozen blocks (``lower_states``, [L, 384] per text with [CLS] and [SEP], at most 256 word pieces).
  The rebuild tunes the blocks above on them and runs those blocks (``upper_tokens``) to get what
  ``span_features`` gives the pipeline. Texts are batched by length; the attention mask makes the padded
  batch give the same rows.
- acoustic: RAVDESS speech (1,440 clips; "calm" is mapped to neutral) through the pipeline's path for a
  speaker: silero VAD regions as the speaker's turns, then ``speaker_span`` of the whole-clip frames; the
  47-d librosa set (``acoustic``) and the whisper-tiny.en encoder states after DEFAULT_WHISPER_BLOCKS blocks
  (``whisper``, 384-d).
- visual: FER2013 (Training / PublicTest / PrivateTest): the expression probabilities of each face resized
  to the mini-Xception's 64x64 input (it was trained on these images resized so), named like
  ``VISUAL_FEATURE_NAMES``; optionally (``geometry``) the five-point geometry from MTCNN on the face
  upscaled to 96 px inside a 16 px replicated border (found on about 84 % of faces in a 120-face probe;
  NaN where not found). Columns not cached here are "not measured": the trainer fills them with constants
  that the checkpoint's card lists (``visual_fill``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script or with -m

from extractors.io import write_atomically

log = logging.getLogger(__name__)

LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
SHARED = Path(os.environ.get("RAMER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"
CACHE = Path(os.environ.get("RAMER_CACHE_DIR", Path.home() / ".cache" / "ramer-timelines")) / "default_model"

# RAVDESS emotion code -> label ("02" calm -> neutral: calm delivery is what TV neutral speech sounds like)
RAVDESS_LABELS = {"01": "neutral", "02": "neutral", "03": "joy", "04": "sadness", "05": "anger",
                  "06": "fear", "07": "disgust", "08": "surprise"}
FER_FOLDERS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy", "neutral": "neutral",
               "sad": "sadness", "surprise": "surprise"}
FER_SPLITS = ("Training", "PublicTest", "PrivateTest")
FER_EXPRESSION_SIZE = 64        # the mini-Xception's input
FER_DETECT_SIZE, FER_DETECT_BORDER, FER_MIN_FACE = 96, 16, 56


@dataclass
class SequenceSet:
    """Variable-length feature sequences of one split, concatenated: rows offsets[i]:offsets[i+1] are sample i."""

    ids: list[str]
    offsets: np.ndarray          # [N + 1] int64
    data: np.ndarray             # [sum T, D] float16 (float32 sets are stored as float16 too)
    labels: np.ndarray           # [N, len(LABELS)] float32 multi-hot
    groups: list[str] = field(default_factory=list)   # speaker / actor / dialogue per sample ('' if none)
    columns: list[str] = field(default_factory=list)  # feature names (visual: mapped by name at assembly)

    def __len__(self) -> int:
        return len(self.ids)

    def sequence(self, index: int) -> np.ndarray:
        return self.data[self.offsets[index]: self.offsets[index + 1]]

    def pooled(self) -> np.ndarray:
        """[N, 2D] float32 mean and standard deviation over time (NaN-aware; zeros for empty sequences)."""
        out = np.zeros((len(self), 2 * self.data.shape[1]), np.float32)
        for i in range(len(self)):
            x = self.sequence(i).astype(np.float32)
            if len(x):
                out[i] = np.concatenate([np.nanmean(x, 0), np.nanstd(x, 0)])
        return np.nan_to_num(out)

    def serialize(self) -> dict:
        return {"samples": len(self), "rows": int(self.offsets[-1]), "dim": int(self.data.shape[1])}

    def save(self, path: Path) -> Path:
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.savez(handle, ids=np.array(self.ids), offsets=self.offsets, data=self.data,
                         labels=self.labels, groups=np.array(self.groups),
                         columns=np.array(self.columns))
        return write_atomically(path, write)

    @classmethod
    def load(cls, path: Path) -> SequenceSet:
        with np.load(path, allow_pickle=False) as file:
            return cls(file["ids"].tolist(), file["offsets"], file["data"], file["labels"], file["groups"].tolist(),
                       file["columns"].tolist())

    @classmethod
    def build(cls, ids: list[str], sequences: list[np.ndarray], labels: np.ndarray, groups: list[str],
              columns: list[str] | None = None) -> SequenceSet:
        offsets = np.zeros(len(sequences) + 1, np.int64)
        offsets[1:] = np.cumsum([len(s) for s in sequences])
        data = np.concatenate(sequences).astype(np.float16)
        return cls(ids, offsets, data, labels.astype(np.float32), groups, list(columns or []))


def multi_hot(names: list[str]) -> np.ndarray:
    row = np.zeros(len(LABELS), np.float32)
    for name in names:
        row[LABELS.index(name)] = 1.0
    return row


def cache_path(name: str) -> Path:
    return CACHE / f"{name}.npz"


# ------------------------------------------------------------------------------------------- text


def text_corpora() -> dict[str, tuple[list[str], list[str], np.ndarray, list[str]]]:
    """{set name: (ids, texts, labels [N, 7], groups)} for MELD and GoEmotions-Ekman, official splits."""
    import pandas as pd

    corpora = {}
    for split in ("train", "dev", "test"):
        frame = pd.read_csv(DATA / "meld" / f"{split}_sent_emo.csv")
        ids = [f"dia{d}_utt{u}" for d, u in zip(frame.Dialogue_ID, frame.Utterance_ID, strict=True)]
        labels = np.stack([multi_hot([e]) for e in frame.Emotion])
        corpora[f"meld_{split}"] = (ids, frame.Utterance.astype(str).tolist(), labels,
                                    [f"dia{d}" for d in frame.Dialogue_ID])
    ekman = (DATA / "goemotions" / "ekman" / "labels.txt").read_text().split()
    for split in ("train", "dev", "test"):
        frame = pd.read_csv(DATA / "goemotions" / "ekman" / f"{split}.tsv", sep="\t", header=None,
                            names=["text", "labels", "id"], quoting=3, dtype=str, keep_default_na=False)
        labels = np.stack([multi_hot([ekman[int(i)] for i in str(row).split(",")]) for row in frame.labels])
        corpora[f"goemotions_{split}"] = (frame.id.tolist(), frame.text.tolist(), labels, [""] * len(frame))
    return corpora


TEXT_CHUNK = 5000   # GoEmotions train is cached in chunks of this many comments (a partial cache is usable)


def text_cache_names() -> list[str]:
    """Cache names in the order they are built (the first training chunk and the evaluation splits first)."""
    sizes = {name: len(ids) for name, (ids, *_rest) in text_corpora().items()}
    chunks = [f"goemotions_train_{i:02d}" for i in range(-(-sizes["goemotions_train"] // TEXT_CHUNK))]
    return ["meld_train", "meld_dev", "meld_test", chunks[0], "goemotions_dev", "goemotions_test", *chunks[1:]]


def text_states_layer() -> int:
    """The block the cached text states are taken after: the first one the default model tunes."""
    from pipeline.training.text_layers import TextLayerTuning

    return TextLayerTuning.first_layer


def text_cache(name: str) -> Path:
    return cache_path(f"text_states{text_states_layer()}_{name}")


def build_text(only: list[str] | None = None) -> None:
    from extractors.text_features import TextEncoder

    corpora = text_corpora()
    encoder = TextEncoder(device="cpu")
    layer = text_states_layer()
    for name in text_cache_names():
        path = text_cache(name)
        if path.exists() or (only and name not in only):
            continue
        if name.startswith("goemotions_train_"):
            first = int(name.rsplit("_", 1)[1]) * TEXT_CHUNK
            ids, texts, labels, groups = (part[first: first + TEXT_CHUNK] for part in corpora["goemotions_train"])
        else:
            ids, texts, labels, groups = corpora[name]
        started = time.perf_counter()
        states = encoder.lower_states(list(texts), layer)            # [L, D] per text, [CLS] and [SEP] kept
        SequenceSet.build(list(ids), states, np.asarray(labels), list(groups)).save(path)
        log.info("%s: %d texts in %.0f s", name, len(texts), time.perf_counter() - started)


# --------------------------------------------------------------------------------------- acoustic


def ravdess_files() -> list[tuple[str, Path, str, str]]:
    """(id, path, label, actor) for every RAVDESS speech clip, sorted."""
    out = []
    for path in sorted((DATA / "ravdess_speech").glob("Actor_*/*.flac")):
        match = re.fullmatch(r"03-01-(\d\d)-\d\d-\d\d-\d\d-(\d\d)", path.stem)
        if match:
            out.append((path.stem, path, RAVDESS_LABELS[match.group(1)], match.group(2)))
    return out


ACTOR_PARTS = ((1, 6), (7, 12), (13, 18), (19, 24))   # the cache may be built in these parts, in parallel


def _cache_kind(kind: str) -> str:
    """Cache name of an acoustic kind: the whisper states are named by the encoder blocks run."""
    from extractors.acoustic_features import DEFAULT_WHISPER_BLOCKS

    return f"whisper-blocks{DEFAULT_WHISPER_BLOCKS}" if kind == "whisper" else kind


def load_acoustic(kind: str) -> SequenceSet:
    """The whole RAVDESS cache of `kind`, from one file or from its ACTOR_PARTS."""
    kind = _cache_kind(kind)
    whole = cache_path(f"acoustic_{kind}_ravdess")
    if whole.exists():
        return SequenceSet.load(whole)
    parts = [SequenceSet.load(cache_path(f"acoustic_{kind}_ravdess_actors{a:02d}-{b:02d}")) for a, b in ACTOR_PARTS]
    sequences = [p.sequence(i) for p in parts for i in range(len(p))]
    return SequenceSet.build([i for p in parts for i in p.ids], sequences, np.concatenate([p.labels for p in parts]),
                             [g for p in parts for g in p.groups])


def acoustic_cached(kind: str) -> bool:
    kind = _cache_kind(kind)
    return cache_path(f"acoustic_{kind}_ravdess").exists() or all(
        cache_path(f"acoustic_{kind}_ravdess_actors{a:02d}-{b:02d}").exists() for a, b in ACTOR_PARTS)


def _build_acoustic(kind: str, actors: tuple[int, int] | None = None) -> None:
    from extractors.acoustic_features import (
        DEFAULT_WHISPER_BLOCKS,
        AcousticFeatureExtractor,
        WhisperEncoderFeatures,
    )
    from extractors.audio import load_audio
    from extractors.contracts import SpeakerTurn
    from extractors.vad import VoiceActivityDetector

    path = cache_path(f"acoustic_{_cache_kind(kind)}_ravdess" + (f"_actors{actors[0]:02d}-{actors[1]:02d}" if actors else ""))
    if path.exists() or acoustic_cached(kind):
        return
    files = [f for f in ravdess_files() if actors is None or actors[0] <= int(f[3]) <= actors[1]]
    vad = VoiceActivityDetector()
    extractor = (AcousticFeatureExtractor() if kind == "librosa"
                 else WhisperEncoderFeatures(blocks=DEFAULT_WHISPER_BLOCKS, device="cpu"))
    sequences: list[np.ndarray] = []
    started = time.perf_counter()
    for count, (_, clip, _, _) in enumerate(files):
        audio = load_audio(clip)
        duration = len(audio) / 16000
        # the speaker's turns as the pipeline has them (VAD regions); the whole clip when VAD hears nothing
        turns = [SpeakerTurn(r.start, r.end, "S") for r in vad.detect(audio)] or [SpeakerTurn(0.0, duration, "S")]
        sequences.append(extractor.speaker_span(extractor.frames(audio), turns, "S", 0.0, duration))
        if count % 200 == 0:
            log.info("RAVDESS %s %d/%d (%.0f s)", kind, count, len(files), time.perf_counter() - started)
    labels = np.stack([multi_hot([label]) for _, _, label, _ in files])
    SequenceSet.build([f[0] for f in files], sequences, labels, [f[3] for f in files]).save(path)


def build_acoustic(actors: tuple[int, int] | None = None) -> None:
    _build_acoustic("librosa", actors)


def build_whisper(actors: tuple[int, int] | None = None) -> None:
    _build_acoustic("whisper", actors)


# ----------------------------------------------------------------------------------------- visual


def fer_files() -> dict[str, list[tuple[str, Path, str]]]:
    """{official split: [(id, path, label)]}, sorted by id."""
    splits: dict[str, list[tuple[str, Path, str]]] = {s: [] for s in FER_SPLITS}
    for path in sorted((DATA / "fer2013").glob("*/*/*.jpg")):
        split = path.name.split("_", 1)[0]
        splits[split].append((path.stem, path, FER_FOLDERS[path.parent.name]))
    return {s: sorted(files) for s, files in splits.items()}


def _fer_gray(files: list[tuple[str, Path, str]]) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for _, p, _ in files]   # [48, 48] uint8 each


def build_visual(batch_size: int = 256) -> None:
    """Expression probabilities of every FER2013 face (columns named as in VISUAL_FEATURE_NAMES)."""
    import cv2

    from extractors.expression import EXPRESSION_LABELS, ExpressionClassifier

    expression = ExpressionClassifier(device="cpu", batch_size=batch_size)
    columns = [f"expression_{label}" for label in EXPRESSION_LABELS]
    for split, files in fer_files().items():
        path = cache_path(f"visual_fer_{split}")
        if path.exists():
            continue
        started = time.perf_counter()
        rows = np.zeros((len(files), len(columns)), np.float32)
        for first in range(0, len(files), batch_size):
            gray = _fer_gray(files[first: first + batch_size])
            crops = np.stack([cv2.resize(g, (FER_EXPRESSION_SIZE,) * 2) for g in gray])     # [B, 64, 64]
            rows[first: first + len(gray)] = expression.predict_crops(crops)
        labels = np.stack([multi_hot([label]) for _, _, label in files])
        SequenceSet.build([f[0] for f in files], list(rows[:, None, :]), labels, [""] * len(files), columns).save(path)
        log.info("FER %s: expression of %d faces (%.0f s)", split, len(files), time.perf_counter() - started)


def build_geometry() -> None:
    """Five-point geometry of the FER2013 faces from MTCNN on the upscaled face; NaN where none is found."""
    import cv2

    from extractors.faces import FaceDetector, FaceDetectorConfig
    from extractors.visual_features import GEOMETRY_NAMES, landmark_geometry

    detector = FaceDetector(FaceDetectorConfig(min_face_size=FER_MIN_FACE, batch_size=8, device="cpu"))
    frame_side = FER_DETECT_SIZE + 2 * FER_DETECT_BORDER
    for split, files in fer_files().items():
        path = cache_path(f"visual_fer_geometry_{split}")
        if path.exists():
            continue
        started = time.perf_counter()
        rows = np.full((len(files), len(GEOMETRY_NAMES)), np.nan, np.float32)   # NaN: no face found
        for first in range(0, len(files), 64):
            frames = [cv2.cvtColor(cv2.copyMakeBorder(cv2.resize(g, (FER_DETECT_SIZE,) * 2, interpolation=cv2.INTER_CUBIC),
                                                      *(FER_DETECT_BORDER,) * 4, cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2RGB)
                      for g in _fer_gray(files[first: first + 64])]                        # [128, 128, 3]
            for offset, found in enumerate(detector.detect(frames, [0.0] * len(frames))):
                if found:   # the best-scoring face (sorted by score)
                    rows[first + offset] = landmark_geometry(found[0], frame_side)
            if first % 2560 == 0:
                log.info("FER geometry %s %d/%d (%.0f s)", split, first, len(files), time.perf_counter() - started)
        labels = np.stack([multi_hot([label]) for _, _, label in files])
        SequenceSet.build([f[0] for f in files], list(rows[:, None, :]), labels, [""] * len(files),
                          list(GEOMETRY_NAMES)).save(path)
        log.info("FER %s: geometry found on %.1f %% of %d faces (%.0f s)", split,
                 100 * np.isfinite(rows[:, 0]).mean(), len(files), time.perf_counter() - started)


BUILDERS = {"text": build_text, "acoustic": build_acoustic, "visual": build_visual, "whisper": build_whisper,
            "geometry": build_geometry}


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="*", default=["all"], choices=[*BUILDERS, "all"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="text caches to build (e.g. goemotions_test); default: all")
    parser.add_argument("--actors", type=int, nargs=2, help="acoustic: one of the ACTOR_PARTS (first last), "
                        "so parts can be built in parallel processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in (list(BUILDERS) if "all" in args.what else args.what):
        if name == "text":
            build_text(only=args.only)
        elif name in ("acoustic", "whisper"):
            BUILDERS[name](tuple(args.actors) if args.actors else None)
        else:
            BUILDERS[name]()


if __name__ == "__main__":
    main()
