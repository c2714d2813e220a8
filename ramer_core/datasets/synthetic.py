"""A seeded synthetic multi-label benchmark with planted, label-specific signal in three modalities.

How a sample is made (everything drawn from ``numpy.random.default_rng(seed)``):

1. A character ``k`` (one of ``num_characters``) with a personality vector ``z_k ~ N(0, I)``.
   Label priors depend on personality: ``logit p(y_c = 1) = base_logit + (A z_k)_c`` with a fixed
   random ``A`` of scale ``personality_strength`` — so personality tells the model which emotions a
   character tends to show, never which one it shows now.
2. Labels ``y_c ~ Bernoulli(p_c)``, independently.
3. Each label is readable in a fixed set of modalities, cycling through :data:`READABLE_IN`:
   text only, acoustic only, visual only, text+visual, acoustic+visual, all three. For every
   (label, modality) pair that reads it there is a fixed unit direction ``u`` in that modality's
   feature space; a sample with ``y_c = 1`` gets ``signal_strength * u`` added at a random
   ``signal_fraction`` of its time steps (label-specific attention has something to find). Visual
   signal of labels that are also readable elsewhere is weaker (``visual_shared_strength``): the
   face shows what the voice and the words say, less clearly.
4. Standard normal noise everywhere; sequence lengths vary between half and the full length.
5. A share ``missing_share`` of samples are non-speakers: acoustic and text are empty ``(0, D)``
   with ``present`` False. Labels of non-speakers follow the same distribution, so for them only
   the visual evidence, what the model learned across modalities, and personality remain.

The same seed gives the same splits, bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ramer_core.batch import MODALITIES
from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample

READABLE_IN: tuple[tuple[str, ...], ...] = (
    ("text",), ("acoustic",), ("visual",), ("text", "visual"), ("acoustic", "visual"), ("text", "acoustic", "visual"),
)


@dataclass
class SyntheticConfig:
    train_samples: int = 2000
    valid_samples: int = 400
    test_samples: int = 1000
    num_labels: int = 6
    text_dim: int = 32
    visual_dim: int = 24
    acoustic_dim: int = 16
    text_length: int = 8
    visual_length: int = 8
    acoustic_length: int = 8
    personality_dim: int = 8
    num_characters: int = 24
    missing_share: float = 0.3          # share of non-speakers (no acoustic, no text)
    base_logit: float = -1.2            # label prior before personality (sigmoid(-1.2) = 0.23)
    personality_strength: float = 1.0   # scale of the personality -> prior map
    signal_strength: float = 1.5        # planted signal per signal step (noise is N(0, 1))
    visual_shared_strength: float = 0.8  # visual signal of labels also readable in text/acoustic
    signal_fraction: float = 0.5        # share of time steps carrying the signal
    seed: int = 0

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(f"{'+'.join(m[0] for m in READABLE_IN[c % len(READABLE_IN)])}_{c}"
                     for c in range(self.num_labels))

    @property
    def dims(self) -> FeatureDims:
        return FeatureDims(self.text_dim, self.visual_dim, self.acoustic_dim, self.personality_dim)

    def serialize(self) -> dict:
        return asdict(self)


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_synthetic(config: SyntheticConfig | None = None) -> DatasetSplits:
    """Train / valid / test splits of the synthetic benchmark (see the module docstring)."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    dims = {"text": cfg.text_dim, "visual": cfg.visual_dim, "acoustic": cfg.acoustic_dim}
    lengths = {"text": cfg.text_length, "visual": cfg.visual_length, "acoustic": cfg.acoustic_length}
    readable = [READABLE_IN[c % len(READABLE_IN)] for c in range(cfg.num_labels)]
    directions = {m: _unit_rows(rng, cfg.num_labels, dims[m]) for m in MODALITIES}  # [C, D_m]
    strength = np.zeros((cfg.num_labels, len(MODALITIES)))
    for c, modalities in enumerate(readable):
        for m in modalities:
            shared_visual = m == "visual" and len(modalities) > 1
            strength[c, MODALITIES.index(m)] = cfg.visual_shared_strength if shared_visual else cfg.signal_strength
    personalities = rng.standard_normal((cfg.num_characters, cfg.personality_dim)).astype(np.float32)
    prior_map = rng.standard_normal((cfg.num_labels, cfg.personality_dim)) * (
        cfg.personality_strength / np.sqrt(cfg.personality_dim))

    def sample(split_rng: np.random.Generator, index: int, split: str) -> RamerSample:
        character = int(split_rng.integers(cfg.num_characters))
        logits = cfg.base_logit + prior_map @ personalities[character]
        labels = (split_rng.random(cfg.num_labels) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        speaking = split_rng.random() >= cfg.missing_share
        seqs = {}
        for i, m in enumerate(MODALITIES):
            length = int(split_rng.integers(max(1, lengths[m] // 2), lengths[m] + 1))
            x = split_rng.standard_normal((length, dims[m]))
            for c in np.flatnonzero(labels):
                if strength[c, i] > 0:
                    steps = split_rng.random(length) < cfg.signal_fraction
                    steps[split_rng.integers(length)] = True  # at least one step carries it
                    x[steps] += strength[c, i] * directions[m][c]
            if m in ("text", "acoustic") and not speaking:
                x = x[:0]
            seqs[m] = torch.from_numpy(x.astype(np.float32))
        return RamerSample.single(seqs["text"], seqs["visual"], seqs["acoustic"], labels=torch.from_numpy(labels),
                                  present=(speaking, True, speaking),
                                  personality=torch.from_numpy(personalities[character].copy()),
                                  key=f"{split}:{index}:character{character}")

    splits = {}
    for offset, (split, count) in enumerate((("train", cfg.train_samples), ("valid", cfg.valid_samples),
                                             ("test", cfg.test_samples))):
        split_rng = np.random.default_rng([cfg.seed, offset + 1])
        samples = [sample(split_rng, i, split) for i in range(count)]
        splits[split] = RamerDataset(samples, cfg.label_names, cfg.dims, name=f"synthetic:{split}",
                                     source=f"make_synthetic(seed={cfg.seed})")
    return DatasetSplits(**splits)
