"""RAMer on M3ED with the published (CARAT) protocol; prints the paper's table.

    .venv/bin/python benchmarks/m3ed_paper.py /path/to/m3ed.pkl|m3ed_data_60.pt --out m3ed.md [--seeds 1 2 3]
        [--threads N] [any `pipeline train` option, e.g. --device cuda]

The file is M3ED's DialogueRNN-layout feature pickle (items 7/8/9 = train/validation/test dialogue
ids, as CARAT reads them) or CARAT's converted ``m3ed_data_60.pt`` (ramer_core.datasets.m3ed). Each
seed is one ``pipeline train --preset m3ed-paper`` run (CARAT's ``train_m3ed.sh``: 20 epochs, lr 5e-5,
batch 64, layers text/visual/acoustic 6/4/4, fixed threshold ``p > 0.25``, model selection on
validation micro-F1), scored on the test dialogues. One sample is a whole dialogue (its first 60
utterances as the time axis, labels the union of its utterances' labels over Happy, Neutral, Sad,
Disgust, Anger, Fear, Surprise), as in CARAT's and RAMer's tables. See benchmarks/paper_tables.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_tables import ACC_P_R_F1, PaperBenchmark, main  # noqa: E402


def count_note(path: Path, kind: str, count: int) -> list[str]:
    return [f"Test samples: {count} dialogues (the test ids of the file); the published tables count dialogues "
            f"of the same split, not utterances."]


BENCHMARK = PaperBenchmark(
    title="M3ED", preset="m3ed-paper", kinds={"emotions": "m3ed"},
    paper_columns=ACC_P_R_F1,
    unit="One sample: a dialogue (first 60 utterances), labels the union of its utterances' 7 emotions.",
    count_note=count_note)


if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK, __doc__))
