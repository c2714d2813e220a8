"""``python -m pipeline train --dataset KIND PATH --out DIR``: train RAMer on a benchmark and save it.

The checkpoint (``model.safetensors`` + ``config.json`` with the model card: training data,
settings, validation and test metrics, the threshold chosen on validation) is written by the
model's ``save_pretrained``. Defaults follow DESIGN.md (AdamW lr 5e-5, weight decay 0.01, warm-up
0.1, clipping 1.0, batch 64, seed 42); ``--ablation`` switches one part of RAMer off and
``--baseline late-fusion`` trains the late-fusion baseline with the same encoders.

``--preset mosei-paper|memor-paper|m3ed-paper`` sets what the public code runs with (any option
given explicitly wins): 150 epochs (RAMer ``train.sh``; M3ED: 20, CARAT ``train_m3ed.sh``), lr 5e-5,
warm-up-linear over 10 %, batch 64, a fixed decision threshold 0.25 with ``p > 0.25``, model selection
on validation micro-F1 at that threshold (no threshold search), layers text/visual/acoustic 3/3/3
(M3ED: 6/4/4), seed 42 (M3ED: 1), and MEmoR's class-balanced sampler for MEmoR.

``--annotations FILE.csv --videos DIR`` trains on the user's labelled videos instead: a MELD-layout CSV
(Dialogue_ID, Utterance_ID, Speaker, Emotion, Season, Episode, StartTime, EndTime; optional Utterance),
each row's video span run through ``pipeline run``'s own extractors (features cached, so a rerun
extracts nothing), starting ``--from default`` (fine-tune the packaged checkpoint), ``--from DIR`` or
``--from scratch``. Rows that cannot be used are reported with their line numbers and skipped, or with
``--on-bad-rows reject`` the run stops (exit 2) before anything is written. See pipeline.training.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline.errors import UserError
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """``--dataset KIND [PATH]`` or ``--annotations FILE.csv`` (with the corpus options): one is required."""
    from pipeline.training.annotations import add_corpus_arguments
    from ramer_core.dataset_kinds import DATASET_KINDS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", nargs="+", metavar="KIND [PATH]",
                        help=f"benchmark kind ({', '.join(DATASET_KINDS)}) and its file or folder "
                             "(synthetic needs no path)")
    source.add_argument("--annotations", type=Path, metavar="FILE.csv",
                        help="labelled videos in the MELD layout (with --videos DIR; see below)")
    add_corpus_arguments(parser)


def parse_dataset(values: list[str], seed: int):
    from ramer_core.datasets import DATASET_KINDS, load_dataset

    kind, rest = values[0], values[1:]
    if kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASET_KINDS)}")
    if len(rest) > 1 or (kind != "synthetic" and not rest):
        raise UserError(f"--dataset {kind} takes exactly one PATH")
    return load_dataset(kind, rest[0] if rest else None, seed=seed)


PRESETS: dict[str, dict] = {
    "mosei-paper": dict(epochs=150, lr=5e-5, warmup=0.1, batch_size=64, seed=42, threshold=0.25,
                        threshold_search="none", layers=(3, 3, 3), sampling="shuffle"),
    "memor-paper": dict(epochs=150, lr=5e-5, warmup=0.1, batch_size=64, seed=42, threshold=0.25,
                        threshold_search="none", layers=(3, 3, 3), sampling="class_balanced"),
    "m3ed-paper": dict(epochs=20, lr=5e-5, warmup=0.1, batch_size=64, seed=1, threshold=0.25,
                       threshold_search="none", layers=(6, 4, 4), sampling="shuffle"),
}


def apply_preset(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Fill the options left at their defaults from ``args.preset`` (explicit options win)."""
    if not getattr(args, "preset", None):
        return args
    for name, value in PRESETS[args.preset].items():
        if name == "layers":
            for modality, layers in zip(("text_layers", "visual_layers", "acoustic_layers"), value, strict=True):
                if getattr(args, modality) is None and args.layers == defaults["layers"]:
                    setattr(args, modality, layers)
        elif getattr(args, name) == defaults.get(name):
            setattr(args, name, value)
    return args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train RAMer on a benchmark and save a checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="the public code's settings for a benchmark (see above); explicit options win")
    parser.add_argument("--from", dest="start", default="default", metavar="default|scratch|DIR",
                        help="with --annotations: fine-tune the default checkpoint (default), fine-tune DIR, "
                             "or train a new model from scratch (the model options below apply to scratch only)")
    parser.add_argument("--valid-fraction", type=float, default=0.2,
                        help="with --annotations: share of the rows held out for model selection (default 0.2)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=20)
    training.add_argument("--batch-size", type=int, default=64)
    training.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default 5e-5)")
    training.add_argument("--weight-decay", type=float, default=0.01)
    training.add_argument("--warmup", type=float, default=0.1, help="share of steps with linear warm-up")
    training.add_argument("--max-grad-norm", type=float, default=1.0)
    training.add_argument("--seed", type=int, default=42)
    training.add_argument("--patience", type=int, default=None, help="early stop after N epochs without gain")
    training.add_argument("--threshold-search", choices=("global", "per_label", "none"), default="global")
    training.add_argument("--threshold", type=float, default=None,
                          help="fixed decision threshold (p > t) kept when --threshold-search none")
    training.add_argument("--sampling", choices=("shuffle", "class_balanced"), default="shuffle",
                          help="class_balanced: MEmoR's sampler, weight 1 / label count, with replacement")
    training.add_argument("--mixed-precision", choices=("bf16", "fp16", "none"), default="bf16",
                          help="autocast dtype on CUDA (CPU always runs float32)")
    training.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    model = parser.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, default=256)
    model.add_argument("--layers", type=int, default=3, help="Transformer layers per modality")
    for modality in ("text", "visual", "acoustic"):
        model.add_argument(f"--{modality}-layers", type=int, default=None, help=f"layers of the {modality} encoder")
    model.add_argument("--heads", type=int, default=8)
    model.add_argument("--dropout", type=float, default=0.3)
    model.add_argument("--queue-size", type=int, default=8192)
    variant = model.add_mutually_exclusive_group()
    variant.add_argument("--ablation", default=None, help="switch one part off, e.g. no_reconstruction")
    variant.add_argument("--baseline", choices=("late-fusion",), default=None,
                         help="train the late-fusion baseline with the same encoders instead")
    parser.set_defaults(func=run, parser_defaults={a.dest: a.default for a in parser._actions})


