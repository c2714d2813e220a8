"""benchmarks/{mosei,memor,m3ed}_paper.py on tiny files in each dataset's exact layout (1 seed, 1 epoch).

The fixtures are the reader tests' builders. Every printed number is checked against an evaluation
done here, independently: the seed's checkpoint is loaded, its test probabilities are thresholded at
the preset's ``p > 0.25`` and scored with scikit-learn against the labels this test knows the
fixture holds (not the reader's). The printed columns, group rows and sample counts are checked too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, hamming_loss, jaccard_score, precision_score, recall_score
from test_datasets_m3ed import _layout, _write
from test_datasets_memor import memor_root  # noqa: F401  (pytest fixture)
from test_datasets_mosei import mosei_file  # noqa: F401  (pytest fixture)

from ramer_core.datasets import load_dataset
from ramer_core.model import RamerModel
from ramer_core.training import predict

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import m3ed_paper  # noqa: E402
import memor_paper  # noqa: E402
import mosei_paper  # noqa: E402
import paper_tables  # noqa: E402

TINY = ["--epochs", "1", "--hidden-size", "16", "--layers", "1", "--heads", "2", "--queue-size", "64",
        "--batch-size", "4", "--device", "cpu", "--threads", "1"]
TITLES = ["Acc", "Micro-F1", "Macro-F1", "Weighted-F1", "P (micro)", "R (micro)", "HL"]


def independent_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The papers' metrics from scikit-learn directly (not ramer_core.metrics) at p > 0.25."""
    pred = (probs > 0.25).astype(int)
    return {"Acc": jaccard_score(labels, pred, average="samples", zero_division=0.0),
            "Micro-F1": f1_score(labels, pred, average="micro", zero_division=0.0),
            "Macro-F1": f1_score(labels, pred, average="macro", zero_division=0.0),
            "Weighted-F1": f1_score(labels, pred, average="weighted", zero_division=0.0),
            "P (micro)": precision_score(labels, pred, average="micro", zero_division=0.0),
            "R (micro)": recall_score(labels, pred, average="micro", zero_division=0.0),
            "HL": hamming_loss(labels, pred)}


