"""RAMer on CMU-MOSEI (word-aligned) with the published protocol; prints the paper's table.

    .venv/bin/python benchmarks/mosei_paper.py /path/to/train_valid_test.pt --out mosei.md [--seeds 42 43 44]
        [--threads N] [any `pipeline train` option, e.g. --device cuda]

The file is TAILOR / CARAT's ``train_valid_test.pt`` (ramer_core.datasets.mosei). Each seed is one
``pipeline train --preset mosei-paper`` run (150 epochs, lr 5e-5 with linear warm-up over 10 %,
batch 64, layers 3/3/3, fixed threshold ``p > 0.25``, model selection on validation micro-F1),
scored on the official test split. One test sample is one video segment with its set of the six
emotions (an empty set scores 0 in accuracy, as in the papers); the official test split has 4,659
(TAILOR, CARAT, RAMer), printed beside the count read here. See benchmarks/paper_tables.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_tables import ACC_P_R_F1, PaperBenchmark, main  # noqa: E402

PUBLISHED_TEST_SAMPLES = 4659  # CMU-MOSEI aligned, official test split (TAILOR / CARAT / RAMer)


def count_note(path: Path, kind: str, count: int) -> list[str]:
    return [f"Test samples: {count} video segments read from the file; the published tables: "
            f"{PUBLISHED_TEST_SAMPLES:,}" + (" (same)." if count == PUBLISHED_TEST_SAMPLES else " (differs).")]


BENCHMARK = PaperBenchmark(
    title="CMU-MOSEI (word-aligned)", preset="mosei-paper", kinds={"emotions": "mosei-aligned"},
    paper_columns=ACC_P_R_F1,
    unit="One sample: a video segment and its set of the 6 emotions (one speaker, all modalities present).",
    count_note=count_note)


if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK, __doc__))
