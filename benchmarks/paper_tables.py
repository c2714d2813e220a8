"""What mosei_paper.py, memor_paper.py and m3ed_paper.py share: the published protocol over seeds.

For every seed (and, for MEmoR, every emotion set) one ``python -m pipeline train --preset <paper>
--seed S`` run trains RAMer with the public code's settings and scores the official test split at
the preset's fixed threshold (``p > 0.25``, no threshold search), as ``pipeline train`` does; its
checkpoint (weights + ``config.json`` with the test metrics in the model card) is kept under
``--checkpoints``. The table has one row per emotion set and sample group, the columns the
published tables report first, then the rest of :data:`ramer_core.metrics.METRIC_NAMES` (Jaccard
accuracy with an empty-vs-empty sample scoring 0, as the papers' ``get_accuracy``), each as mean
± sample standard deviation over the seeds (one seed: no spread), and the number of test samples.
The markdown goes to stdout and to ``--out``; the per-seed metrics to ``--out`` with ``.json``.

Any option the scripts do not know is handed to ``pipeline train`` (explicit options beat the
preset), e.g. ``--device cuda --mixed-precision none`` or, for a quick check, ``--epochs 1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this file)

from extractors.io import torch_threads, write_atomically  # noqa: E402
from pipeline.cli import build_parser  # noqa: E402
from pipeline.commands.train import PRESETS  # noqa: E402
from ramer_core.checkpoint import CONFIG_NAME  # noqa: E402
from ramer_core.metrics import METRIC_NAMES  # noqa: E402

log = logging.getLogger("paper_tables")

COLUMN_TITLES = {"accuracy": "Acc", "micro_f1": "Micro-F1", "macro_f1": "Macro-F1", "weighted_f1": "Weighted-F1",
                 "micro_precision": "P (micro)", "micro_recall": "R (micro)", "hamming_loss": "HL"}
# the columns of the CMU-MOSEI and M3ED tables (TAILOR, CARAT, RAMer): Acc, P, R, Micro-F1
ACC_P_R_F1 = ("accuracy", "micro_precision", "micro_recall", "micro_f1")
GROUP_TITLES = {"overall": "all", "with_acoustic_text": "speakers (acoustic or text)",
                "missing_acoustic_text": "non-speakers (no acoustic, no text)"}


@dataclass(frozen=True)
class PaperBenchmark:
    title: str                          # e.g. "CMU-MOSEI (word-aligned)"
    preset: str                         # a key of pipeline.commands.train.PRESETS
    kinds: dict[str, str]               # row label -> dataset kind of ``pipeline train --dataset``
    paper_columns: tuple[str, ...]      # metric names the published tables report, in their order
    groups: tuple[str, ...] = ("overall",)
    unit: str = ""                      # what one test sample is, printed beside the table
    # (dataset path, kind, test samples) -> lines comparing the count with the papers'
    count_note: Callable[[Path, str, int], list[str]] = field(default=lambda path, kind, count: [])

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.paper_columns, *(name for name in METRIC_NAMES if name not in self.paper_columns))


@dataclass
class SeedRun:
    """One trained seed: where its checkpoint is and the test report ``pipeline train`` stored in it."""

    row: str
    seed: int
    checkpoint: str
    test: dict
    best_epoch: int
    seconds: float

    def serialize(self) -> dict:
        return {"row": self.row, "seed": self.seed, "checkpoint": self.checkpoint, "test": self.test,
                "best_epoch": self.best_epoch, "seconds": self.seconds}


def build_argument_parser(benchmark: PaperBenchmark, doc: str) -> argparse.ArgumentParser:
    preset_seed = PRESETS[benchmark.preset]["seed"]
    # no abbreviations: an abbreviated `pipeline train` option (--thr) must not be taken for ours (--threads)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                                     epilog="Other options go to `python -m pipeline train` (see its --help).")
    parser.add_argument("dataset", type=Path, help="the dataset file or folder, as the reader expects it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[preset_seed + i for i in range(3)],
                        help=f"training seeds (default: {preset_seed}, {preset_seed + 1}, {preset_seed + 2})")
    parser.add_argument("--out", type=Path, required=True, help="markdown table to write (per-seed JSON beside it)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder for one checkpoint per run (default: <out without suffix>_checkpoints)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    if len(benchmark.kinds) > 1:
        parser.add_argument("--rows", nargs="+", choices=sorted(benchmark.kinds), default=list(benchmark.kinds),
                            help=f"which label sets to run (default: all, {', '.join(benchmark.kinds)})")
    return parser


def train_one(dataset: Path, kind: str, preset: str, seed: int, checkpoint: Path, overwrite: bool,
              train_options: Sequence[str]) -> tuple[dict, int]:
    """``python -m pipeline train`` in this process; returns the test report and best epoch from the card."""
    argv = ["train", "--dataset", kind, str(dataset), "--out", str(checkpoint), "--preset", preset,
            "--seed", str(seed), *(["--overwrite"] if overwrite else []), *train_options]
    args = build_parser().parse_args(argv)
    status = args.func(args)
    if status:
        raise RuntimeError(f"pipeline train {' '.join(argv)} exited with status {status}")
    card = json.loads((checkpoint / CONFIG_NAME).read_text(encoding="utf-8"))["card"]
    test = card.get("metrics", {}).get("test")
    if not test:
        raise RuntimeError(f"{dataset}: no labelled test split, so there is nothing to report")
    return test, int(card["result"]["best_epoch"])


def mean_std(values: Sequence[float | None]) -> str:
    """``mean ± sample std``; a group with no samples (NaN, stored as null) shows as ``—``."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f} ± —"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown_table(benchmark: PaperBenchmark, runs: Sequence[SeedRun]) -> list[str]:
    rows = list(dict.fromkeys(run.row for run in runs))
    show_row = len(benchmark.kinds) > 1
    header = (["labels"] if show_row else []) + ["samples"] + \
        [COLUMN_TITLES[c] + (" *" if c in benchmark.paper_columns else "") for c in benchmark.columns] + ["test n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        mine = [run for run in runs if run.row == row]
        for group in benchmark.groups:
            reports = [run.test[group] for run in mine]
            counts = sorted({int(report["samples"]) for report in reports})
            cells = ([row] if show_row else []) + [GROUP_TITLES[group]] + \
                [mean_std([report[c] for report in reports]) for c in benchmark.columns] + \
                ["/".join(map(str, counts))]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_line(threads: int) -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"Machine: {cpu_model()}{gpu}, {threads} torch threads of {os.cpu_count()} cores, torch {torch.__version__}, "
            f"Python {platform.python_version()}.")


