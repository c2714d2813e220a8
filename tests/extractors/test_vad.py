"""Voice activity on real speech and on silence."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.audio import SAMPLE_RATE, load_audio
from extractors.vad import SpeechRegion, VoiceActivityDetector, speech_mask


@pytest.fixture(scope="module")
def vad():
    return VoiceActivityDetector()


def test_jfk_speech_regions(vad, media_dir):
    regions = vad(load_audio(media_dir / "jfk.flac"))
    assert 2 <= len(regions) <= 6
    assert regions[0].start < 0.5 and regions[-1].end > 10.0
    speech = sum(r.duration for r in regions)
    assert 7.0 < speech < 10.5  # pauses between the phrases are not speech
    assert all(a.end <= b.start for a, b in zip(regions, regions[1:], strict=False))


def test_phone_call_starts_at_first_reference_turn(vad, data_dir):
    regions = vad(load_audio(data_dir / "pyannote_sample" / "sample.wav"))
    assert abs(regions[0].start - 6.69) < 0.2  # the RTTM's first turn starts at 6.690 s


def test_silence_and_tiny_inputs_have_no_speech(vad):
    assert vad(np.zeros(5 * SAMPLE_RATE, np.float32)) == []
    assert vad(np.zeros(100, np.float32)) == []
    noise = (np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE) * 1e-3).astype(np.float32)
    assert vad(noise) == []


def test_speech_mask():
    mask = speech_mask([SpeechRegion(0.1, 0.3)], num_frames=5, frame_rate=10)
    assert mask.tolist() == [False, True, True, False, False]
