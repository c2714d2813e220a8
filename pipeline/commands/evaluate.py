"""``python -m pipeline evaluate --checkpoint DIR --dataset KIND PATH``: score a checkpoint on a split.

Prints a markdown table of the metrics (Jaccard accuracy, micro/macro/weighted F1, micro
precision and recall, Hamming loss) overall, on the samples missing acoustic and text, and on the
others, at the checkpoint's threshold (or ``--threshold``). ``--json FILE`` also writes them.

``--annotations FILE.csv --videos DIR`` scores the checkpoint on every usable row of a labelled corpus
in the MELD layout instead (features extracted as for ``train --annotations``, from the same cache).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from extractors.io import write_atomically
from pipeline.commands.train import add_dataset_argument, parse_dataset
from pipeline.errors import UserError

log = logging.getLogger(__name__)

COLUMNS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1", "micro_precision", "micro_recall", "hamming_loss")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score a trained checkpoint on a benchmark split",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="folder written by `train`")
    add_dataset_argument(parser)
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test", help="with --dataset")
    parser.add_argument("--threshold", type=float, default=None, help="override the checkpoint's threshold")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of a synthetic dataset / random splits (default: the checkpoint's training seed)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    parser.set_defaults(func=run)


def markdown_table(report: dict) -> str:
    header = "| subset | samples | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for subset in ("overall", "missing_acoustic_text", "with_acoustic_text"):
        metrics = report[subset]
        cells = " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS)
        lines.append(f"| {subset} | {metrics['samples']} | {cells} |")
    return "\n".join(lines)


def _write_json_atomically(path: Path, data: dict) -> None:
    from ramer_core.training import json_safe

    text = json.dumps(json_safe(data), indent=2, allow_nan=False)  # NaN (an empty subset) -> null
    write_atomically(path, lambda temporary: temporary.write_text(text))


def _print_report(args: argparse.Namespace, name: str, source: str, samples: int, report: dict) -> None:
    sys.stdout.write(f"{args.checkpoint} on {name} ({samples} samples), "
                     f"threshold {report['threshold']}\n\n{markdown_table(report)}\n")
    if args.json:
        _write_json_atomically(args.json, {"checkpoint": str(args.checkpoint), "dataset": name, "source": source,
                                           **report})
        log.info("wrote %s", args.json)


def _run_on_annotations(args: argparse.Namespace) -> int:
    from pipeline.training.corpus import evaluate_on_corpus

    report = evaluate_on_corpus(args)
    dataset = report.pop("dataset")
    _print_report(args, dataset.name, dataset.source, len(dataset), report)
    return 0


def run(args: argparse.Namespace) -> int:
    from ramer_core.model import RamerModel
    from ramer_core.training import evaluate, pick_device

    if not args.checkpoint.is_dir():
        raise UserError(f"checkpoint folder not found: {args.checkpoint}")
    if getattr(args, "annotations", None) is not None:
        return _run_on_annotations(args)
    device = pick_device(args.device)
    model = RamerModel.from_pretrained(args.checkpoint, map_location=device).to(device)
    # the same synthetic draw and random splits as at training time, unless asked otherwise
    seed = args.seed if args.seed is not None else int((model.card.get("training") or {}).get("seed", 42))
    splits = parse_dataset(args.dataset, seed)
    dataset = splits.split(args.split)
    if len(dataset) == 0:
        raise UserError(f"the {args.split} split of {dataset.source} is empty")
    if tuple(dataset.label_names) != tuple(model.config.label_names):
        raise UserError(f"{dataset.source}: labels {list(dataset.label_names)} differ from the checkpoint's "
                        f"{list(model.config.label_names)}")
    report = evaluate(model, dataset, threshold=args.threshold, device=device)
    _print_report(args, dataset.name, dataset.source, len(dataset), report)
    return 0
