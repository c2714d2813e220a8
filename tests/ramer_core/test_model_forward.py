"""Behaviour of the RAMer forward pass: missing modalities, personality, ablations, state."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from model_builders import forward_and_loss, party_batch, single_batch, tiny_config, train_steps

from ramer_core.config import ABLATIONS, RamerConfig
from ramer_core.errors import RamerInputError
from ramer_core.model import RamerModel


def _model(config, seed=0):
    torch.manual_seed(seed)
    return RamerModel(config)


def _warm(model, config, steps=2):
    """A few training steps so prototypes and queue hold something (outputs then depend on them)."""
    return train_steps(model, [single_batch(config, seed=100 + step) for step in range(steps)]).eval()


def test_output_is_the_mean_of_aggregator_and_classifier_scores():
    config = tiny_config()
    model = _warm(_model(config), config)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[2, 1] = False
    with torch.no_grad():
        out = model(single_batch(config, labels=False, present=present))
        beta = out.parts.beta                                                   # [B, 3, C, H]
        # by hand: classifier = label-wise max over modalities of <beta_m,c, w_m,c>; aggregator per slot
        clf = torch.einsum("bmch,mch->bmc", beta, model.classifier_weight).amax(dim=1)
        agg = model.aggregator(beta.flatten(2)).sigmoid().mean(dim=1)  # beta exists for every slot here
    assert out.parts.beta_valid.all()
    expected = (agg + clf.sigmoid()) / 2
    assert torch.allclose(out.probs, expected, atol=1e-6)
    # both halves matter: neither is a constant nor equal to the other
    assert agg.std() > 1e-3 and clf.sigmoid().std() > 1e-3 and not torch.allclose(agg, clf.sigmoid(), atol=1e-3)
    assert torch.allclose(torch.sigmoid(out.logits), out.probs, atol=1e-6)
    assert torch.equal(out.modalities_used, present)


@pytest.mark.parametrize("variant", ["ramer", "late_fusion"])
def test_missing_modality_input_cannot_change_the_output(variant):
    config = tiny_config() if variant == "ramer" else RamerConfig.late_fusion_baseline(**tiny_config().to_dict() | {
        name: False for name in ABLATIONS.values()})
    model = _warm(_model(config), config)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[1, 2] = False          # no acoustic
    present[2, 0] = False          # no text
    present[3, [0, 2]] = False     # a listener: visual only
    batch = single_batch(config, present=present)
    other = copy.deepcopy(batch)
    other.acoustic[1] = 1e3 * torch.randn_like(other.acoustic[1])
    other.text[2] = -7.0
    other.text[3] = torch.randn_like(other.text[3])
    other.acoustic[3] = torch.randn_like(other.acoustic[3])
    with torch.no_grad():
        (reference, reference_loss), (changed, changed_loss) = forward_and_loss(model, batch), forward_and_loss(model, other)
    assert torch.equal(reference.probs, changed.probs)
    for name in reference_loss.terms:
        assert torch.equal(reference_loss.terms[name], changed_loss.terms[name]), name
    # ...while a present modality's input does change it (the check above is not vacuous)
    other.visual[3] = torch.randn_like(other.visual[3])  # (a constant shift would vanish in LayerNorm)
    with torch.no_grad():
        assert not torch.allclose(model(other).probs[3], reference.probs[3])
    assert torch.equal(reference.modalities_used, present)


def test_absent_flag_and_empty_mask_both_mean_missing_in_training_too():
    config = tiny_config(dropout=0.0)
    model = _warm(_model(config), config)
    model.train()
    batch = single_batch(config)
    batch.acoustic_mask[4] = False  # present flag True but no valid step: treated as missing
    other = copy.deepcopy(batch)
    other.acoustic[4] = 50.0
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(3)
    a, a_loss = forward_and_loss(first, batch)
    torch.manual_seed(3)
    b, b_loss = forward_and_loss(second, other)
    assert torch.equal(a.probs, b.probs) and torch.equal(a_loss.total, b_loss.total)
    assert not a.modalities_used[4, 2]


def test_personality_branch_with_several_characters_and_masked_absence():
    config = tiny_config(personality_dim=10)
    model = _model(config)
    batch = party_batch(config)
    out, loss = forward_and_loss(model, batch)
    assert out.probs.shape == (3, 4) and torch.isfinite(loss.total)
    loss.total.backward()
    assert model.personality.embed[1].weight.grad.abs().sum() > 0
    assert model.personality.fuse[0].weight.grad.abs().sum() > 0
    assert model.personality.inter[0].query.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        reference = model(batch).probs
        # sample 0: character 1's personality is marked absent -> its values are never used
        hidden = copy.deepcopy(batch)
        hidden.personality[0, 1] = 100.0
        assert torch.equal(model(hidden).probs, reference)
        # a known personality of another character in the moment does matter (inter-personal attention)
        known = copy.deepcopy(batch)
        known.personality[0, 2] = torch.randn_like(known.personality[0, 2])
        assert not torch.allclose(model(known).probs[0], reference[0])
        # so does another character's visual input, and another segment of the target character
        seen = copy.deepcopy(batch)
        seen.visual[0, 1, 1] = torch.randn_like(seen.visual[0, 1, 1])
        assert not torch.allclose(model(seen).probs[0], reference[0])
        segment = copy.deepcopy(batch)
        segment.visual[0, 0, 0] = torch.randn_like(segment.visual[0, 0, 0])  # target is (person 0, segment 1)
        assert not torch.allclose(model(segment).probs[0], reference[0])
        # without any personality the branch still runs (attention over characters/segments only)
        none = replace(batch, personality=None, personality_present=None)
        assert torch.isfinite(model(none).probs).all()


def test_without_personality_branch_other_characters_do_not_matter():
    config = tiny_config(personality_dim=10, use_personality=False)
    model = _model(config).eval()
    batch = party_batch(config)
    with torch.no_grad():
        reference = model(batch).probs
        other = copy.deepcopy(batch)
        other.visual[0, 1] = torch.randn_like(other.visual[0, 1])
        other.personality += 1.0
        assert torch.equal(model(other).probs, reference)


REMOVED_TERMS = {
    "no_reconstruction": {"recon_mse"},
    "no_cross_modal": {"clf_aug", "aug_mse"},
    "no_adversarial": {"adversarial", "orthogonality", "common_clf"},
    "no_contrastive": {"supcon"},
    "no_personality": set(),  # no loss term of its own (the public code has none): the branch goes
    "no_stack_shuffle": {"shuffle"},
}


def test_each_ablation_switch_removes_its_loss_terms():
    base = tiny_config(personality_dim=10)
    _, full = forward_and_loss(_model(base), party_batch(base))
    all_terms = set(full.terms)
    assert all_terms == {"clf_u", "clf_beta", "aggregator", "clf_aug", "aug_mse", "recon_mse", "shuffle",
                         "adversarial", "orthogonality", "common_clf", "supcon"}
    assert set(REMOVED_TERMS) == set(ABLATIONS)
    for name, removed in REMOVED_TERMS.items():
        model = _model(base.ablation(name))
        _, loss = forward_and_loss(model, party_batch(base))
        assert set(loss.terms) == all_terms - removed, name
        assert torch.allclose(loss.total, sum(loss.terms.values()))
    assert _model(base.ablation("no_personality")).personality is None
    baseline = _model(RamerConfig.late_fusion_baseline(**{k: v for k, v in base.to_dict().items()
                                                          if k not in ABLATIONS.values()}))
    assert set(forward_and_loss(baseline, party_batch(base))[1].terms) == {"clf_u", "clf_beta", "aggregator"}
    assert baseline.autoencoders is None and baseline.personality is None
    assert not hasattr(baseline, "discriminator") and baseline.queue.numel() == 0


def test_zero_weight_drops_a_term_and_weights_scale_it():
    config = tiny_config(dropout=0.0)
    batch = single_batch(config)
    torch.manual_seed(0)
    one = forward_and_loss(_model(config).eval(), batch)[1]
    doubled = forward_and_loss(_model(replace(config, weight_recon_mse=2.0)).eval(), batch)[1]
    assert torch.allclose(doubled.terms["recon_mse"], 2 * one.terms["recon_mse"])
    assert "beta_mse" not in one.terms  # public-code weight 0
    assert "recon_mse" not in forward_and_loss(_model(replace(config, weight_recon_mse=0.0)), batch)[1].terms


def test_queue_prototypes_and_shuffle_step_change_only_in_update_state():
    config = tiny_config(queue_size=300)
    model = _model(config)
    batch = single_batch(config)
    for mode in (model.eval, model.train):  # forward and loss change nothing, in either mode
        mode()
        forward_and_loss(model, batch)[1].total.backward()
        assert int(model.queue_count) == 0 and model.prototypes.abs().sum() == 0 and model.shuffle_step == 0
    out, _ = forward_and_loss(model, batch)
    model.update_state(out, batch.labels)
    # 9 views ({U, aug, beta} x 3 modalities) x 6 samples x 4 labels enter the queue
    assert int(model.queue_count) == int(model.queue_ptr) == 216 and model.shuffle_step == 1
    assert set(model.queue_ids[:216].tolist()) == set(range(2 * 3 * 4))  # (modality, label, on/off) ids
    assert torch.allclose(model.queue[:216].norm(dim=1), torch.ones(216))
    assert torch.equal(model.queue[:216], out.parts.contrastive_views[0])  # the very features the loss used
    out, _ = forward_and_loss(model, batch)
    model.update_state(out, batch.labels)
    assert int(model.queue_count) == 300 and int(model.queue_ptr) == (2 * 216) % 300
    assert model.prototypes.abs().sum() > 0
    model.reset_state()
    assert int(model.queue_count) == 0 and model.prototypes.abs().sum() == 0


def test_prototype_ema_equals_sequential_updates():
    config = tiny_config()
    model = _model(config)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(5, 3, 4, config.latent_size, generator=g)
    present = torch.rand(5, 3, generator=g) > 0.3
    labels = (torch.rand(5, 4, generator=g) > 0.5).float()
    start = torch.randn(3, 4, 2, config.latent_size, generator=g)
    model.prototypes.copy_(start)
    model._update_prototypes(latents, present, labels)
    expected = start.clone()
    normalized = torch.nn.functional.normalize(latents, dim=-1)
    for b in range(5):  # the public code's loop, one sample at a time (only present modalities)
        for m in range(3):
            if not present[b, m]:
                continue
            for c in range(4):
                slot = 0 if labels[b, c] == 1 else 1
                expected[m, c, slot] = 0.99 * expected[m, c, slot] + 0.01 * normalized[b, m, c]
    assert torch.allclose(model.prototypes, expected, atol=1e-6)


def test_stack_shuffle_in_the_model_is_seeded():
    config = tiny_config(dropout=0.0)
    batch = single_batch(config)

    def shuffle_loss(seed, step):
        model = _model(config)
        model.reseed(seed)
        model.shuffle_step = step
        return forward_and_loss(model.eval(), batch)[1].terms["shuffle"]

    assert torch.equal(shuffle_loss(1, 0), shuffle_loss(1, 0))
    assert not torch.equal(shuffle_loss(1, 0), shuffle_loss(2, 0))
    assert not torch.equal(shuffle_loss(1, 0), shuffle_loss(1, 1))


def test_bad_inputs_raise_clear_errors():
    config = tiny_config()
    model = _model(config)
    wrong = single_batch(tiny_config(text_dim=13))
    with pytest.raises(RamerInputError, match="text_dim"):
        model(wrong)
    labels = single_batch(config)
    labels.labels = labels.labels[:, :3]
    with pytest.raises(RamerInputError, match="labels"):
        model(labels)
    with pytest.raises(RamerInputError, match="labels"):
        model.loss(model(single_batch(config)), labels.labels)
    with pytest.raises(RamerInputError, match="label_names"):
        RamerConfig(num_labels=3)
    with pytest.raises(RamerInputError, match="ablation"):
        config.ablation("no_such_part")


def test_runs_under_mixed_precision_autocast():
    config = tiny_config(personality_dim=10)
    model = _model(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, loss = forward_and_loss(model, party_batch(config))
    assert torch.isfinite(loss.total) and out.probs.dtype in (torch.float32, torch.bfloat16)
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_edge_batches_train_without_nan(batch_size):
    """A modality absent from the whole batch, a sample with nothing present, a batch of one."""
    config = tiny_config()
    model = _model(config)
    present = torch.ones(batch_size, 3, dtype=torch.bool)
    present[:, 2] = False          # no acoustic anywhere
    present[0] = False             # first sample: nothing at all
    out, loss = forward_and_loss(model, single_batch(config, b=batch_size, present=present))
    assert torch.isfinite(loss.total) and torch.isfinite(out.probs).all()
    loss.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.encoders[2].input_proj.weight.grad is None  # the absent modality's encoder never ran


def test_classification_gradient_reaches_the_encoders():
    """The public code builds label attention, autoencoders, cross-modal projections and the aggregator
    with xavier_uniform_ (MLLinear / MLAttention); with PyTorch's default init (a third of the variance)
    the beta classifier's gradient reaching U behind those ~6 layers was ~20x smaller."""
    config = replace(tiny_config(), hidden_size=64, num_heads=4, latent_size=32)

    def gradient_ratio(model):
        model.train()
        units = []
        handles = [attention.register_forward_hook(lambda module, args, out: units.append(out) or out.retain_grad())
                   for attention in model.label_attention]
        out, loss = forward_and_loss(model, single_batch(config, b=16, seed=3))
        loss.terms["clf_beta"].backward()
        for handle in handles:
            handle.remove()
        return float(torch.stack([u.grad.norm() for u in units]).norm() / model.classifier_weight.grad.norm())

    xavier = gradient_ratio(_model(config))
    default = _model(config)
    for module in default.modules():  # the same model with PyTorch's default init outside the encoders
        if isinstance(module, torch.nn.Linear) and not any(module is m for m in default.encoders.modules()):
            module.reset_parameters()
    assert xavier > 0.01 and xavier > 5 * gradient_ratio(default)


def test_a_non_finite_step_leaves_queue_and_prototypes_untouched():
    config = tiny_config(queue_size=300)
    model = _model(config)
    train_steps(model, [single_batch(config)])
    queue, ids, count = model.queue.clone(), model.queue_ids.clone(), int(model.queue_count)
    prototypes = model.prototypes.clone()
    poisoned = single_batch(config, seed=1)
    poisoned.text[0, 0, 0, 0, 0] = float("nan")  # present text of sample 0
    out, loss = forward_and_loss(model, poisoned)
    assert not torch.isfinite(loss.total)  # the trainer skips this step; were update_state called anyway ...
    model.update_state(out, poisoned.labels)
    assert int(model.queue_count) == count and torch.equal(model.queue_ids, ids)  # ... nothing is stored
    assert torch.equal(model.queue, queue) and torch.equal(model.prototypes, prototypes)
