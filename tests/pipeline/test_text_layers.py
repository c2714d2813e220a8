"""Tuning MiniLM's top blocks (pipeline.training.text_layers): only those blocks change, and the loss falls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.text_features import TextEncoder
from pipeline.training.text_layers import TextLayerTuning, TextTask, tune_text_layers

ANGRY = ["I am furious with you", "Get out of my house right now", "This makes me so mad", "I hate this",
         "How dare you do that", "Stop lying to me, I'm sick of it"]
HAPPY = ["I am so happy for you", "This is wonderful news", "I love this so much", "What a great day",
         "Thank you, this is amazing", "We won, I can't stop smiling"]


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    return TextEncoder(device="cpu")


def test_only_the_top_blocks_change_and_the_loss_falls(encoder):
    texts = ANGRY + HAPPY
    labels = np.zeros((len(texts), 2), np.float32)
    labels[: len(ANGRY), 0] = labels[len(ANGRY):, 1] = 1
    tuning = TextLayerTuning(first_layer=4, epochs=8, learning_rate=3e-4, batch_size=4, seed=0)
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    history = tune_text_layers(encoder, {"toy": TextTask(encoder.lower_states(texts, 4), labels, True)}, tuning)
    losses = [e["loss"] for e in history["epochs"]]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0], losses
    for name, parameter in encoder.model.named_parameters():
        tuned_block = name.startswith(("encoder.layer.4.", "encoder.layer.5."))
        assert torch.equal(parameter, before[name]) != tuned_block, name
        assert not parameter.requires_grad
    assert not encoder.model.training
