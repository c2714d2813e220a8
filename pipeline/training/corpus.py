"""``pipeline train|evaluate --annotations FILE.csv --videos DIR``: RAMer on a user's labelled videos.

Steps: read and check the rows (:mod:`pipeline.training.annotations`); report the unusable ones with
their CSV line numbers, then skip them or reject the run (exit 2, nothing written); extract or reuse each
row's features (:mod:`pipeline.training.features`); prepare them as the checkpoint reads them
(:meth:`pipeline.scoring.EmotionScorer.prepare`, the same preparation ``pipeline run`` applies) and build
samples the way the pipeline scores a speaker (:func:`pipeline.scoring.moment_sample`); then train with
``ramer_core.training`` (the trainer ``train --dataset`` uses) or evaluate.

Bad rows found by reading the CSV (missing file, unreadable or reversed times, unknown label, empty
speaker, a span past the video's end) stop a ``reject`` run before any model loads. Rows found unusable
while extracting (no face in the span, or several faces and the speech attributed to none) are settled
the same way once extraction is done: ``reject`` then writes no checkpoint, though the feature cache keeps
what was extracted (it is a cache: a later run reuses it).

Starting points: ``--from default`` fine-tunes the packaged default checkpoint (same sizes, labels and
input preparation, including its constant visual columns), ``--from DIR`` another checkpoint, and
``--from scratch`` a new RAMer (``--hidden-size`` etc., or ``--baseline late-fusion``) on the same labels,
reading every visual column. Model selection uses a seeded validation share of the rows (whole dialogues
when the corpus has at least 10 of them).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.progress import progress_bar
from pipeline.training.annotations import (
    MELD_PATTERN,
    AnnotationRow,
    Annotations,
    LabelMap,
    SpanMode,
    VideoRule,
    check_spans,
    describe_bad_rows,
    read_annotations,
)
from pipeline.training.features import (
    ExtractionReport,
    FeatureCache,
    RowFeatures,
    extract_features,
    extraction_settings,
)

if TYPE_CHECKING:
    from pipeline.scoring import EmotionScorer

log = logging.getLogger(__name__)

MODEL_OPTIONS = ("hidden_size", "layers", "text_layers", "visual_layers", "acoustic_layers", "heads", "dropout",
                 "queue_size", "ablation", "baseline")
MIN_DIALOGUES_TO_SPLIT_BY = 10


def default_feature_folder() -> Path:
    from extractors.model_store import project_cache_dir

    return project_cache_dir() / "corpus-features"


def check_corpus_paths(args: argparse.Namespace) -> None:
    """The CSV and the video folder exist (checked before any model loads)."""
    if args.videos is None:
        raise UserError("--annotations needs --videos DIR (the folder of the rows' video files)")
    if not Path(args.annotations).is_file():
        raise UserError(f"annotations file not found: {args.annotations}")
    if not Path(args.videos).is_dir():
        raise UserError(f"--videos {args.videos} is not a folder")


def read_corpus(args: argparse.Namespace, label_names: tuple[str, ...]) -> Annotations:
    """The checked rows; the unusable ones are reported, and with ``--on-bad-rows reject`` refused."""
    check_corpus_paths(args)
    rule = VideoRule(folder=args.videos, column=args.video_column, pattern=args.video_pattern or MELD_PATTERN,
                     span=SpanMode(args.span))
    annotations = read_annotations(args.annotations, LabelMap.from_arguments(label_names, args.labels), rule)
    check_spans(annotations)
    settle_bad_rows(annotations, args.on_bad_rows)
    return annotations


def settle_bad_rows(annotations: Annotations, policy: str) -> None:
    """Logs every bad row with its line; raises UserError under ``reject`` (or when no row is left)."""
    for bad in annotations.bad:
        log.warning("%s line %d: %s", annotations.path, bad.line, bad.reason)
    if annotations.bad and policy == "reject":
        raise UserError(f"{describe_bad_rows(annotations)}; --on-bad-rows reject: nothing written")
    if annotations.bad:
        log.warning("%s: skipping %d bad rows of %d", annotations.path, len(annotations.bad), annotations.total)
    if not annotations.rows:
        raise UserError(f"{annotations.path}: no usable rows ({len(annotations.bad)} bad)")


def text_of(scorer: EmotionScorer) -> str:
    """The text encoder a checkpoint reads, in words."""
    layers = scorer.text_tuned_layers
    if layers is None:
        return "the packaged MiniLM"
    from pipeline.stage_cache import file_sha256

    return f"MiniLM with tuned blocks {layers.name} (sha256 {file_sha256(layers)[:12]})"


def acoustic_of(scorer: EmotionScorer) -> str:
    """The acoustic features a checkpoint reads, in words (kind and, for whisper, the encoder blocks)."""
    blocks = scorer.acoustic_whisper_blocks
    return scorer.acoustic_kind + (f" (after {blocks} encoder blocks)" if scorer.acoustic_kind == "whisper" and blocks
                                   else "")


def corpus_features(args: argparse.Namespace, annotations: Annotations, checkpoint: Path | None,
                    scorer: EmotionScorer) -> tuple[dict[int, RowFeatures], ExtractionReport]:
    """Every usable row's raw features (cache or extraction); rows found unusable while extracting are
    settled like the others."""
    from pipeline.config import load_config

    config = load_config(args.config)
    cache = FeatureCache(args.features or default_feature_folder())

    def make_runner():
        runner = build_runner(config, checkpoint, getattr(args, "device", None))
        if acoustic_of(runner.scorer) != acoustic_of(scorer):
            raise UserError(f"the pipeline would extract {acoustic_of(runner.scorer)} acoustic features; the "
                            f"checkpoint reads {acoustic_of(scorer)}")
        if text_of(runner.scorer) != text_of(scorer):
            raise UserError(f"the pipeline would encode text with {text_of(runner.scorer)}; the checkpoint reads "
                            f"{text_of(scorer)}")
        return runner

    with progress_bar("features (videos)", quiet=getattr(args, "quiet", False)) as advance:
        features, report = extract_features(annotations.rows, cache, extraction_settings(config, scorer.acoustic_kind,
                                                                                scorer.acoustic_whisper_blocks,
                                                                                scorer.text_tuned_layers),
                                            make_runner, progress=advance)
    if report.bad:
        annotations.bad = sorted([*annotations.bad, *report.bad], key=lambda b: b.line)
        lines = {b.line for b in report.bad}
        annotations.rows = [row for row in annotations.rows if row.line not in lines]
        settle_bad_rows(annotations, args.on_bad_rows)
    return features, report


def build_runner(config, checkpoint: Path | None, device: str | None):
    """The pipeline that extracts the features (a seam: tests hand in the session's loaded runner)."""
    from pipeline.run import PipelineRunner

    return PipelineRunner(config, checkpoint=checkpoint, device=device if device in ("cpu", "cuda") else None)


# ------------------------------------------------------------------------------------------ samples


def build_dataset(rows: list[AnnotationRow], features: dict[int, RowFeatures], scorer, name: str, source: str):
    """A labelled RamerDataset of the rows, each prepared as ``pipeline run`` prepares the speaker of a moment."""
    from extractors.moments import ModalityInputs
    from pipeline.config import PipelineConfig
    from pipeline.scoring import moment_sample
    from ramer_core.datasets import FeatureDims, RamerDataset

    config = scorer.model.config
    limits = PipelineConfig().moments
    samples = []
    for row in rows:
        f = features[row.line]
        entry = ModalityInputs(moment=row.id, character=f.character, role="speaker", text=f.text,
                               visual=f.visual, acoustic=f.acoustic)
        sample = moment_sample([scorer.prepare(entry, limits)], 0, config)
        labels = torch.tensor([float(label in row.labels) for label in config.label_names])
        samples.append(replace(sample, labels=labels, key=f"{row.id} (line {row.line})"))
    dims = FeatureDims(config.text_dim, config.visual_dim, config.acoustic_dim, config.personality_dim)
    return RamerDataset(samples, config.label_names, dims, name=name, source=source)


def split_rows(rows: list[AnnotationRow], valid_fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid): a seeded share of whole dialogues (10 or more), else of rows; both non-empty."""
    if len(rows) < 2:
        raise UserError(f"{len(rows)} usable row(s): training needs at least 2 (one to train on, one to validate)")
    dialogues = sorted({row.dialogue for row in rows})
    rng = np.random.RandomState(seed)
    if len(dialogues) >= MIN_DIALOGUES_TO_SPLIT_BY:
        order = rng.permutation(len(dialogues))
        held = {dialogues[i] for i in order[: max(1, int(round(len(dialogues) * valid_fraction)))]}
        valid = [row for row in rows if row.dialogue in held]
    else:
        order = rng.permutation(len(rows))
        held_rows = set(order[: max(1, int(round(len(rows) * valid_fraction)))].tolist())
        valid = [row for i, row in enumerate(rows) if i in held_rows]
    train = [row for row in rows if row not in valid]
    return train, valid


# ------------------------------------------------------------------------------------------ models


def load_start(args: argparse.Namespace):
    """(scorer holding the model to train, what it starts from, the checkpoint the features follow)."""
    from pipeline.scoring import DEFAULT_CHECKPOINT, EmotionScorer

    start = args.start
    explicit = [name for name in MODEL_OPTIONS if getattr(args, name, None) != args.parser_defaults.get(name)]
    if start == "scratch":
        base = EmotionScorer.load(None)
        return new_model_scorer(args, base), "scratch", None
    if explicit:
        raise UserError(f"--{explicit[0].replace('_', '-')} changes the model, which --from {start} fixes; "
                        "use --from scratch for a new model")
    path = None if start == "default" else Path(start)
    scorer = EmotionScorer.load(path)
    # the input preparation stays (the weights read what they were trained on); the default's mark does not
    config = scorer.model.config
    config.extra = {k: v for k, v in dict(config.extra).items() if k != "default_model"}
    return scorer, str(DEFAULT_CHECKPOINT if path is None else path), path


def new_model_scorer(args: argparse.Namespace, base):
    """A fresh RAMer on the default model's labels and input preparation, reading every visual column."""
    from pipeline.commands.train import build_config
    from pipeline.scoring import EmotionScorer
    from ramer_core.datasets import DatasetSplits, FeatureDims, RamerDataset
    from ramer_core.model import RamerModel

    base_config = base.model.config
    dims = FeatureDims(base_config.text_dim, base_config.visual_dim, base_config.acoustic_dim)
    empty = RamerDataset([], base_config.label_names, dims)
    config = build_config(args, DatasetSplits(empty, empty, empty))
    extra = {k: v for k, v in dict(base_config.extra).items() if k in ("acoustic_features", "acoustic_pool_frames",
                                                                        "acoustic_whisper_blocks", "visual_feature_names",
                                                                        "text_tuned_layers")}
    config = replace(config, extra=extra)
    # the default's tuned text blocks stay: the features are extracted through them
    return EmotionScorer(RamerModel(config), Path(args.out), True, "", base.device, base.text_tuned_layers)


def corpus_card(args, annotations: Annotations, report: ExtractionReport, start: str, base_card: dict,
                train_set, valid_set, training, result, features: dict[int, RowFeatures]) -> dict:
    """The model card: the data is the user's corpus, and what the checkpoint started from."""
    from pipeline.scoring import DEFAULT_CHECKPOINT
    from ramer_core.training import json_safe

    modalities = ("text", "visual", "acoustic")
    present = {m: sum(f.present[i] for f in features.values()) for i, m in enumerate(modalities)}
    choices: dict[str, int] = {}
    for f in features.values():
        choices[f.speaker_choice] = choices.get(f.speaker_choice, 0) + 1
    trained = sorted({*base_card.get("trained_modalities", []), *[m for m in modalities if present[m]]},
                     key=modalities.index) if start != "scratch" else [m for m in modalities if present[m]]
    from_default = start == str(DEFAULT_CHECKPOINT)
    card = {
        "name": f"RAMer trained on {Path(args.annotations).name}",
        "training_data": {
            "corpus": f"the user's labelled videos: {args.annotations} (MELD layout), videos in {args.videos}",
            "rows": annotations.total, "rows_used": len(annotations.rows),
            "bad_rows": [{"line": b.line, "reason": b.reason} for b in annotations.bad[:100]],
            "train": train_set.describe(), "valid": valid_set.describe(),
            "modalities_present": present, "speaker_chosen_by": choices,
            "split": "seeded share of the rows (whole dialogues from 10 dialogues on)",
        },
        "started_from": ("the packaged default checkpoint (fine-tuned: its sizes, labels and input preparation, "
                         "including its constant visual columns)" if from_default else
                         "random initialisation (--from scratch)" if start == "scratch" else
                         f"checkpoint {start} (fine-tuned)"),
        "base_model": None if start == "scratch" else {k: base_card.get(k) for k in
                                                        ("name", "version", "intended_use", "licences") if k in base_card},
        "intended_use": (base_card.get("intended_use") if start != "scratch" else None)
        or "as licensed for the user's corpus; validated on nothing but the corpus's own validation rows",
        "trained_modalities": trained,
        "extractors": "pipeline run's own stages (visual, vad, asr, diarization, speaking, acoustic, text) on "
                      "each row's video; the row's speaker is the face the active-speaker stage attributes the "
                      "span's speech to; text from the Utterance column when present, else the recogniser's",
        "features": {"cached": report.cached, "extracted": report.extracted, "videos_analysed": report.videos_analysed},
        "training": asdict(training),
        "result": result.serialize(),
        "thresholds": list(result.threshold.thresholds) if training.threshold_search == "per_label" else None,
        "metrics": {"valid": result.valid_metrics},
        "torch_version": torch.__version__,
    }
    return json_safe(card)


# ------------------------------------------------------------------------------------------ commands


def train_on_corpus(args: argparse.Namespace, training) -> int:
    """``train --annotations``: rows -> features -> RAMer trained from ``--from`` -> ``--out`` (atomically)."""
    from ramer_core.training import train

    check_corpus_paths(args)
    scorer, start, feature_checkpoint = load_start(args)
    base_card = dict(scorer.card) if start != "scratch" else {}
    annotations = read_corpus(args, tuple(scorer.labels))
    features, report = corpus_features(args, annotations, feature_checkpoint, scorer)
    train_rows, valid_rows = split_rows(annotations.rows, args.valid_fraction, args.seed)
    source = str(args.annotations)
    train_set = build_dataset(train_rows, features, scorer, "annotations:train", source)
    valid_set = build_dataset(valid_rows, features, scorer, "annotations:valid", source)
    model = scorer.model
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    with progress_bar("training", quiet=getattr(args, "quiet", False)) as advance:

        def progress(event: dict) -> None:  # ramer_core.training logs each epoch itself
            if event["stage"] == "step":
                advance(event["step"], event["total_steps"])

        result = train(model, train_set, valid_set, training, progress=progress)
    changed = sum(not torch.equal(before[name], tensor.cpu()) for name, tensor in model.state_dict().items())
    card = corpus_card(args, annotations, report, start, base_card, train_set, valid_set, training, result, features)
    model.save_pretrained(args.out, card=card, companions=scorer.companions)
    log.info("saved %s: %d train / %d valid rows, best epoch %d, valid micro-F1 %.4f, %d of %d tensors changed",
             args.out, len(train_set), len(valid_set), result.best_epoch, result.threshold.micro_f1, changed,
             len(before))
    return 0


def evaluate_on_corpus(args: argparse.Namespace) -> dict:
    """``evaluate --annotations``: the checkpoint's multi-label metrics on every usable row."""
    from pipeline.scoring import EmotionScorer
    from ramer_core.training import evaluate, pick_device

    check_corpus_paths(args)
    device = pick_device(args.device)
    scorer = EmotionScorer.load(args.checkpoint, device=str(device))
    annotations = read_corpus(args, tuple(scorer.labels))
    features, _ = corpus_features(args, annotations, args.checkpoint, scorer)
    dataset = build_dataset(annotations.rows, features, scorer, f"annotations:{Path(args.annotations).name}",
                            str(args.annotations))
    return {"dataset": dataset, **evaluate(scorer.model, dataset, threshold=args.threshold, device=device)}
