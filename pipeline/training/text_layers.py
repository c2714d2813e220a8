"""Tuning MiniLM's top blocks on labelled text: the default checkpoint's text encoder.

Frozen MiniLM sentence features leave MELD and GoEmotions well short of fine-tuned encoders, and fine-tuning
all six blocks on 2 cores takes too long for the default model's rebuild (about 11 minutes an epoch). So the
blocks below ``first_layer`` stay frozen: their states are computed once (:meth:`TextEncoder.lower_states`),
and only the top blocks are trained, over those states, with one linear head per task on the mean of the
word-piece embeddings that the pipeline keeps ([CLS]/[SEP] dropped). The heads are thrown away; the blocks are saved
with :func:`extractors.text_features.save_tuned_layers` and read by every later :class:`TextEncoder`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from extractors.text_features import TextEncoder, pad_states

log = logging.getLogger(__name__)


@dataclass
class TextLayerTuning:
    first_layer: int = 2          # blocks 0..1 of MiniLM-L6 stay frozen: half the cost of full tuning (measured)
    epochs: int = 2               # what fits the default model's 30-minute rebuild on 2 cores
    learning_rate: float = 5e-5   # the usual BERT fine-tuning rate; constant
    weight_decay: float = 0.01
    batch_size: int = 32          # texts of one task per step; batches group similar lengths
    bucket: int = 3200            # texts shuffled together before sorting by length into batches
    seed: int = 7


@dataclass
class TextTask:
    """One labelled text set: lower states per text ([L_i, D] with [CLS] first and [SEP] last) and labels."""

    states: list[np.ndarray]
    labels: np.ndarray            # [N, C] multi-hot
    single_label: bool            # softmax cross-entropy (one label per text) or per-label sigmoid


def _pooled(encoder: TextEncoder, states: list[np.ndarray], first_layer: int) -> torch.Tensor:
    """[B, D] mean of the top blocks' word-piece outputs (special tokens excluded)."""
    x, valid = pad_states(states, encoder.device)                                   # [B, L, D], [B, L]
    hidden = encoder.run_upper(x, valid, first_layer)                               # [B, L, D]
    words = valid.clone()
    words[:, 0] = False
    words[torch.arange(len(states)), valid.sum(1) - 1] = False                       # [SEP]
    weights = words.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _batches(tasks: dict[str, TextTask], tuning: TextLayerTuning, rng: np.random.Generator) -> list[tuple[str, list[int]]]:
    batches = []
    for name, task in tasks.items():
        usable = np.array([i for i, s in enumerate(task.states) if len(s) > 2])
        order = usable[rng.permutation(len(usable))]
        for first in range(0, len(order), tuning.bucket):
            bucket = sorted(order[first: first + tuning.bucket].tolist(), key=lambda i: len(task.states[i]))
            batches += [(name, bucket[k: k + tuning.batch_size]) for k in range(0, len(bucket), tuning.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def tune_text_layers(encoder: TextEncoder, tasks: dict[str, TextTask], tuning: TextLayerTuning | None = None,
                     on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train `encoder`'s blocks from ``tuning.first_layer`` on in place; returns the history
    ({epoch, loss, seconds} per epoch). `on_epoch(epoch, history_row)` is called after each epoch."""
    tuning = tuning or TextLayerTuning()
    torch.manual_seed(tuning.seed)
    rng = np.random.default_rng(tuning.seed)
    blocks = encoder.upper_blocks(tuning.first_layer)
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(encoder.model.config.hidden_size, task.labels.shape[1])
                                 for name, task in tasks.items()}).to(encoder.device)
    for parameter in encoder.model.parameters():
        parameter.requires_grad_(False)
    parameters = [*blocks.parameters(), *heads.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=tuning.learning_rate, weight_decay=tuning.weight_decay)
    labels = {name: torch.as_tensor(task.labels, dtype=torch.float32) for name, task in tasks.items()}
    history = []
    blocks.train()
    try:
        for epoch in range(tuning.epochs):
            started, losses = time.perf_counter(), []
            for name, chosen in _batches(tasks, tuning, rng):
                logits = heads[name](_pooled(encoder, [tasks[name].states[i] for i in chosen], tuning.first_layer))
                target = labels[name][chosen].to(encoder.device)
                loss = (torch.nn.functional.cross_entropy(logits, target.argmax(1)) if tasks[name].single_label
                        else torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - started}
            history.append(row)
            log.info("text layers epoch %d: loss %.4f, %.0f s", epoch, row["loss"], row["seconds"])
            if on_epoch is not None:
                on_epoch(epoch, row)
    finally:
        blocks.eval()
        for parameter in encoder.model.parameters():
            parameter.requires_grad_(False)
    return {"epochs": history, "tuning": tuning.__dict__.copy()}