def report_lines(benchmark: PaperBenchmark, dataset: Path, seeds: Sequence[int], runs: Sequence[SeedRun],
                 train_options: Sequence[str], threads: int) -> list[str]:
    preset = ", ".join(f"{k} {v}" for k, v in PRESETS[benchmark.preset].items())
    lines = [f"# RAMer on {benchmark.title}, the published protocol", "",
             f"{machine_line(threads)}  ",
             f"Data: `{dataset}`, official test split. {benchmark.unit}  ",
             f"Training: `pipeline train --preset {benchmark.preset}` ({preset})"
             + (f", with `{' '.join(train_options)}`" if train_options else "") + ".  ",
             f"Seeds: {', '.join(map(str, seeds))}; mean ± sample standard deviation over seeds (one seed: no spread); "
             f"columns marked * are the ones the published tables report. Total "
             f"{sum(run.seconds for run in runs) / 60:.1f} min.  "]
    for row, kind in benchmark.kinds.items():
        mine = [run for run in runs if run.row == row]
        if mine:
            count = int(mine[0].test["overall"]["samples"])
            lines += [f"{line}  " for line in benchmark.count_note(dataset, kind, count)]
    return [*lines, "", *markdown_table(benchmark, runs)]


def main(benchmark: PaperBenchmark, doc: str, argv: list[str] | None = None) -> int:
    args, train_options = build_argument_parser(benchmark, doc).parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    checkpoints = args.checkpoints or args.out.with_name(f"{args.out.stem}_checkpoints")
    rows = getattr(args, "rows", list(benchmark.kinds))
    runs: list[SeedRun] = []
    with torch_threads(args.threads):
        threads = torch.get_num_threads()
        for row in rows:
            kind = benchmark.kinds[row]
            for seed in args.seeds:
                checkpoint = checkpoints / f"{kind}-seed{seed}"
                started = time.perf_counter()
                test, best_epoch = train_one(args.dataset, kind, benchmark.preset, seed, checkpoint, args.overwrite,
                                             train_options)
                runs.append(SeedRun(row, seed, str(checkpoint), test, best_epoch, time.perf_counter() - started))
                log.info("%s seed %d: test micro-F1 %s (best epoch %d)", row, seed, test["overall"]["micro_f1"],
                         best_epoch)
    lines = report_lines(benchmark, args.dataset, args.seeds, runs, train_options, threads)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_atomically(args.out, lambda path: path.write_text(text, encoding="utf-8"))
    document = {"benchmark": benchmark.title, "preset": benchmark.preset, "dataset": str(args.dataset),
                "seeds": args.seeds, "train_options": list(train_options), "runs": [r.serialize() for r in runs]}
    write_atomically(args.out.with_suffix(".json"),
                     lambda path: path.write_text(json.dumps(document, indent=2), encoding="utf-8"))
    return 0