def table(printed: str) -> tuple[list[str], list[list[str]]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in printed.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return rows[0], rows[1:]


def check_row(header: list[str], row: list[str], expected: dict[str, float]) -> None:
    for title, value in expected.items():
        column = next(i for i, h in enumerate(header) if h.rstrip(" *") == title)
        assert row[column] == f"{value:.4f} ± —", (title, row[column], value)  # one seed: no spread


def run_script(module, argv: list[str], capsys) -> str:
    assert module.main(module.BENCHMARK, module.__doc__, argv) == 0
    return capsys.readouterr().out


def seed_probs(checkpoint: Path, kind: str, path: Path, labelled_keys: dict[str, list[int]], num_labels: int):
    """Probabilities of the saved model on the test split, in the order of ``labelled_keys``, and the labels."""
    model = RamerModel.from_pretrained(checkpoint)
    test = load_dataset(kind, path).test
    probs = predict(model, test).probs
    order = [[sample.key for sample in test.samples].index(key) for key in labelled_keys]
    labels = np.zeros((len(labelled_keys), num_labels), dtype=int)
    for row, on in enumerate(labelled_keys.values()):
        labels[row, on] = 1
    return labels, probs[order], test


def test_mosei_script_prints_the_papers_columns_from_the_test_evaluation(mosei_file, tmp_path, capsys):  # noqa: F811
    path, _ = mosei_file
    out = tmp_path / "mosei.md"
    printed = run_script(mosei_paper, [str(path), "--seeds", "7", "--out", str(out), *TINY], capsys)
    header, rows = table(printed)
    assert header == ["samples", "Acc *", "P (micro) *", "R (micro) *", "Micro-F1 *", "Macro-F1", "Weighted-F1", "HL",
                      "test n"]
    assert len(rows) == 1 and rows[0][0] == "all" and rows[0][-1] == "1"
    assert "Test samples: 1 video segments read from the file; the published tables: 4,659 (differs)." in printed
    assert "--preset mosei-paper" in printed and "Seeds: 7" in printed
    # the fixture's one test sample carries all six emotions (tokens 4..9)
    labels, probs, _ = seed_probs(tmp_path / "mosei_checkpoints" / "mosei-aligned-seed7", "mosei-aligned", path,
                                  {"test:0": [0, 1, 2, 3, 4, 5]}, 6)
    check_row(header, rows[0], independent_metrics(labels, probs))
    assert out.read_text() == printed
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [run["seed"] for run in saved["runs"]] == [7] and saved["preset"] == "mosei-paper"


def test_m3ed_script_scores_test_dialogues(tmp_path, capsys):
    path = _write(tmp_path, _layout(with_val=True))  # test = item 9: dialogue d3, one utterance labelled 3
    printed = run_script(m3ed_paper, [str(path), "--seeds", "1", "--out", str(tmp_path / "m3ed.md"), *TINY], capsys)
    header, rows = table(printed)
    assert header[:5] == ["samples", "Acc *", "P (micro) *", "R (micro) *", "Micro-F1 *"]
    assert "Test samples: 1 dialogues" in printed and rows[0][-1] == "1"
    labels, probs, _ = seed_probs(tmp_path / "m3ed_checkpoints" / "m3ed-seed1", "m3ed", path, {"d3": [3]}, 7)
    check_row(header, rows[0], independent_metrics(labels, probs))


def test_memor_script_states_the_sample_unit_and_both_counts(memor_root, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "memor.md"
    printed = run_script(memor_paper, [str(memor_root), "--seeds", "3", "--out", str(out), *TINY], capsys)
    header, rows = table(printed)
    assert header == ["labels", "samples", "Micro-F1 *", "Macro-F1 *", "Weighted-F1 *", "Acc", "P (micro)",
                      "R (micro)", "HL", "test n"]
    assert [row[:2] for row in rows] == [[labels, group] for labels in ("primary", "fine-grained") for group in
                                         ("all", "speakers (acoustic or text)", "non-speakers (no acoustic, no text)")]
    assert "Sample unit: a merged (clip, character, segment) target" in printed
    for emotions in ("primary", "fine-grained"):
        assert f"Test samples ({emotions}): 2 merged (clip, character, segment) targets, scored here; 2 test " \
               f"annotations in test_id.txt, one sample each in MEmoR's code" in printed
    # test ids 2 and 3: Penny's anger in c1 segment 1 (she speaks there) and Leonard's neutral in c2
    expected_labels = {"c1:penny:1": [2], "c2:leonard:0": [0]}
    for row_offset, (kind, count) in enumerate((("memor", 9), ("memor-fine", 14))):
        labels, probs, test = seed_probs(tmp_path / "memor_checkpoints" / f"{kind}-seed3", kind, memor_root,
                                         expected_labels, count)
        assert not test.missing_acoustic_and_text().any()  # both test targets speak: the non-speaker row is empty
        overall, speakers, non_speakers = rows[3 * row_offset: 3 * row_offset + 3]
        check_row(header, overall, independent_metrics(labels, probs))
        check_row(header, speakers, independent_metrics(labels, probs))
        assert non_speakers[2:] == ["—"] * 7 + ["0"]
    assert len(json.loads(out.with_suffix(".json").read_text())["runs"]) == 2


def test_spread_over_seeds_is_the_sample_standard_deviation():
    runs = [paper_tables.SeedRun("emotions", seed, "", {"overall": {**dict.fromkeys(
        ("accuracy", "micro_f1", "macro_f1", "weighted_f1", "micro_precision", "micro_recall", "hamming_loss"), value),
        "samples": 5}}, 1, 0.0) for seed, value in ((1, 0.5), (2, 0.7), (3, 0.9))]
    header, rows = table("\n".join(paper_tables.markdown_table(mosei_paper.BENCHMARK, runs)))
    assert rows == [["all"] + [f"0.7000 ± {np.std([0.5, 0.7, 0.9], ddof=1):.4f}"] * 7 + ["5"]]
    assert paper_tables.mean_std([None, None]) == "—"
