"""The synchrony measure and the voice-face assignment on signals whose answer is known."""

from __future__ import annotations

import numpy as np

from extractors.active_speaker import (
    ActiveSpeakerConfig,
    SyncEvidence,
    attribute_segments,
    lag_curve,
    sync_confidence,
    video_lag,
)
from extractors.contracts import SpeechSegment, Word
from extractors.moments import Moment, build_moments, pool_time, split_at_pauses
from extractors.vad import SpeechRegion

CONFIG = ActiveSpeakerConfig()


def syllables(n: int, rng) -> np.ndarray:
    """A speech-like envelope: smoothed random bursts at 3-6 Hz, 25 samples per second."""
    x = np.convolve(rng.random(n) > 0.8, np.hanning(7), mode="same")
    return x + 0.05 * rng.standard_normal(n)


def test_lips_that_move_with_the_sound_beat_lips_that_do_not():
    rng = np.random.default_rng(0)
    envelope = syllables(100, rng)
    speaker = np.roll(envelope, -3) + 0.1 * rng.standard_normal(100)   # the mouth 3 frames ahead
    other = syllables(100, rng)                                        # moving, but to another rhythm
    search = 15
    curves = [lag_curve(speaker, envelope, search, CONFIG), lag_curve(other, envelope, search, CONFIG)]
    lag = video_lag([np.nanmax(np.stack(curves), axis=0)], max_lag=5)
    assert lag == 3
    (speaker_confidence, _), (other_confidence, _) = (sync_confidence(c, lag) for c in curves)
    assert speaker_confidence > 0.5 > other_confidence + 0.3


def test_too_few_mouth_samples_give_no_evidence():
    curve = lag_curve(np.full(30, np.nan), np.ones(30), 5, CONFIG)
    assert sync_confidence(curve, 0) == (0.0, 0.0)


def segment(i: int, start: float, end: float, voice: str) -> SpeechSegment:
    return SpeechSegment(f"S{i}", start, end, "words", [], turn=voice)


def evidence(seg: str, character: str, confidence: float, frames: int = 50) -> SyncEvidence:
    return SyncEvidence(seg, f"T{character}", character, confidence, confidence, 0.0, frames)


def test_assignment_gives_each_voice_its_face_and_leaves_an_unmatched_voice_off_screen():
    segments = [segment(0, 0, 2, "SPK0"), segment(1, 2, 4, "SPK1"), segment(2, 4, 6, "SPK0"),
                segment(3, 6, 8, "SPK2")]
    found = [evidence("S0", "C0", 0.5), evidence("S0", "C1", 0.05), evidence("S1", "C0", 0.05),
             evidence("S1", "C1", 0.45), evidence("S2", "C0", 0.4), evidence("S2", "C1", 0.1),
             evidence("S3", "C0", 0.05), evidence("S3", "C1", 0.06)]   # SPK2 moves no face: off screen
    result = attribute_segments(segments, found, CONFIG)
    assert result.voice_to_character == {"SPK0": "C0", "SPK1": "C1", "SPK2": None}
    assert [a.character for a in result.attributions] == ["C0", "C1", "C0", None]


def test_clear_evidence_overrides_a_wrong_voice_cluster():
    segments = [segment(0, 0, 2, "SPK0"), segment(1, 2, 4, "SPK0"), segment(2, 4, 6, "SPK0")]
    found = [evidence("S0", "C0", 0.5), evidence("S0", "C1", 0.0), evidence("S1", "C0", 0.05),
             evidence("S1", "C1", 0.5), evidence("S2", "C0", 0.45), evidence("S2", "C1", 0.1)]
    assert [a.character for a in attribute_segments(segments, found, CONFIG).attributions] == ["C0", "C1", "C0"]


def test_a_face_seen_only_briefly_is_no_candidate():
    segments = [segment(0, 0, 4, "SPK0")]
    found = [evidence("S0", "C0", 0.3, frames=10)]     # 0.4 s of face for 4 s of speech, under min_visible_s
    result = attribute_segments(segments, found, CONFIG)
    assert result.voice_to_character == {"SPK0": None} and result.attributions[0].character is None


