"""RAMer scoring of moments: multi-person samples, absent modalities empty, inputs prepared as in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.acoustic_features import D_ACOUSTIC
from extractors.moments import ModalityInputs, Moment, MomentConfig
from extractors.text_features import D_TEXT
from extractors.visual_features import D_VISUAL, VISUAL_FEATURE_NAMES
from pipeline.errors import UserError
from pipeline.scoring import EmotionScorer, moment_sample

LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")


def tiny_checkpoint(folder, card: dict, **dims):
    from ramer_core.config import RamerConfig
    from ramer_core.model import RamerModel

    torch.manual_seed(0)
    config = RamerConfig(text_dim=dims.get("text", D_TEXT), visual_dim=dims.get("visual", D_VISUAL),
                         acoustic_dim=dims.get("acoustic", D_ACOUSTIC), num_labels=7, label_names=LABELS,
                         hidden_size=16, num_heads=2, ffn_size=16, text_layers=1, visual_layers=1, acoustic_layers=1,
                         queue_size=32, latent_size=8)
    RamerModel(config).save_pretrained(folder, card=card)
    return folder


def entries():
    rng = np.random.default_rng(0)
    speaker = ModalityInputs("M0", "C0", "speaker", rng.normal(size=(5, D_TEXT)).astype(np.float32),
                             rng.random((6, D_VISUAL)).astype(np.float32),
                             rng.normal(size=(40, D_ACOUSTIC)).astype(np.float32))
    listener = ModalityInputs("M0", "C1", "listener", np.zeros((0, D_TEXT), np.float32),
                              rng.random((4, D_VISUAL)).astype(np.float32), np.zeros((0, D_ACOUSTIC), np.float32))
    return [speaker, listener]


def test_a_moment_is_one_sample_per_character_with_everyone_in_it():
    class Config:
        text_dim, visual_dim, acoustic_dim, personality_dim = D_TEXT, D_VISUAL, D_ACOUSTIC, 0

    sample = moment_sample(entries(), 1, Config)
    assert sample.visual.shape[:2] == (2, 1) and sample.target_person == 1
    assert sample.present.tolist() == [[[True, True, True]], [[False, True, False]]]
    assert not sample.acoustic_mask[1].any() and not sample.text_mask[1].any(), "a listener's voice is empty"
    assert sample.visual_mask[1, 0].sum() == 4


def test_inputs_are_prepared_as_the_checkpoint_was_trained(tmp_path):
    column = VISUAL_FEATURE_NAMES[-1]
    folder = tiny_checkpoint(tmp_path / "ckpt", {"visual_fill": {column: 0.25}, "acoustic_pool_frames": 4,
                                                 "trained_modalities": ["text", "visual"]})
    scorer = EmotionScorer.load(folder)
    prepared = scorer.prepare(entries()[0], MomentConfig())
    assert np.all(prepared.visual[:, VISUAL_FEATURE_NAMES.index(column)] == 0.25)
    assert prepared.acoustic.shape == (10, D_ACOUSTIC)
    np.testing.assert_allclose(prepared.acoustic[0], entries()[0].acoustic[:4].mean(0), rtol=1e-5)
    scores = scorer.score([Moment("M0", 0.0, 2.0, "S0", "C0")], [entries()])
    assert [s["role"] for s in scores] == ["speaker", "listener"]
    assert scores[0]["untrained_modalities"] == ["acoustic"] and scores[1]["untrained_modalities"] == []
    assert scores[1]["modalities"] == ["visual"]


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    with pytest.raises(UserError, match="visual 35"):
        EmotionScorer.load(tiny_checkpoint(tmp_path / "wrong", {}, visual=35))
    with pytest.raises(UserError, match="fills visual columns"):
        EmotionScorer.load(tiny_checkpoint(tmp_path / "fill", {"visual_fill": {"no_such_column": 0.0}}))


def test_cast_personality_reaches_the_sample_and_an_unknown_one_stays_masked():
    class Config:
        text_dim, visual_dim, acoustic_dim, personality_dim = D_TEXT, D_VISUAL, D_ACOUSTIC, 3

    speaker, listener = entries()
    speaker.personality = np.array([0.1, 0.2, 0.3], np.float32)
    sample = moment_sample([speaker, listener], 0, Config)
    assert sample.personality_present.tolist() == [True, False], "no cast vector: absent, never invented"
    np.testing.assert_allclose(sample.personality[0].numpy(), [0.1, 0.2, 0.3])
    assert not sample.personality[1].any()


def scene(index: int, persons: int, rng) -> list[ModalityInputs]:
    """A moment with ``persons`` characters on screen, the first speaking (lengths vary, so padding does)."""
    moment = f"M{index}"
    out = [ModalityInputs(moment, "C0", "speaker", rng.normal(size=(int(rng.integers(2, 9)), D_TEXT)).astype(np.float32),
                          rng.random((int(rng.integers(1, 7)), D_VISUAL)).astype(np.float32),
                          rng.normal(size=(int(rng.integers(5, 60)), D_ACOUSTIC)).astype(np.float32))]
    for p in range(1, persons):
        out.append(ModalityInputs(moment, f"C{p}", "listener", np.zeros((0, D_TEXT), np.float32),
                                  rng.random((int(rng.integers(1, 7)), D_VISUAL)).astype(np.float32),
                                  np.zeros((0, D_ACOUSTIC), np.float32)))
    return out


def test_scoring_a_batch_at_a_time_gives_what_scoring_at_once_gives_with_batches_capped_in_padded_size(
        tmp_path, monkeypatch):
    from ramer_core.datasets.common import collate

    scorer = EmotionScorer.load(tiny_checkpoint(tmp_path / "ckpt", {}))
    rng = np.random.default_rng(1)
    persons = [1, 3, 2, 3, 1, 2, 6, 3, 1, 2]   # 24 samples; one crowded moment
    moments = [Moment(f"M{i}", float(i), i + 1.0, f"S{i}", "C0") for i in range(len(persons))]
    inputs = [scene(i, p, rng) for i, p in enumerate(persons)]

    scorer.batch_size, scorer.batch_mib = 10_000, 1e6
    at_once = scorer.score(moments, inputs)

    passes, predict_one_pass = [], EmotionScorer._probs

    def recording(self, samples):
        batch = collate(samples)
        passes.append((len(samples), sum(batch.features(m).numel() * 4 for m in ("text", "visual", "acoustic"))))
        return predict_one_pass(self, samples)

    monkeypatch.setattr(EmotionScorer, "_probs", recording)
    scorer.batch_size, scorer.batch_mib = 4, 0.25
    batched = scorer.score(moments, iter(inputs))   # a generator is read once, as run.py gives it
    assert all(count <= 4 for count, _ in passes)
    assert all(size <= 0.25 * 2**20 for count, size in passes if count > 1), passes
    assert any(count == 1 for count, _ in passes) and any(count == 4 for count, _ in passes), \
        "the crowded moment's samples go in smaller batches than the others"
    assert sum(count for count, _ in passes) == len(at_once) == sum(persons)
    assert batched == at_once
    assert [(e["moment"], e["character"]) for e in batched] == [
        (f"M{i}", f"C{p}") for i, n in enumerate(persons) for p in range(n)]


def test_the_samples_of_a_moment_share_its_scene():
    from pipeline.scoring import moment_samples

    class Config:
        text_dim, visual_dim, acoustic_dim, personality_dim = D_TEXT, D_VISUAL, D_ACOUSTIC, 0

    samples = moment_samples(entries(), Config)
    assert [s.target_person for s in samples] == [0, 1]
    assert samples[0].acoustic is samples[1].acoustic and samples[0].visual is samples[1].visual
    assert moment_samples([], Config) == []


def test_tuned_text_layers_are_part_of_the_checkpoint_and_of_the_text_stage_key(tmp_path):
    """A checkpoint naming tuned text blocks loads them from its folder: they change its digest and the text
    stage's cache key; a checkpoint whose blocks are missing is refused with a message."""
    from pipeline.config import PipelineConfig
    from pipeline.stages import StageFactory
    from ramer_core.checkpoint import from_pretrained

    folder = tiny_checkpoint(tmp_path / "ckpt", {})
    plain = EmotionScorer.load(folder)
    model = from_pretrained(folder)
    model.config.extra = {"text_tuned_layers": "text_layers.safetensors"}
    layers = tmp_path / "text_layers.safetensors"
    layers.write_bytes(b"first")
    model.save_pretrained(folder, companions={"text_layers.safetensors": layers})
    tuned = EmotionScorer.load(folder)
    assert tuned.text_tuned_layers == folder / "text_layers.safetensors" and plain.text_tuned_layers is None
    assert tuned.digest != plain.digest and tuned.companions == {"text_layers.safetensors": tuned.text_tuned_layers}
    factory = StageFactory(PipelineConfig(), text_tuned_layers=tuned.text_tuned_layers)
    first = factory.model_versions("text")
    (folder / "text_layers.safetensors").write_bytes(b"second")
    assert StageFactory(PipelineConfig(), text_tuned_layers=tuned.text_tuned_layers).model_versions("text") != first
    assert "text-tuned-layers" not in StageFactory(PipelineConfig()).model_versions("text")
    (folder / "text_layers.safetensors").unlink()
    with pytest.raises(UserError, match="tuned text layers"):
        EmotionScorer.load(folder)
