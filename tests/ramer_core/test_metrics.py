"""Metrics pinned against hand-computed values, including the empty-set conventions."""

from __future__ import annotations

import numpy as np
import pytest

from ramer_core.metrics import binarize, multilabel_metrics, search_threshold


def test_hand_computed_values():
    y_true = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]])
    y_pred = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1]])
    m = multilabel_metrics(y_true, y_pred)
    # Jaccard per sample: 1/2, 1/2, 3/3
    assert m["accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # micro: tp = 5, fp = 1, fn = 1
    assert m["micro_precision"] == pytest.approx(5 / 6)
    assert m["micro_recall"] == pytest.approx(5 / 6)
    assert m["micro_f1"] == pytest.approx(5 / 6)
    # per-label F1: l0 1.0, l1 1.0, l2 (tp0 fp1 fn1) 0, l3 1.0
    assert m["macro_f1"] == pytest.approx(3 / 4)
    # supports 2, 2, 1, 1
    assert m["weighted_f1"] == pytest.approx((2 + 2 + 0 + 1) / 6)
    assert m["hamming_loss"] == pytest.approx(2 / 12)


def test_empty_sets_convention():
    # as the papers' get_accuracy: both empty -> 0; empty prediction vs labels -> 0; prediction vs empty -> 0
    y_true = np.array([[0, 0], [1, 0], [0, 0], [1, 1]])
    y_pred = np.array([[0, 0], [0, 0], [0, 1], [1, 0]])
    m = multilabel_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(0.5 / 4)
    all_empty = multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 3)))
    assert all_empty["accuracy"] == 0.0
    assert all_empty["micro_f1"] == 0.0 and all_empty["micro_precision"] == 0.0
    assert all_empty["hamming_loss"] == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 4)))


def test_binarize_scalar_and_per_label():
    probs = np.array([[0.2, 0.6], [0.5, 0.4]])
    assert binarize(probs, 0.5).tolist() == [[0, 1], [0, 0]]  # strictly greater, as getBinaryTensor
    assert binarize(probs, 0.45).tolist() == [[0, 1], [1, 0]]
    assert binarize(probs, [0.1, 0.7]).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError):
        binarize(probs, [0.1, 0.2, 0.3])


def test_global_threshold_search_finds_the_separating_value():
    # with "p > t": label 0 is perfect for t in [0.1, 0.3), label 1 in [0.2, 0.8): 0.2 and 0.25 of the
    # grid; a tie keeps the lower
    probs = np.array([[0.30, 0.9], [0.35, 0.1], [0.10, 0.8], [0.10, 0.2]])
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    choice = search_threshold(probs, y)
    assert choice.micro_f1 == pytest.approx(1.0)
    assert choice.global_threshold == pytest.approx(0.2)
    assert choice.thresholds == (0.2, 0.2)


def test_per_label_search_beats_global_when_labels_need_different_thresholds():
    # label 0 separates at 0.2, label 1 at 0.8: no single threshold is perfect
    probs = np.array([[0.25, 0.85], [0.15, 0.75], [0.25, 0.75], [0.15, 0.85]])
    y = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    global_choice = search_threshold(probs, y)
    per_label = search_threshold(probs, y, per_label=True)
    assert global_choice.micro_f1 < 1.0
    assert per_label.micro_f1 == pytest.approx(1.0)
    assert 0.15 <= per_label.thresholds[0] < 0.25 and 0.75 <= per_label.thresholds[1] < 0.85