def test_moments_cover_speech_and_silence():
    segments = [segment(0, 1.0, 2.0, "SPK0"), segment(1, 6.0, 7.0, "SPK1")]
    moments = build_moments(segments, 10.0, {"S0": "C0", "S1": None})
    assert [(m.segment, m.speaker) for m in moments if m.segment] == [("S0", "C0"), ("S1", None)]
    silent = [m for m in moments if m.segment is None]
    assert abs(sum(m.end - m.start for m in silent) - 8.0) < 1e-6
    assert all(isinstance(m, Moment) and m.end > m.start for m in moments)


def test_segments_split_at_a_pause_the_vad_saw():
    words = [Word("one", 0.0, 0.4, 1.0), Word("two", 0.4, 1.3, 1.0), Word("three", 1.5, 1.9, 1.0)]
    seg = SpeechSegment("S0", 0.0, 1.9, "one two three", words)
    regions = [SpeechRegion(0.0, 0.8), SpeechRegion(1.4, 2.0)]      # silence 0.8-1.4 inside "two"..."three"
    parts = split_at_pauses([seg], 0.5, regions)
    assert [p.text for p in parts] == ["one two", "three"]
    assert split_at_pauses([seg], 0.5, None)[0].text == "one two three"


def test_pool_time_keeps_short_sequences_and_averages_long_ones():
    x = np.arange(10, dtype=np.float32)[:, None]
    assert pool_time(x, 10) is x
    pooled = pool_time(x, 4)
    assert pooled.shape == (4, 1) and pooled[0, 0] == 1.0


def _random_tracks(rng, count: int, duration: float):
    from extractors.contracts import FaceDetection, FaceTrack

    tracks = []
    for i in range(count):
        start = float(rng.uniform(0, duration))
        times = start + np.cumsum(rng.uniform(0.1, 0.8, size=int(rng.integers(1, 12))))
        tracks.append(FaceTrack(f"T{i}", 0, [FaceDetection(float(t), (t, 0.0, t + 10, 10.0), 1.0, np.zeros((5, 2), np.float32))
                                            for t in times]))
    return tracks


def test_track_sweep_gives_every_live_face_and_only_those():
    """Against the plain scan over every track (what each frame did before): same faces at every time,
    also when times go back (a new window of the speaking stage) or repeat."""
    from extractors.mouth_motion import TRACK_EDGE_S, TrackSweep, interpolate_detection

    rng = np.random.default_rng(3)
    tracks = _random_tracks(rng, 300, 60.0)
    sweep = TrackSweep(tracks)
    times = [*np.arange(0, 40, 0.04), *np.arange(10, 70, 0.04), 70.0, 70.0]
    for t in times:
        expected = {track.id: interpolate_detection(track, t) for track in tracks
                    if track.detections[0].t - TRACK_EDGE_S <= t <= track.detections[-1].t + TRACK_EDGE_S}
        expected = {k: v for k, v in expected.items() if v is not None}
        got = {track.id: face for track, face in sweep.faces_at(float(t))}
        assert got.keys() == expected.keys(), t
        assert all(got[k].box == expected[k].box for k in got)


def test_samples_by_segment_match_the_scan_over_every_track_after_a_round_trip():
    from extractors.mouth_motion import MouthSamples

    rng = np.random.default_rng(4)
    times = np.arange(0, 60, 0.04)
    samples = [(float(t), {f"T{k}": float(rng.random()) for k in range(40) if rng.random() < 0.1 + 0.02 * (k % 5)})
               for t in times]
    segments = [SpeechSegment(f"S{i}", float(a), float(a + rng.uniform(0.5, 5)), "x", []) for i, a in
                enumerate(rng.uniform(0, 58, size=30))]
    stored = MouthSamples(times, [openings for _, openings in samples])
    got_times, got = MouthSamples.from_dict(stored.serialize(), stored.arrays()).by_segment(segments, 0.4, 20)
    for segment in segments:
        inside = [i for i, t in enumerate(times) if segment.start - 0.4 <= t < segment.end + 0.4]
        np.testing.assert_array_equal(got_times[segment.id], times[inside])
        for k in range(40):
            values = np.array([samples[i][1].get(f"T{k}", np.nan) for i in inside])
            key = (segment.id, f"T{k}")
            if np.isfinite(values).sum() >= 20:
                np.testing.assert_array_equal(got[key], values)
            else:
                assert key not in got
    assert len(got) > 10
