"""What the RAMer model does with padding, its contrastive ids, the stack shuffle's label pairing, the
prototype fill, the gradient reversal, and one time step per sequence: each checked against a case
small enough to compute by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from model_builders import forward_and_loss, party_batch, single_batch, tiny_config, train_steps

import ramer_core.model as model_module
from ramer_core.datasets.common import RamerSample, collate
from ramer_core.losses import masked_bce_with_logits
from ramer_core.model import RamerModel


def _model(config, seed=0):
    torch.manual_seed(seed)
    return RamerModel(config)


def _party_sample(config, persons, segments, steps, seed, target=(0, 0)):
    """One MEmoR-like sample: every character has a personality, one modality missing somewhere."""
    g = torch.Generator().manual_seed(seed)
    present = torch.ones(persons, segments, 3, dtype=torch.bool)
    present[-1, 0, 2] = False
    mask = torch.ones(persons, segments, steps, dtype=torch.bool)
    mask[0, 0, steps - 1:] = steps == 1  # one shorter sequence
    return RamerSample(
        text=torch.randn(persons, segments, steps, config.text_dim, generator=g),
        visual=torch.randn(persons, segments, steps, config.visual_dim, generator=g),
        acoustic=torch.randn(persons, segments, steps, config.acoustic_dim, generator=g),
        text_mask=mask.clone(), visual_mask=mask.clone(), acoustic_mask=mask.clone(), present=present,
        labels=(torch.rand(config.num_labels, generator=g) > 0.5).float(),
        target_person=target[0], target_segment=target[1],
        personality=torch.randn(persons, config.personality_dim, generator=g),
        personality_present=torch.ones(persons, dtype=torch.bool),
    )


def test_scores_do_not_depend_on_padding_or_batch_order():
    config = tiny_config(personality_dim=6)
    model = train_steps(_model(config), [party_batch(config, seed=s) for s in range(2)]).eval()
    small = _party_sample(config, persons=2, segments=2, steps=3, seed=1, target=(1, 1))
    other = _party_sample(config, persons=2, segments=1, steps=2, seed=2)
    big = _party_sample(config, persons=4, segments=5, steps=6, seed=3, target=(2, 4))  # pads P, S and T
    with torch.no_grad():
        alone = model(collate([small])).probs
        beside_big = model(collate([small, big])).probs
        reordered = model(collate([other, big, small])).probs
        big_alone = model(collate([big])).probs
    # padded persons/segments are no attention keys, padded time steps no keys either
    assert torch.allclose(beside_big[0], alone[0], atol=1e-6), (beside_big[0] - alone[0]).abs().max()
    assert torch.allclose(reordered[2], alone[0], atol=1e-6)
    assert torch.allclose(reordered[1], big_alone[0], atol=1e-6) and torch.allclose(beside_big[1], big_alone[0], atol=1e-6)
    # ... while a real extra segment of the target character does change the score (not vacuous)
    longer = _party_sample(config, persons=2, segments=3, steps=3, seed=1, target=(1, 1))
    longer.text[:, :2], longer.visual[:, :2], longer.acoustic[:, :2] = small.text, small.visual, small.acoustic
    with torch.no_grad():
        assert not torch.allclose(model(collate([longer])).probs[0], alone[0], atol=1e-4)


def test_contrastive_ids_row_by_row():
    config = tiny_config(queue_size=500)
    model = _model(config).eval()
    present = torch.tensor([[True, True, False], [False, True, True]])
    batch = single_batch(config, b=2, present=present)
    batch.labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    out, _ = forward_and_loss(model, batch)
    anchors, ids = model._contrastive_views(out.parts, batch.labels)
    parts, c = out.parts, config.num_labels
    latents = {"U": parts.latents, "aug": model._project(parts.aug), "beta": model._project(parts.beta)}
    valid = {"U": present, "aug": torch.ones_like(present), "beta": parts.beta_valid}
    row = 0
    for view in ("U", "aug", "beta"):              # rows ordered view, sample, modality, label
        for b in range(2):
            for m in range(3):
                if not valid[view][b, m]:
                    continue
                for label in range(c):
                    # the public code's get_cl_labels: text on = c, text off = c + C, visual on = c + 2C, ...
                    on = batch.labels[b, label] == 1
                    assert int(ids[row]) == (2 * m + (0 if on else 1)) * c + label, (view, b, m, label)
                    assert torch.allclose(anchors[row], F.normalize(latents[view][b, m, label], dim=-1), atol=1e-6)
                    row += 1
    assert row == anchors.shape[0] == (4 + 6 + 6) * c  # U only where present
    model.update_state(out, batch.labels)
    assert torch.equal(model.queue_ids[:row], ids)  # what is enqueued carries the same ids


def test_stack_shuffle_scores_each_regrouped_stack_against_its_own_labels(monkeypatch):
    config = tiny_config(dropout=0.0)
    model = _model(config).eval()
    batch = single_batch(config, b=5)
    out = model(batch)
    permutations = torch.Generator().manual_seed(4)

    def fixed_shuffle(length, count, stacks, iterations, generator):  # known, far from the identity
        return torch.stack([torch.randperm(length, generator=permutations) for _ in range(count)])

    monkeypatch.setattr(model_module, "stack_shuffle", fixed_shuffle)
    loss = model._shuffle_loss(out.parts.beta, out.parts.beta_valid, batch.labels)
    permutations.manual_seed(4)
    b, n_mod, c = 5, 3, config.num_labels
    samples = fixed_shuffle(b, c * n_mod, 0, 0, None)         # row c * 3 + m: the sample order of (label c, slot m)
    modalities = fixed_shuffle(n_mod, c * b, 0, 0, None)      # row c * B + b: the modality order of (label c, sample b)
    shuffled = torch.empty_like(out.parts.beta)
    labels = torch.empty(b, n_mod, c)
    for i in range(b):
        for m in range(n_mod):
            for label in range(c):
                source = int(samples[label * n_mod + m, i])
                source_modality = int(modalities[label * b + i, m])
                shuffled[i, m, label] = out.parts.beta[source, source_modality, label]
                labels[i, m, label] = batch.labels[source, label]  # the label goes with the sample it came from
    expected = masked_bce_with_logits(model.aggregator(shuffled.flatten(2)), labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    unpaired = masked_bce_with_logits(model.aggregator(shuffled.flatten(2)), batch.labels[:, None].expand(b, n_mod, c))
    assert not torch.allclose(expected, unpaired, atol=1e-4)  # the check can tell the two apart


def test_missing_modality_is_filled_from_its_prototypes_after_warm_up():
    config = tiny_config(use_cross_modal=False, use_personality=False)
    model = train_steps(_model(config), [single_batch(config, seed=s) for s in range(3)]).eval()
    assert model.prototypes.abs().sum() > 0
    present = torch.ones(4, 3, dtype=torch.bool)
    present[1, 2] = False  # sample 1: no acoustic
    batch = single_batch(config, b=4, present=present)
    with torch.no_grad():
        out = model(batch)
        decoder = model.autoencoders[2].decoder
        positive, negative = decoder(model.prototypes[2, :, 0]), decoder(model.prototypes[2, :, 1])  # [C, H]
    fill = out.parts.beta[1, 2]                                                                     # [C, H]
    # at evaluation each label takes one prototype whole (the public code's hard choice)
    for label in range(config.num_labels):
        assert torch.allclose(fill[label], positive[label], atol=1e-5) or torch.allclose(fill[label], negative[label], atol=1e-5)
    # and the fill reaches the score: other prototypes, other score for the sample missing acoustic only
    model.prototypes[2] = torch.flip(model.prototypes[2], dims=[1])
    with torch.no_grad():
        swapped = model(batch).probs
    assert not torch.allclose(swapped[1], out.probs[1], atol=1e-5)
    assert torch.allclose(swapped[[0, 2, 3]], out.probs[[0, 2, 3]], atol=1e-6)


def test_the_discriminator_gradient_is_reversed_at_the_common_features(monkeypatch):
    config = tiny_config(dropout=0.0)
    batch = single_batch(config)

    def common_gradient():
        model = _model(config).eval()
        _, loss = forward_and_loss(model, batch)
        loss.terms["adversarial"].backward()
        return model.common_extractor[0].weight.grad.clone(), model.discriminator[0].weight.grad.clone()

    reversed_common, reversed_discriminator = common_gradient()
    monkeypatch.setattr(model_module, "reverse_gradient", lambda x, coefficient=1.0: x)
    plain_common, plain_discriminator = common_gradient()
    assert reversed_common.abs().sum() > 0
    # the common extractor sees the discriminator's gradient negated; the discriminator itself does not
    assert torch.allclose(reversed_common, -plain_common, atol=1e-7)
    assert torch.allclose(reversed_discriminator, plain_discriminator, atol=1e-7)


def test_one_time_step_gives_every_label_the_same_unit():
    """The documented degeneracy (model.py): with T = 1 label attention has one step to weigh, so U is
    the same for every label; label-specific parts then act only through the label-wise heads."""
    config = tiny_config(use_personality=False)
    model = _model(config).eval()
    batch = single_batch(config, t=1)
    batch.text_mask[:] = batch.visual_mask[:] = batch.acoustic_mask[:] = True
    with torch.no_grad():
        out = model(batch)
    units = out.parts.units                                               # [B, 3, C, H]
    assert torch.allclose(units, units[:, :, :1].expand_as(units), atol=1e-6)
    longer = single_batch(config, t=4)
    with torch.no_grad():
        spread = model(longer).parts.units
    assert not torch.allclose(spread, spread[:, :, :1].expand_as(spread), atol=1e-4)  # T > 1: labels differ
    _, loss = forward_and_loss(model.train(), batch)
    assert torch.isfinite(loss.total)
