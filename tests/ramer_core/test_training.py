"""Trainer and evaluation with the real RAMer model on a small synthetic benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramer_core.config import RamerConfig
from ramer_core.datasets import SyntheticConfig, make_synthetic
from ramer_core.errors import RamerInputError
from ramer_core.metrics import binarize, multilabel_metrics
from ramer_core.model import RamerModel
from ramer_core.training import (
    TrainingConfig,
    evaluate,
    model_thresholds,
    predict,
    save_trained,
    train,
    warmup_linear_schedule,
)

TINY_MODEL = dict(hidden_size=32, text_layers=1, visual_layers=1, acoustic_layers=1, num_heads=4, ffn_size=64,
                  latent_size=16, queue_size=256, dropout=0.1)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(SyntheticConfig(train_samples=256, valid_samples=96, test_samples=128, seed=5))


def _config(data, **switches) -> RamerConfig:
    dims = data.train.dims
    return RamerConfig(text_dim=dims.text, visual_dim=dims.visual, acoustic_dim=dims.acoustic,
                       num_labels=len(data.label_names), label_names=data.label_names,
                       personality_dim=dims.personality, **TINY_MODEL, **switches)


def _fit(data, seed=0, epochs=2, **kwargs):
    torch.manual_seed(seed)
    model = RamerModel(_config(data))
    result = train(model, data.train, data.valid,
                   TrainingConfig(epochs=epochs, batch_size=64, learning_rate=2e-3, seed=seed, device="cpu", **kwargs))
    return model, result


def test_warmup_then_linear_decay():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1.0)
    schedule = warmup_linear_schedule(optimizer, total_steps=20, warmup_ratio=0.1)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 18 / 18])
    assert rates[2:] == pytest.approx([(20 - s) / 18 for s in range(2, 20)])


def test_same_seed_same_metrics_and_checkpoint_round_trip(data, tmp_path):
    model_a, result_a = _fit(data, seed=3)
    model_b, result_b = _fit(data, seed=3)
    assert [h.train_loss for h in result_a.history] == [h.train_loss for h in result_b.history]
    assert result_a.valid_metrics == result_b.valid_metrics
    probs_a, probs_b = predict(model_a, data.test).probs, predict(model_b, data.test).probs
    assert np.array_equal(probs_a, probs_b)
    # the threshold picked on validation is the model's threshold and reproduces the reported valid F1
    assert model_a.config.threshold == result_a.threshold.global_threshold
    valid = predict(model_a, data.valid)
    f1 = multilabel_metrics(valid.labels, binarize(valid.probs, model_a.config.threshold))["micro_f1"]
    assert f1 == pytest.approx(result_a.threshold.micro_f1)
    assert result_a.history[result_a.best_epoch - 1].valid_micro_f1 == max(h.valid_micro_f1 for h in result_a.history)

    report = evaluate(model_a, data.test)
    missing = data.test.missing_acoustic_and_text()
    assert report["missing_acoustic_text"]["samples"] == int(missing.sum()) > 0
    assert report["overall"]["samples"] == len(data.test)
    config = TrainingConfig(epochs=2, learning_rate=2e-3, seed=3, device="cpu")
    save_trained(model_a, tmp_path / "ckpt", result_a, data.train, data.valid, config, report)
    loaded = RamerModel.from_pretrained(tmp_path / "ckpt")
    assert np.allclose(predict(loaded, data.test).probs, probs_a, atol=1e-6)
    assert loaded.config.threshold == model_a.config.threshold
    card = loaded.card
    assert card["training_data"]["train"]["samples"] == 256
    assert card["metrics"]["test"]["overall"]["micro_f1"] == pytest.approx(report["overall"]["micro_f1"])
    assert card["training"]["seed"] == 3

    _, other = _fit(data, seed=4)
    assert [h.train_loss for h in other.history] != [h.train_loss for h in result_a.history]


def test_training_learns_the_planted_signal():
    # The late-fusion configuration of the real model learns fastest; the trainer is the same for all.
    data = make_synthetic(SyntheticConfig(train_samples=1000, valid_samples=200, test_samples=400, seed=6))
    dims = data.train.dims
    config = RamerConfig.late_fusion_baseline(
        text_dim=dims.text, visual_dim=dims.visual, acoustic_dim=dims.acoustic, num_labels=len(data.label_names),
        label_names=data.label_names, personality_dim=dims.personality, **TINY_MODEL)
    torch.manual_seed(1)
    model = RamerModel(config)
    result = train(model, data.train, data.valid,
                   TrainingConfig(epochs=8, batch_size=32, learning_rate=3e-3, seed=1, device="cpu"))
    test = evaluate(model, data.test)
    labels = data.test.labels_matrix().numpy()
    # predicting every label for every sample is the best constant guess for micro-F1 at these rates
    constant = multilabel_metrics(labels, np.ones_like(labels))["micro_f1"]
    assert test["overall"]["micro_f1"] > constant + 0.1
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_per_label_thresholds_are_kept_in_the_card(data, tmp_path):
    model, result = _fit(data, seed=2, epochs=1, threshold_search="per_label")
    # right after training (before any save) the model already scores with its per-label thresholds
    assert model_thresholds(model) == list(result.threshold.thresholds)
    assert evaluate(model, data.test) == evaluate(model, data.test, threshold=list(result.threshold.thresholds))
    save_trained(model, tmp_path / "ckpt", result, data.train, data.valid,
                 TrainingConfig(epochs=1, threshold_search="per_label"))
    loaded = RamerModel.from_pretrained(tmp_path / "ckpt")
    assert model_thresholds(loaded) == list(result.threshold.thresholds)
    assert len(model_thresholds(loaded)) == len(data.label_names)


def test_mismatched_dataset_is_rejected(data):
    dims = data.train.dims
    model = RamerModel(RamerConfig(text_dim=dims.text + 1, visual_dim=dims.visual, acoustic_dim=dims.acoustic,
                                   num_labels=len(data.label_names), label_names=data.label_names, **TINY_MODEL))
    with pytest.raises(RamerInputError, match="do not match the model"):
        train(model, data.train, data.valid, TrainingConfig(epochs=1, device="cpu"))
    with pytest.raises(RamerInputError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")


def test_json_safe_turns_nan_metrics_of_empty_subsets_into_null():
    import json

    from ramer_core.training import json_safe

    report = {"missing_acoustic_text": {"micro_f1": float("nan"), "samples": np.int64(0)}, "t": (np.float32(0.5),)}
    assert json.dumps(json_safe(report), allow_nan=False, sort_keys=True) == (
        '{"missing_acoustic_text": {"micro_f1": null, "samples": 0}, "t": [0.5]}')


def test_class_balanced_sampler_weights_follow_label_counts():
    from ramer_core.training import class_balanced_sampler

    data = make_synthetic(SyntheticConfig(train_samples=64, valid_samples=8, test_samples=8, seed=1))
    sampler = class_balanced_sampler(data.train, torch.Generator().manual_seed(0))
    labels = data.train.labels_matrix()
    counts = labels.sum(0)
    single = int(torch.nonzero(labels.sum(1) == 1)[0])  # a sample with one label: weight 1 / that label's count
    label = int(labels[single].nonzero())
    assert float(sampler.weights[single]) == pytest.approx(1.0 / float(counts[label]))
    assert sampler.num_samples == 64 and sampler.replacement