def build_config(args: argparse.Namespace, splits):
    from ramer_core.config import RamerConfig

    dims = splits.train.dims
    fields = dict(text_dim=dims.text, visual_dim=dims.visual, acoustic_dim=dims.acoustic,
                  num_labels=len(splits.label_names), label_names=tuple(splits.label_names),
                  personality_dim=dims.personality, hidden_size=args.hidden_size,
                  text_layers=getattr(args, "text_layers", None) or args.layers,
                  visual_layers=getattr(args, "visual_layers", None) or args.layers,
                  acoustic_layers=getattr(args, "acoustic_layers", None) or args.layers, num_heads=args.heads,
                  dropout=args.dropout, queue_size=args.queue_size, shuffle_seed=args.seed)
    if getattr(args, "threshold", None) is not None:
        fields["threshold"] = args.threshold
    if args.baseline == "late-fusion":
        return RamerConfig.late_fusion_baseline(**fields)
    config = RamerConfig(**fields)
    if args.ablation:
        if args.ablation not in RamerConfig.ABLATIONS:
            raise UserError(f"unknown ablation {args.ablation!r}; use one of {', '.join(RamerConfig.ABLATIONS)}")
        config = config.ablation(args.ablation)
    return config


def _check_output_folder(out: Path, overwrite: bool) -> None:
    """Fails before training, not after it, when the checkpoint could not be written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the checkpoint")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the checkpoint to {out}: {parent} is not a writable folder")


def training_config(args: argparse.Namespace):
    from ramer_core.training import TrainingConfig

    return TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                          weight_decay=args.weight_decay, warmup_ratio=args.warmup, max_grad_norm=args.max_grad_norm,
                          seed=args.seed, mixed_precision=args.mixed_precision,
                          threshold_search=args.threshold_search, patience=args.patience, device=args.device,
                          sampling=args.sampling)


def _run_on_annotations(args: argparse.Namespace) -> int:
    from pipeline.training.corpus import train_on_corpus

    if args.preset:
        raise UserError("--preset sets a benchmark's published settings; it does not apply to --annotations")
    if not 0.0 < args.valid_fraction < 1.0:
        raise UserError(f"--valid-fraction must be between 0 and 1, got {args.valid_fraction}")
    return train_on_corpus(args, training_config(args))


def run(args: argparse.Namespace) -> int:
    from ramer_core.model import RamerModel
    from ramer_core.training import evaluate, save_trained, train

    apply_preset(args, getattr(args, "parser_defaults", {}))
    _check_output_folder(args.out, args.overwrite)
    if getattr(args, "annotations", None) is not None:
        return _run_on_annotations(args)
    splits = parse_dataset(args.dataset, args.seed)
    if len(splits.valid) == 0:
        raise UserError(f"{splits.train.source}: the validation split is empty; model selection needs one")
    training = training_config(args)
    model = RamerModel(build_config(args, splits))

    with progress_bar("training", quiet=args.quiet) as advance:

        def progress(event: dict) -> None:  # ramer_core.training logs each epoch itself
            if event["stage"] == "step":
                advance(event["step"], event["total_steps"])

        result = train(model, splits.train, splits.valid, training, progress=progress)
    test_report = None
    if len(splits.test) and splits.test.labelled:
        test_report = evaluate(model, splits.test)
    save_trained(model, args.out, result, splits.train, splits.valid, training, test_report)
    summary = f"saved {args.out}: best epoch {result.best_epoch}, valid micro-F1 {result.threshold.micro_f1:.4f}"
    if test_report:
        overall = test_report["overall"]
        summary += f", test micro-F1 {overall['micro_f1']:.4f}, accuracy {overall['accuracy']:.4f}"
    log.info("%s", summary)
    return 0
