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
