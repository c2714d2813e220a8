"""RAMer on MEmoR (primary and fine-grained emotions) with the published protocol; prints the paper's table.

    .venv/bin/python benchmarks/memor_paper.py /path/to/MEmoR/data --out memor.md [--seeds 42 43 44]
        [--rows primary fine-grained] [--threads N] [any `pipeline train` option, e.g. --device cuda]

The folder is the dataset's ``data`` folder as it ships (ramer_core.datasets.memor). Each seed and
emotion set is one ``pipeline train --preset memor-paper`` run (150 epochs, lr 5e-5 with linear
warm-up, batch 64, layers 3/3/3, MEmoR's class-balanced sampler, fixed threshold ``p > 0.25``,
model selection on validation micro-F1; validation = a seeded 20 % of the training clips), scored on
the ``test_id.txt`` annotations. Rows: all targets, speakers, and non-speakers (no acoustic, no text).

Sample unit: **one sample here is a merged (clip, character, segment) target**, its labels every
emotion annotated for that character at a moment inside that segment (a multi-label target). MEmoR's
own code (``data_loader/data_loaders.py``) and the tables built on it score **one sample per
annotation** with its single emotion. The script prints both counts: the merged targets it scores
and the test annotations of ``test_id.txt`` (the papers' count); where several annotations share a
target the counts, and per-sample metrics, are not the same thing as the published ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_tables import PaperBenchmark, main  # noqa: E402


def count_note(root: Path, kind: str, count: int) -> list[str]:
    annotations = len((root / "test_id.txt").read_text().split())
    emotions = "fine-grained" if kind == "memor-fine" else "primary"
    per_target = f"{annotations / count:.2f}" if count else "—"
    return [f"Test samples ({emotions}): {count} merged (clip, character, segment) targets, scored here; "
            f"{annotations} test annotations in test_id.txt, one sample each in MEmoR's code and the published "
            f"tables ({per_target} annotations per target; annotations outside every segment are dropped, the "
            f"reader logs how many)."]


BENCHMARK = PaperBenchmark(
    title="MEmoR", preset="memor-paper", kinds={"primary": "memor", "fine-grained": "memor-fine"},
    paper_columns=("micro_f1", "macro_f1", "weighted_f1"),
    groups=("overall", "with_acoustic_text", "missing_acoustic_text"),
    unit="Sample unit: a merged (clip, character, segment) target with every emotion annotated for it "
         "(MEmoR's code and the published tables: one annotation, one emotion).",
    count_note=count_note)


if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK, __doc__))
