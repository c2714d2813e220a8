"""Multi-label metrics on multi-hot vectors, and the decision-threshold search on validation.

Definitions (the RAMer / TAILOR / CARAT papers' conventions, computed with scikit-learn):

- ``accuracy``: Jaccard accuracy, the mean over samples of |y ∩ ŷ| / |y ∪ ŷ|
  (``sklearn.metrics.jaccard_score(average="samples", zero_division=0.0)``). A sample whose label
  set and prediction are *both empty* scores 0, as RAMer / CARAT / TAILOR's ``utils/eval.py``
  ``get_accuracy`` does (it divides 0 by a union clamped to 1); CMU-MOSEI has such samples, so this
  matters against the published tables. Any other empty side scores 0 too (empty intersection).
- ``micro_f1``, ``macro_f1``, ``weighted_f1``: ``f1_score`` with that average. A label with no
  positives and no predictions contributes F1 = 0 to the macro/weighted means (scikit-learn's
  ``zero_division=0``); in the weighted mean its weight (support) is 0 anyway.
- ``micro_precision``, ``micro_recall``: micro averages; an all-empty prediction has precision 0.
- ``hamming_loss``: the share of wrong (sample, label) cells.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score, hamming_loss, jaccard_score, precision_score, recall_score

log = logging.getLogger(__name__)

METRIC_NAMES = (
    "accuracy", "micro_f1", "macro_f1", "weighted_f1", "micro_precision", "micro_recall", "hamming_loss",
)
DEFAULT_THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())


def _as_multi_hot(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [samples, labels] multi-hot array, got shape {array.shape}")
    return (array > 0.5).astype(np.int64)


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for multi-hot ``y_true`` / ``y_pred`` of shape [N, C]."""
    y_true = _as_multi_hot(y_true, "y_true")
    y_pred = _as_multi_hot(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.shape[0] == 0:
        return {name: float("nan") for name in METRIC_NAMES}
    return {
        "accuracy": float(jaccard_score(y_true, y_pred, average="samples", zero_division=0.0)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0.0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0.0)),
        "micro_precision": float(precision_score(y_true, y_pred, average="micro", zero_division=0.0)),
        "micro_recall": float(recall_score(y_true, y_pred, average="micro", zero_division=0.0)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
    }


def binarize(probs: np.ndarray, threshold: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Multi-hot predictions: ``probs > threshold`` (a scalar or one threshold per label), strictly
    greater as the public code's ``getBinaryTensor``."""
    probs = np.asarray(probs, dtype=np.float64)
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.ndim == 1 and threshold.shape[0] != probs.shape[-1]:
        raise ValueError(f"{threshold.shape[0]} per-label thresholds for {probs.shape[-1]} labels")
    return (probs > threshold).astype(np.int64)


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold(s) picked on validation and the micro-F1 they reach there."""

    thresholds: tuple[float, ...]   # one per label (all equal for a global search)
    global_threshold: float         # the best single threshold (also set for per-label search)
    micro_f1: float

    def serialize(self) -> dict:
        return {"thresholds": list(self.thresholds), "global_threshold": self.global_threshold,
                "micro_f1": self.micro_f1}


def search_threshold(
    probs: np.ndarray,                      # [N, C] validation probabilities
    y_true: np.ndarray,                     # [N, C] multi-hot
    per_label: bool = False,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
) -> ThresholdChoice:
    """Pick the threshold(s) that maximise micro-F1 on validation.

    Global: one threshold for every label, the best of ``grid``. Per label: starting from the best
    global threshold, coordinate ascent, one label at a time in label order, each label's
    threshold set to the grid value that maximises the overall micro-F1 with the others fixed
    (one pass). Ties keep the earlier (lower) grid value, so the result is deterministic.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = _as_multi_hot(y_true, "y_true")
    if probs.shape != y_true.shape:
        raise ValueError(f"probs {probs.shape} and labels {y_true.shape} differ in shape")
    if len(grid) == 0:
        raise ValueError("empty threshold grid")

    def micro_f1(thresholds: np.ndarray) -> float:
        return float(f1_score(y_true, binarize(probs, thresholds), average="micro", zero_division=0.0))

    scores = [micro_f1(np.float64(t)) for t in grid]
    best_index = int(np.argmax(scores))
    best_global = float(grid[best_index])
    thresholds = np.full(probs.shape[1], best_global)
    best_score = scores[best_index]
    if per_label:
        for label in range(probs.shape[1]):
            for candidate in grid:
                trial = thresholds.copy()
                trial[label] = candidate
                score = micro_f1(trial)
                if score > best_score + 1e-12:
                    best_score, thresholds = score, trial
    log.debug("threshold search: global %.2f, micro-F1 %.4f", best_global, best_score)
    return ThresholdChoice(tuple(float(t) for t in thresholds), best_global, best_score)
