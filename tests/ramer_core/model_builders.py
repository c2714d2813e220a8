"""Small configurations and batches shared by the model tests (tiny dims keep them fast); not a test module."""

from __future__ import annotations

import torch

from ramer_core.batch import RamerBatch
from ramer_core.config import RamerConfig

TINY = dict(
    text_dim=12, visual_dim=7, acoustic_dim=5, num_labels=4, label_names=("a", "b", "c", "d"),
    hidden_size=32, num_heads=4, ffn_size=32, text_layers=1, visual_layers=1, acoustic_layers=1,
    queue_size=96, max_positions=16,
)


def tiny_config(**overrides) -> RamerConfig:
    return RamerConfig(**{**TINY, **overrides})


def single_batch(config: RamerConfig, b: int = 6, t: int = 5, seed: int = 0, present=None, labels: bool = True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 3:] = False  # one padded sequence
    if present is None:
        present = torch.ones(b, 3, dtype=torch.bool)
    return RamerBatch.single(
        torch.randn(b, t, config.text_dim, generator=g), torch.randn(b, t, config.visual_dim, generator=g),
        torch.randn(b, t, config.acoustic_dim, generator=g), mask.clone(), mask.clone(), mask.clone(), present,
        labels=(torch.rand(b, config.num_labels, generator=g) > 0.5).float() if labels else None,
    )


def party_batch(config: RamerConfig, b: int = 3, p: int = 3, s: int = 2, t: int = 4, seed: int = 0):
    """A multi-party batch (MEmoR layout): P characters x S segments, a target per sample."""
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(b, p, s, t, dtype=torch.bool)
    present = torch.ones(b, p, s, 3, dtype=torch.bool)
    present[0, 1, 0, 2] = False
    present[1, 2, :, 0] = False
    return RamerBatch(
        text=torch.randn(b, p, s, t, config.text_dim, generator=g),
        visual=torch.randn(b, p, s, t, config.visual_dim, generator=g),
        acoustic=torch.randn(b, p, s, t, config.acoustic_dim, generator=g),
        text_mask=ones.clone(), visual_mask=ones.clone(), acoustic_mask=ones.clone(), present=present,
        target_person=torch.tensor([0, 2, 1])[:b], target_segment=torch.tensor([1, 0, 1])[:b],
        personality=torch.randn(b, p, config.personality_dim, generator=g),
        personality_present=torch.tensor([[True, False, True], [True, True, True], [False, True, True]])[:b, :p],
        labels=(torch.rand(b, config.num_labels, generator=g) > 0.5).float(),
    )


def forward_and_loss(model, batch):
    """``model(batch)`` and its weighted loss (``RamerModel.loss``)."""
    out = model(batch)
    return out, model.loss(out, batch.labels)


def train_steps(model, batches, lr: float = 1e-3):
    """Plain training steps as the trainer takes them: loss, backward, AdamW step, update_state."""
    optimizer = torch.optim.AdamW(model.param_groups(), lr=lr)
    model.train()
    for batch in batches:
        out, loss = forward_and_loss(model, batch)
        loss.total.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_state(out, batch.labels)
    return model
