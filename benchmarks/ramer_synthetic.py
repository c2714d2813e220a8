"""RAMer vs a late-fusion baseline vs each ablation on the synthetic multi-label benchmark.

    .venv/bin/python benchmarks/ramer_synthetic.py [--seeds 0 1 2] [--epochs 20] [--quick]

For each seed the synthetic benchmark is drawn with that seed (ramer_core.datasets.synthetic:
labels readable in one or several modalities, a share of non-speakers without acoustic and
text, personality correlated with label priors), and every variant is trained with that seed:
RAMer (all parts), the late-fusion baseline (same encoders and label attention, per-modality
heads averaged over present modalities) in two settings, without personality and with the same
personality input and branch RAMer gets (so "RAMer beats late fusion" is not a measure of the
personality vector alone), and RAMer with one part switched off. Compare "no_personality" with the
baseline without personality, and RAMer with the baseline with personality: those pairs see the
same inputs. Model selection
and the decision threshold come from the validation split; the table reports test micro-F1 and
Jaccard accuracy, overall and on the non-speakers, as mean ± standard deviation over the seeds,
and how many seeds RAMer beats each variant on the non-speakers (paired: same data, same seed).
Prints a markdown table; nothing is tuned per variant.
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
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from ramer_core.config import RamerConfig  # noqa: E402
from ramer_core.datasets import SyntheticConfig, make_synthetic  # noqa: E402
from ramer_core.model import RamerModel  # noqa: E402
from ramer_core.training import TrainingConfig, evaluate, train  # noqa: E402

log = logging.getLogger("ramer_synthetic")

MODEL_SIZE = dict(hidden_size=64, text_layers=1, visual_layers=1, acoustic_layers=1, num_heads=4, ffn_size=128,
                  latent_size=32, queue_size=2048, dropout=0.1)




def variants(base: RamerConfig) -> list[tuple[str, RamerConfig]]:
    fields = {k: v for k, v in base.to_dict().items() if not k.startswith("use_")}
    fields["label_names"] = tuple(fields["label_names"])
    out = [("RAMer", base), ("late-fusion baseline", RamerConfig.late_fusion_baseline(**fields)),
           ("late-fusion + personality", RamerConfig.late_fusion_baseline(**fields, use_personality=True))]
    out += [(name, base.ablation(name)) for name in RamerConfig.ABLATIONS]
    return out


def run_one(config: RamerConfig, data, training: TrainingConfig) -> dict:
    torch.manual_seed(training.seed)
    model = RamerModel(config)
    started = time.perf_counter()
    train(model, data.train, data.valid, training)
    seconds = time.perf_counter() - started
    report = evaluate(model, data.test)
    return {"overall_f1": report["overall"]["micro_f1"], "overall_acc": report["overall"]["accuracy"],
            "missing_f1": report["missing_acoustic_text"]["micro_f1"],
            "missing_acc": report["missing_acoustic_text"]["accuracy"],
            "missing_n": report["missing_acoustic_text"]["samples"], "seconds": seconds}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--missing-share", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--only", nargs="+", default=None, help="run only these variants (RAMer always runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("ramer_core.training", "ramer_core.datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    synthetic = SyntheticConfig(train_samples=args.train_samples, valid_samples=200, test_samples=600,
                                missing_share=args.missing_share)
    epochs = args.epochs
    if args.quick:
        synthetic = replace(synthetic, train_samples=200, valid_samples=60, test_samples=120)
        epochs = 1
    training = TrainingConfig(epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr, weight_decay=0.01,
                              warmup_ratio=0.1, max_grad_norm=1.0, device="cpu")
    results: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        data = make_synthetic(replace(synthetic, seed=seed))
        dims = data.train.dims
        base = RamerConfig(text_dim=dims.text, visual_dim=dims.visual, acoustic_dim=dims.acoustic,
                           num_labels=len(data.label_names), label_names=data.label_names,
                           personality_dim=dims.personality, shuffle_seed=seed, **MODEL_SIZE)
        for name, config in variants(base):
            if args.only and name != "RAMer" and name not in args.only:
                continue
            outcome = run_one(config, data, replace(training, seed=seed))
            results.setdefault(name, []).append(outcome)
            log.info("seed %d %-22s %s", seed, name, json.dumps(outcome))
    total = time.perf_counter() - started

    ramer = results["RAMer"]
    print("# RAMer on the synthetic multi-label benchmark\n")
    print(f"Machine: {cpu_model()}, {args.threads} threads of {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; shared with other jobs, so the "
          f"times are noisy.  ")
    print(f"Data: `SyntheticConfig` {synthetic.train_samples} train / {synthetic.valid_samples} valid / "
          f"{synthetic.test_samples} test samples, {synthetic.num_labels} labels readable in "
          "t, a, v, t+v, a+v, t+a+v, dims text/visual/acoustic/personality "
          f"{synthetic.text_dim}/{synthetic.visual_dim}/{synthetic.acoustic_dim}/{synthetic.personality_dim}, "
          f"lengths {synthetic.text_length}, non-speakers (no acoustic, no text) {synthetic.missing_share:.0%}; "
          f"one draw per seed.  ")
    print(f"Model: hidden {MODEL_SIZE['hidden_size']}, {MODEL_SIZE['text_layers']} layer per modality, "
          f"{MODEL_SIZE['num_heads']} heads, latent {MODEL_SIZE['latent_size']}, queue {MODEL_SIZE['queue_size']}, "
          f"dropout {MODEL_SIZE['dropout']}; all loss weights at their defaults.  ")
    print(f"Training: {epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr:g} (higher than the paper's 5e-5 because "
          "these small models train from scratch in a few hundred steps; the same for every variant), weight decay "
          "0.01, warm-up 0.1, clipping 1.0, best epoch and global threshold by validation micro-F1, CPU float32.  ")
    print(f"Seeds: {', '.join(map(str, args.seeds))} (data and model); mean ± standard deviation over seeds; "
          f"test split, {ramer[0]['missing_n']} non-speakers in seed {args.seeds[0]}'s test set. "
          f"Whole table: {total / 60:.1f} min.\n")
    print("| variant | micro-F1 (all) | Jaccard acc. (all) | micro-F1 (no acoustic+text) | "
          "Jaccard acc. (no acoustic+text) | RAMer better on non-speakers (seeds) | train s / run |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        wins = "—" if name == "RAMer" else \
            f"{sum(r['missing_f1'] < o['missing_f1'] for r, o in zip(runs, ramer, strict=True))}/{len(runs)}"
        print(f"| {name} | {mean_std([r['overall_f1'] for r in runs])} | {mean_std([r['overall_acc'] for r in runs])} "
              f"| {mean_std([r['missing_f1'] for r in runs])} | {mean_std([r['missing_acc'] for r in runs])} "
              f"| {wins} | {statistics.median(r['seconds'] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
