"""MiniLM text features: meaning-aware embeddings, token sequences, per-speaker spans."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.contracts import SpeechSegment, Word
from extractors.text_features import D_TEXT, TextConfig, TextEncoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    emb = encoder.sentence_embeddings(["I am so happy today", "Today I feel very glad", "The train leaves at noon"])
    assert emb.shape == (3, D_TEXT) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    similarity = emb @ emb.T
    assert similarity[0, 1] > 0.6 and similarity[0, 2] < 0.3 and similarity[1, 2] < 0.3


def test_token_embeddings_one_row_per_word_piece(encoder):
    tokens = encoder.token_embeddings("Hello there, general Kenobi")
    expected = len(encoder.tokenizer.tokenize("Hello there, general Kenobi"))
    assert tokens.shape == (expected, D_TEXT)
    assert encoder.token_embeddings("   ").shape == (0, D_TEXT)
    assert encoder.sentence_embeddings([]).shape == (0, D_TEXT)


def segment(i, start, end, text, turn):
    words = text.split()
    step = (end - start) / len(words)
    return SpeechSegment(id=f"S{i}", start=start, end=end, text=text, turn=turn,
                         words=[Word(w, start + k * step, start + (k + 1) * step, 1.0) for k, w in enumerate(words)])


def test_span_features_per_speaker(encoder):
    segments = [segment(0, 0.0, 2.0, "I love this place", "SPK0"), segment(1, 2.0, 4.0, "Get out of here", "SPK1")]
    own = encoder.span_features(segments, 0.0, 4.0, speaker="SPK0")
    np.testing.assert_allclose(own, encoder.token_embeddings("I love this place"), atol=1e-5)
    assert encoder.span_features(segments, 0.0, 1.9, speaker="SPK1").shape == (0, D_TEXT)
    sentences = TextEncoder(TextConfig(granularity="sentence")).span_features(segments, 0.0, 4.0)
    assert sentences.shape == (2, D_TEXT)
    # Only the words whose middle lies in the span count: "I love" (0-1 s).
    half = encoder.span_features(segments, 0.0, 1.0, speaker="SPK0")
    np.testing.assert_allclose(half, encoder.token_embeddings("I love"), atol=1e-5)


TEXTS = ["Hello there, general Kenobi", "", "I hate you!", "Oh my god, I can't believe you did that to me, Ross!",
         "ok"]


def test_the_forward_pass_split_at_a_block_gives_the_token_embeddings(encoder):
    """lower_states + upper_tokens (what the default model's rebuild trains and encodes with) is the pipeline's
    token_embeddings: texts of different lengths share padded batches, a blank text stays empty."""
    tokens = encoder.upper_tokens(encoder.lower_states(TEXTS, 4), 4)
    for text, got in zip(TEXTS, tokens, strict=True):
        expected = encoder.token_embeddings(text)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
    whole = encoder.upper_tokens(encoder.lower_states(TEXTS[:1], 0), 0)[0]
    np.testing.assert_allclose(whole, encoder.token_embeddings(TEXTS[0]), atol=1e-4)


def test_lower_states_are_the_models_hidden_states_after_that_block(encoder):
    """lower_states runs only the embeddings and the blocks below `layer`: the same rows as the whole model's
    hidden_states[layer] (padding, batches of mixed lengths)."""
    import torch

    for layer in (0, 2, 6):
        states = encoder.lower_states(TEXTS, layer)
        for text, got in zip(TEXTS, states, strict=True):
            if not text.strip():
                assert got.shape == (0, D_TEXT)
                continue
            batch = encoder.tokenizer(text, return_tensors="pt")
            with torch.inference_mode():
                expected = encoder.model(**batch, output_hidden_states=True).hidden_states[layer][0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_tuned_layers_replace_only_the_top_blocks(encoder, tmp_path):
    import copy

    import torch

    from extractors.text_features import save_tuned_layers

    changed = copy.deepcopy(encoder.model)
    with torch.no_grad():
        for parameter in changed.encoder.layer[5].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        changed.encoder.layer[1].attention.self.query.weight.mul_(3.0)   # below the tuned blocks: not saved
    path = save_tuned_layers(changed, 4, tmp_path / "text_layers.safetensors")
    tuned = TextEncoder(tuned_layers=path)
    assert tuned.tuned_from == 4 and encoder.tuned_from is None
    np.testing.assert_array_equal(tuned.lower_states(TEXTS, 4)[0], encoder.lower_states(TEXTS, 4)[0])
    reference = copy.deepcopy(encoder.model)
    for i in (4, 5):
        reference.encoder.layer[i] = changed.encoder.layer[i]
    batch = encoder.tokenizer(TEXTS[3], return_tensors="pt")
    with torch.inference_mode():
        expected = reference(**batch).last_hidden_state[0, 1:-1].numpy()
    got = tuned.token_embeddings(TEXTS[3])
    np.testing.assert_allclose(got, expected, atol=2e-2)        # the blocks are stored as float16
    assert np.abs(got - encoder.token_embeddings(TEXTS[3])).mean() > 10 * np.abs(got - expected).mean()


def test_tuned_layers_of_another_kind_are_refused_with_a_message(encoder, tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from extractors.errors import ExtractorError
    from extractors.text_features import TUNED_LAYERS_FORMAT, load_tuned_layers

    not_layers = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(not_layers))
    wrong_shape = tmp_path / "wrong.safetensors"
    save_file({"encoder.layer.5.output.dense.weight": torch.zeros(2, 2)}, str(wrong_shape),
              metadata={"format": json.dumps({"name": TUNED_LAYERS_FORMAT, "first_layer": 5})})
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    for path, words in ((not_layers, "not a ramer-text-layers file"), (wrong_shape, "do not fit this MiniLM"),
                        (broken, "cannot be read")):
        with pytest.raises(ExtractorError, match=words):
            load_tuned_layers(encoder.model, path)
