"""How MELD and GoEmotions share the default model's text head: the late-fusion model trained as the rebuild
trains it, at several MELD : GoEmotions mixes per epoch, scored on both sets' validation and test splits.

    .venv/bin/python -m benchmarks.text_mixture [--seeds 7 8] [--mixes 0:3072 3072:3072 ...]

Needs the rebuild's feature caches (``benchmarks.default_model_features``) and reads the shipped tuned text
blocks (``pipeline/default_model/text_layers.safetensors``), so every mix sees the features the shipped model
saw. The runs go side by side, one torch thread each. The table is what ``TrainPlan.per_epoch`` was chosen
from (on validation); test columns are printed for the record, not for choosing.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script or with -m

from benchmarks import default_model as rebuild  # noqa: E402

RESULTS = rebuild.ROOT / "benchmarks" / "results" / "text_mixture.md"
MIXES = ("6144:0", "9216:3072", "6144:3072", "4608:3072", "3072:3072", "0:3072")


def mix(text: str) -> str:
    """An argparse type: "MELD:GoEmotions", two sample counts per epoch."""
    if not re.fullmatch(r"\d+:\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MELD:GoEmotions samples per epoch, e.g. 6144:3072")
    return text


def mix_plan(counts: str, seed: int) -> rebuild.TrainPlan:
    """The rebuild's plan with `counts` ("MELD:GoEmotions") samples per epoch and `seed`; the rest unchanged."""
    meld, goemotions = (int(n) for n in counts.split(":"))
    plan = replace(rebuild.TrainPlan(), seed=seed)
    plan.per_epoch = {**plan.per_epoch, "meld": meld, "goemotions": goemotions}
    return plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixes", nargs="+", type=mix, default=list(MIXES), help="MELD:GoEmotions samples per epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[rebuild.SEED, rebuild.SEED + 1])
    parser.add_argument("--workers", type=int, default=rebuild.CORES)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    from ramer_core import from_pretrained

    acoustic = from_pretrained(rebuild.DEFAULT_OUT).config.extra["acoustic_features"]
    encoder, _ = rebuild.tune_text(rebuild.DEFAULT_OUT / rebuild.TEXT_LAYERS_FILE, keep=True, fusion_chunks=1)
    text = rebuild.TextFeatures(encoder, rebuild.TEXT_TUNING.first_layer)
    corpus = rebuild.load_corpus(text, acoustic, 1)
    started = time.perf_counter()
    jobs = [(f"{counts} seed {seed}", rebuild.ramer_config(corpus, late_fusion=True), mix_plan(counts, seed))
            for counts in args.mixes for seed in args.seeds]
    models, runs = rebuild.train_all(corpus, jobs, args.workers)
    seconds = time.perf_counter() - started

    from benchmarks.machine import cpu_model

    dims = {"text": jobs[0][1].text_dim, "visual": jobs[0][1].visual_dim, "acoustic": jobs[0][1].acoustic_dim}
    lines = ["# MELD : GoEmotions in the default model's text head", "",
             f"Machine: {cpu_model()}, {args.workers} runs side by side, one torch thread each; {seconds:.0f} s of "
             f"training. Late fusion as `benchmarks/default_model.py` trains it ({acoustic} acoustic features, the "
             "shipped tuned text blocks), only the MELD and GoEmotions samples per epoch changed. MELD: weighted-F1, "
             "GoEmotions: macro-F1 with thresholds tuned on its validation split, RAVDESS: unweighted accuracy, FER: "
             "accuracy; mean valid: the four validation metrics the epoch is chosen by (capped subsets).", "",
             "| MELD : GoEmotions per epoch | seed | MELD valid | MELD test | GoEmotions valid | GoEmotions test "
             "| text valid sum | RAVDESS test | FER test | mean valid (selection) | best epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, _, plan in jobs:
        scores = rebuild.evaluate_sets(models[name], corpus, dims)
        meld, goemotions = scores["meld"], scores["goemotions"]
        lines.append(f"| {plan.per_epoch['meld']} : {plan.per_epoch['goemotions']} | {plan.seed} "
                     f"| {meld['valid']['weighted_f1']:.4f} | {meld['test']['weighted_f1']:.4f} "
                     f"| {goemotions['valid']['macro_f1']:.4f} | {goemotions['test']['macro_f1']:.4f} "
                     f"| {meld['valid']['weighted_f1'] + goemotions['valid']['macro_f1']:.4f} "
                     f"| {scores['ravdess']['test']['unweighted_accuracy']:.4f} | {scores['fer']['test']['accuracy']:.4f} "
                     f"| {runs[name]['valid_score']:.4f} | {runs[name]['best_epoch']} |")
    report = "\n".join(lines) + "\n"
    from extractors.io import write_atomically

    write_atomically(args.results, lambda p: p.write_text(report, encoding="utf-8"))
    print(report)


if __name__ == "__main__":
    main()
