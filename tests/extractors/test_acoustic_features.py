"""Acoustic features: known signals give known pitch/voicing; per-speaker slicing; empty spans."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from extractors.acoustic_features import D_ACOUSTIC, FEATURE_NAMES, AcousticConfig, AcousticFeatureExtractor
from extractors.audio import SAMPLE_RATE, load_audio
from extractors.contracts import SpeakerTurn

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def extractor():
    return AcousticFeatureExtractor()


def tone(hz: float, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_dimension_constant():
    assert D_ACOUSTIC == 47 == len(FEATURE_NAMES)


def test_pitch_and_voicing_of_a_tone(extractor):
    frames = extractor.frames(tone(200.0))
    assert frames.shape == (201, D_ACOUSTIC) and frames.dtype == np.float32
    middle = frames[20:-20]
    np.testing.assert_allclose(np.exp(middle[:, COLUMN["log_f0"]]), 200.0, rtol=0.02)
    assert middle[:, COLUMN["periodicity"]].min() > 0.95
    # A tone twice as loud has 2 * ln 2 more log energy.
    louder = extractor.frames(tone(200.0, amplitude=1.0))[20:-20]
    np.testing.assert_allclose(louder[:, COLUMN["log_energy"]] - middle[:, COLUMN["log_energy"]],
                               2 * np.log(2), atol=0.01)


def test_noise_is_unvoiced_and_flat(extractor):
    noise = (np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE) * 0.1).astype(np.float32)
    frames = extractor.frames(noise)[20:-20]
    assert np.median(frames[:, COLUMN["periodicity"]]) < 0.4
    assert (frames[:, COLUMN["log_f0"]] == 0).mean() > 0.9
    assert np.median(frames[:, COLUMN["spectral_flatness"]]) > 0.3


def test_speech_pitch_in_human_range(extractor, media_dir):
    frames = extractor.frames(load_audio(media_dir / "jfk.flac"))
    voiced = frames[:, COLUMN["log_f0"]] > 0
    assert 0.3 < voiced.mean() < 0.9
    assert 80 < np.exp(np.median(frames[voiced, COLUMN["log_f0"]])) < 250
    assert np.isfinite(frames).all()


def test_speaker_span_takes_only_that_speakers_frames(extractor):
    frames = np.arange(1000, dtype=np.float32)[:, None].repeat(D_ACOUSTIC, 1)  # row t holds t
    turns = [SpeakerTurn(1.0, 2.0, "SPK0"), SpeakerTurn(2.0, 3.0, "SPK1"), SpeakerTurn(4.0, 5.0, "SPK0")]
    rows = extractor.speaker_span(frames, turns, "SPK0", 1.5, 4.5)
    assert rows[:, 0].tolist() == list(range(150, 200)) + list(range(400, 450))
    empty = extractor.speaker_span(frames, turns, "SPK1", 4.0, 6.0)
    assert empty.shape == (0, D_ACOUSTIC)
    assert extractor.speaker_span(frames, turns, "SPK9", 0, 10).shape == (0, D_ACOUSTIC)


@pytest.mark.parametrize("chunk_seconds", [10.0, 0.37])
def test_chunked_analysis_matches_the_whole_file_analysis(media_dir, chunk_seconds):
    # Recorded with the whole-file implementation (before chunking) on jfk.flac; see data/README.md.
    reference = np.load(Path(__file__).parent / "data" / "acoustic_reference.npz")["frames"]   # [1101, 47]
    frames = AcousticFeatureExtractor(AcousticConfig(chunk_seconds=chunk_seconds)).frames(
        load_audio(media_dir / "jfk.flac"))
    assert frames.shape == reference.shape == (1101, D_ACOUSTIC) and frames.dtype == np.float32
    scale = np.maximum(np.abs(reference).max(0), 1e-3)                                  # [47] per feature
    assert (np.abs(frames - reference).max(0) / scale).max() < 1e-5


def test_memory_does_not_grow_with_the_length(extractor, media_dir):
    speech = load_audio(media_dir / "jfk.flac")

    def peak_mb(audio: np.ndarray) -> float:
        tracemalloc.start()   # numpy reports its buffers to tracemalloc
        try:
            extractor.frames(audio)
            return tracemalloc.get_traced_memory()[1] / 1e6
        finally:
            tracemalloc.stop()

    short, long = peak_mb(speech), peak_mb(np.tile(speech, 4))       # 11 s and 44 s
    # The whole-file analysis took ~3.6 MB per second of audio (40 MB, then 158 MB).
    assert long - short < 8.0 and long < 64.0, (short, long)


def test_too_short_audio_gives_empty(extractor):
    assert extractor.frames(np.zeros(100, np.float32)).shape == (0, D_ACOUSTIC)


@pytest.fixture(scope="module")
def whisper_states():
    from extractors.acoustic_features import DEFAULT_WHISPER_BLOCKS, WhisperEncoderFeatures

    return WhisperEncoderFeatures(blocks=DEFAULT_WHISPER_BLOCKS, device="cpu")


@pytest.mark.slow
def test_whisper_encoder_states(media_dir, whisper_states):
    encoder = whisper_states
    assert encoder.dim == 384  # tiny.en d_model
    audio = load_audio(media_dir / "jfk.flac")
    states = encoder.frames(audio)
    assert states.shape == (550, 384) and np.isfinite(states).all()  # 11 s at 50 states/s
    # Inputs over 30 s are encoded in independent 30 s chunks (Whisper attends over its whole window).
    longer_audio = np.concatenate([audio, audio, audio])
    longer = encoder.frames(longer_audio)
    assert longer.shape == (1650, 384)
    np.testing.assert_allclose(longer[1500:], encoder.frames(longer_audio[30 * SAMPLE_RATE:]), atol=1e-4)
    turns = [SpeakerTurn(0.0, 1.0, "SPK0")]
    assert encoder.speaker_span(states, turns, "SPK0", 0.5, 2.0).shape == (25, 384)
    assert encoder.speaker_span(states, turns, "SPK1", 0.0, 11.0).shape == (0, 384)


@pytest.mark.slow
def test_whisper_states_stop_after_the_asked_blocks(media_dir, whisper_states):
    """Stopping early is the same network as the whole encoder up to that block (checked against
    openai-whisper's own forward with a hook), not the last layer under another name."""
    from extractors.acoustic_features import WhisperEncoderFeatures

    audio = load_audio(media_dir / "jfk.flac")[: 3 * SAMPLE_RATE]
    whole = WhisperEncoderFeatures(blocks=None, device="cpu")
    caught = {}
    block = whole.encoder.blocks[whisper_states.blocks - 1]
    hook = block.register_forward_hook(lambda module, args, output: caught.setdefault("states", output))
    try:
        last = whole.frames(audio)
    finally:
        hook.remove()
    early = whisper_states.frames(audio)
    np.testing.assert_allclose(early, caught["states"][0, : len(early)].numpy(), atol=1e-4)
    assert np.abs(early - last).mean() > 0.1    # the last layer (after ln_post) is another representation
    with pytest.raises(ValueError, match="encoder blocks"):
        WhisperEncoderFeatures(blocks=5, device="cpu")
