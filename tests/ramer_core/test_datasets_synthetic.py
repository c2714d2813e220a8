"""The synthetic benchmark: seeded, planted signal where it is said to be, non-speakers empty."""

from __future__ import annotations

import numpy as np
import torch

from ramer_core.datasets import SyntheticConfig, collate, make_synthetic
from ramer_core.datasets.synthetic import READABLE_IN

SMALL = dict(train_samples=600, valid_samples=50, test_samples=50)


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_synthetic(SyntheticConfig(seed=3, **SMALL)), make_synthetic(SyntheticConfig(seed=3, **SMALL))
    c = make_synthetic(SyntheticConfig(seed=4, **SMALL))
    assert torch.equal(collate(a.train.samples).visual, collate(b.train.samples).visual)
    assert torch.equal(a.test.labels_matrix(), b.test.labels_matrix())
    assert not torch.equal(collate(a.train.samples[:50]).visual, collate(c.train.samples[:50]).visual)


def test_missing_share_and_empty_modalities():
    data = make_synthetic(SyntheticConfig(seed=0, missing_share=0.4, **SMALL))
    missing = data.train.missing_acoustic_and_text()
    assert abs(missing.float().mean().item() - 0.4) < 0.06
    for sample, gone in zip(data.train.samples[:50], missing[:50], strict=True):
        assert (sample.text.shape[2] == 0) == bool(gone) and (sample.acoustic.shape[2] == 0) == bool(gone)
        assert sample.visual.shape[2] > 0 and sample.present[0, 0, 1]


def _mean_projection(data, cfg, label, modality):
    """Mean over valid steps of the features projected on the label's planted direction, split by label."""
    rng = np.random.default_rng(cfg.seed)
    dims = {"text": cfg.text_dim, "visual": cfg.visual_dim, "acoustic": cfg.acoustic_dim}
    directions = {}
    for m in ("text", "visual", "acoustic"):  # same draw order as the generator
        x = rng.standard_normal((cfg.num_labels, dims[m]))
        directions[m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos, neg = [], []
    for s in data.train.samples:
        feats = s.features(modality)[0, 0]
        if feats.shape[0] == 0:
            continue
        value = float((feats.numpy() @ directions[modality][label]).mean())
        (pos if s.labels[label] else neg).append(value)
    return np.mean(pos) - np.mean(neg)


def test_signal_is_planted_only_where_readable():
    cfg = SyntheticConfig(seed=1, **SMALL)
    data = make_synthetic(cfg)
    for label in range(cfg.num_labels):
        for modality in ("text", "visual", "acoustic"):
            gap = _mean_projection(data, cfg, label, modality)
            if modality in READABLE_IN[label]:
                assert gap > 0.3, (label, modality, gap)
            else:
                assert abs(gap) < 0.2, (label, modality, gap)


def test_personality_moves_label_priors():
    cfg = SyntheticConfig(seed=2, train_samples=3000, valid_samples=10, test_samples=10)
    data = make_synthetic(cfg)
    personality = torch.stack([s.personality[0] for s in data.train.samples])
    labels = data.train.labels_matrix()
    # the label rates of different characters differ far more than sampling noise would explain
    characters = [s.key.split("character")[1] for s in data.train.samples]
    rates = {}
    for c in set(characters):
        rows = [i for i, k in enumerate(characters) if k == c]
        rates[c] = labels[rows].mean(0)
    spread = torch.stack(list(rates.values())).std(0).mean().item()
    assert spread > 0.1
    assert personality.shape == (3000, cfg.personality_dim)
