"""Who is talking: training-free audio-visual synchrony, then one voice-to-face assignment per video.

No trained active-speaker model can be had offline, so this stage measures what such models learn:

1. **Per (speech segment x face track on screen)**, the face's mouth opening (inner-lip gap from the dense
   face mesh, sampled at ``sync_fps`` inside the segment plus a little context) is correlated with the
   speech envelope (log RMS of the audio at the same instants) at every lag within +-``search_lag_s``.
   A file has one audio-visual offset, so the lag is chosen once for the video (within +-``max_lag_s``,
   where the segments' best-matching faces agree most), and each face's SyncNet-style confidence is its
   correlation at that lag minus the median over all lags (their "median minus minimum distance", with
   distance = 1 - correlation): lips that move *with* this sound peak there, lips that move for another
   reason (chewing, laughing, another soundtrack) do not, and picking a lag per face cannot manufacture
   a peak. The envelope is gated by voice activity: outside the speech regions it is flat, so lip motion
   without speech earns nothing.
2. **Over the whole video**, the sync evidence is summed into a voice-cluster x character matrix and solved
   as an assignment (``scipy.optimize.linear_sum_assignment``) with one off-screen option per voice: a voice
   that keeps matching one face is that character, a voice that matches no face is off screen
   (``character: None``). A segment then goes to its voice's character when that character is on screen
   and not contradicted by the segment's own evidence; a segment whose own evidence points clearly at
   another visible face follows the evidence (diarization makes mistakes too).

The stage is a class with the loaded face mesh; :meth:`ActiveSpeakerDetector.__call__` takes the visual
result, the audio and the segments, and returns one :class:`SpeakerAttribution` per segment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import median_filter
from scipy.optimize import linear_sum_assignment

from extractors.audio import SAMPLE_RATE, AudioSamples
from extractors.contracts import FaceTrack, SpeechSegment
from extractors.mouth_motion import (
    MouthMeasurement,
    MouthMeter,
    MouthSamples,
    TrackFeed,
    mesh_mouth_meter,
    speech_windows,
)

log = logging.getLogger(__name__)

@dataclass
class ActiveSpeakerConfig:
    sync_fps: float = 25.0          # mouth and envelope sampling rate for synchrony (lips move at 3-8 Hz)
    max_lag_s: float = 0.2          # audio-visual offsets searched (broadcast A/V skew is within +-0.1 s)
    search_lag_s: float = 0.6       # lag window over which the median correlation is taken (the baseline)
    context_s: float = 0.4          # silence around a segment included, so speech/no-speech contrast counts
    min_frames: int = 20            # fewer mouth samples give no evidence (unsure -> no vote)
    smooth_frames: int = 3          # median filter on both signals, against single-frame landmark jitter
    min_confidence: float = 0.15    # sync confidence above which a face counts as moving with this voice
    override_margin: float = 0.25   # a segment's own evidence overrides its voice's assignment by this much
    strong_confidence: float = 0.35  # evidence that gives a segment to a face its voice was not assigned to
    offscreen_score: float = 0.10   # mean confidence a voice must beat to be given a face at all
    min_visible_s: float = 1.0      # a face seen for less of a voice's speech than this is not its candidate

    def serialize(self) -> dict:
        return asdict(self)


@dataclass
class SyncEvidence:
    """Synchrony of one face track with one speech segment."""

    segment: str
    track: str
    character: str | None
    confidence: float      # best correlation minus median correlation over the lag window
    correlation: float     # correlation at the file's lag
    lag: float             # the file's audio-visual lag, seconds; positive = the mouth leads the audio
    frames: int            # mouth samples used

    def serialize(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SyncEvidence:
        return cls(**data)


@dataclass
class SpeakerAttribution:
    segment: str
    character: str | None          # None: the voice is off screen (or nobody visible moves with it)
    confidence: float              # in [0, 1]: how sure the attribution (or the off-screen call) is
    sync_confidence: float | None  # the chosen face's sync confidence in this segment (None: off screen)
    reason: str                    # "assignment", "evidence", "off-screen", "no-face"

    def serialize(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpeakerAttribution:
        return cls(**data)


@dataclass
class ActiveSpeakerResult:
    attributions: list[SpeakerAttribution]
    evidence: list[SyncEvidence]
    voice_to_character: dict[str, str | None] = field(default_factory=dict)  # diarization label -> character

    def serialize(self) -> dict:
        return {
            "attributions": [a.serialize() for a in self.attributions],
            "evidence": [e.serialize() for e in self.evidence],
            "voice_to_character": dict(self.voice_to_character),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ActiveSpeakerResult:
        return cls([SpeakerAttribution.from_dict(a) for a in data["attributions"]],
                   [SyncEvidence.from_dict(e) for e in data["evidence"]],
                   dict(data.get("voice_to_character", {})))

    def by_segment(self) -> dict[str, SpeakerAttribution]:
        return {a.segment: a for a in self.attributions}


# ------------------------------------------------------------------------------------------ signals


def speech_envelope(audio: AudioSamples, times: np.ndarray, regions: Sequence, window_s: float = 0.04) -> np.ndarray:
    """[len(times)] log-RMS of ``audio`` in windows centred on ``times``, floored outside speech regions.

    Gating by voice activity makes the envelope flat where nobody speaks, so lips that move in silence
    (chewing, a smile) cannot correlate with noise. The span the windows cover is read once (audio on
    disk is not read whole).
    """
    half = max(1, int(window_s * SAMPLE_RATE / 2))
    centres = np.round(np.asarray(times) * SAMPLE_RATE).astype(np.int64)
    energy = np.empty(len(centres), dtype=np.float64)
    first = max(0, int(centres.min()) - half) if len(centres) else 0
    span = audio[first: max(first, int(centres.max()) + half)] if len(centres) else audio[0:0]
    for i, c in enumerate(centres):
        chunk = span[max(0, c - half) - first: max(0, c + half) - first]
        energy[i] = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) if chunk.size else 0.0
    envelope = np.log(energy + 1e-4)
    in_speech = np.zeros(len(times), dtype=bool)
    for region in regions:
        in_speech |= (times >= region.start) & (times < region.end)
    floor = float(np.min(envelope)) if len(envelope) else 0.0
    return np.where(in_speech, envelope, floor)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-12 else 0.0


def lag_curve(mouth: np.ndarray, envelope: np.ndarray, search: int, config: ActiveSpeakerConfig) -> np.ndarray:
    """[2 * search + 1] correlation of a mouth-opening series with a speech envelope at lags -search..search
    frames (NaN where too few mouth samples overlap). Lag > 0: the mouth at t matches the audio at t + lag.

    Both are sampled at the same instants; NaN mouth samples (face not measured) are left out.
    """
    k = max(1, int(config.smooth_frames) | 1)
    curve = np.full(2 * search + 1, np.nan)
    valid = ~np.isnan(mouth)
    if valid.sum() < config.min_frames:
        return curve
    filled = median_filter(np.where(valid, mouth, np.nanmedian(mouth)), size=k, mode="nearest")
    envelope = median_filter(envelope, size=k, mode="nearest")
    for i, lag in enumerate(range(-search, search + 1)):
        if lag >= 0:
            m, e, v = filled[: len(filled) - lag], envelope[lag:], valid[: len(valid) - lag]
        else:
            m, e, v = filled[-lag:], envelope[: len(envelope) + lag], valid[-lag:]
        if v.sum() >= config.min_frames:
            curve[i] = _correlation(m[v], e[v])
    return curve


def video_lag(curves: Sequence[np.ndarray], max_lag: int) -> int:
    """The audio-visual offset of the whole file (frames): the lag, within +-``max_lag``, at which the
    best-matching face of each segment correlates most, summed over segments.

    A file has one offset; taking each segment's own best lag instead would let unrelated lips win
    by picking whichever lag happens to line up (a max over lags is biased upwards).
    """
    if not curves:
        return 0
    search = (len(curves[0]) - 1) // 2
    total = np.nansum(np.stack(curves), axis=0)
    window = slice(search - max_lag, search + max_lag + 1)
    return int(np.argmax(total[window])) - max_lag


def sync_confidence(curve: np.ndarray, lag: int, tolerance: int = 1) -> tuple[float, float]:
    """(confidence, correlation) of one lag curve at the file's lag (+-``tolerance`` frames):
    the correlation there minus the curve's median (SyncNet's median-minus-minimum distance)."""
    if np.all(np.isnan(curve)):
        return 0.0, 0.0
    search = (len(curve) - 1) // 2
    near = curve[max(0, search + lag - tolerance): search + lag + tolerance + 1]
    best = float(np.nanmax(near)) if np.any(~np.isnan(near)) else 0.0
    baseline = float(np.nanmedian(curve))
    return (max(0.0, best - baseline) if best > 0 else 0.0), best


# ------------------------------------------------------------------------------------------ stage


class ActiveSpeakerDetector:
    """Attributes speech segments to on-screen characters (see the module docstring).

    Two halves, which the pipeline runs (and caches) apart: :meth:`measurement` / :meth:`mouth_samples`
    measure the mouths inside the speech windows (:mod:`extractors.mouth_motion`), :meth:`attribute` turns
    them into attributions.
    """

    def __init__(self, config: ActiveSpeakerConfig | None = None, mouth_meter: MouthMeter | None = None,
                 model_path: str | os.PathLike | None = None, threads: int | None = 1, workers: int = 1):
        """``workers``: threads that decode and measure separate speech windows at the same time, each with
        its own face mesh (a LiteRT interpreter serves one thread; decoding and the mesh release the GIL).
        A given ``mouth_meter`` may not be thread-safe, so it is used from one thread."""
        self.config = config or ActiveSpeakerConfig()
        self.mouth_meter = mouth_meter or mesh_mouth_meter(model_path, threads)
        self._given_meter = mouth_meter is not None
        self.workers = 1 if self._given_meter else max(1, int(workers))
        self._new_meter = lambda: mesh_mouth_meter(model_path, threads)
        self._meters = [self.mouth_meter]

    def meter(self, slot: int) -> MouthMeter:
        """The mouth meter of worker ``slot`` (0, 1, ...): one per thread, made when first asked for."""
        if slot >= len(self._meters) and self._given_meter:
            raise ValueError("a mouth meter given to the detector serves one thread")
        while len(self._meters) <= slot:
            self._meters.append(self._new_meter())
        return self._meters[slot]

    def measurement(self, path: str | os.PathLike, segments: Sequence[SpeechSegment], feed: TrackFeed,
                    progress: Callable[[float, float], None] | None = None) -> MouthMeasurement:
        """The mouth measurement of ``segments``' windows over the tracks ``feed`` gives, for threads to work."""
        cfg = self.config
        # Long windows are not cut to share them out: each cut costs a seek, which decodes from the keyframe
        # before it (x264's default GOP is 10 s). Cutting into 10 s pieces measured slower on the 10-min montage.
        return MouthMeasurement(path, speech_windows(segments, cfg.context_s), feed, cfg.sync_fps, progress)

    def mouth_samples(self, path: str | os.PathLike, tracks: Sequence[FaceTrack], segments: Sequence[SpeechSegment],
                      progress: Callable[[float, float], None] | None = None) -> MouthSamples:
        """Mouth openings inside the segments' windows (decoded at ``sync_fps``), ``workers`` windows at a time."""
        measurement = self.measurement(path, segments, TrackFeed(tracks), progress)
        workers = min(self.workers, max(1, len(measurement.windows)))
        return measurement.run([self.meter(slot) for slot in range(workers)])

    def attribute(self, tracks: Sequence[FaceTrack], character_of_track: dict[str, str], audio: AudioSamples,
                  segments: Sequence[SpeechSegment], regions: Sequence, samples: MouthSamples) -> ActiveSpeakerResult:
        """Sync evidence of every measured (segment, track), then one assignment over the video."""
        if not segments:
            return ActiveSpeakerResult([], [], {})
        cfg = self.config
        times, series = samples.by_segment(segments, cfg.context_s, cfg.min_frames)
        fps = cfg.sync_fps
        search, max_lag = int(round(cfg.search_lag_s * fps)), int(round(cfg.max_lag_s * fps))
        order = {track.id: i for i, track in enumerate(tracks)}
        measured: dict[str, list[str]] = {}   # segment id -> its measured tracks, in the order of `tracks`
        for segment_id, track_id in sorted(series, key=lambda key: order.get(key[1], len(order))):
            if track_id in order:
                measured.setdefault(segment_id, []).append(track_id)
        curves: dict[tuple[str, str], np.ndarray] = {}
        of_segment_curves: dict[str, list[np.ndarray]] = {}
        for segment in segments:
            seg_times = times.get(segment.id, np.zeros(0))
            if not len(seg_times) or segment.id not in measured:
                continue
            envelope = speech_envelope(audio, seg_times, regions)
            for track_id in measured[segment.id]:
                curve = lag_curve(series[(segment.id, track_id)], envelope, search, cfg)
                curves[(segment.id, track_id)] = curve
                of_segment_curves.setdefault(segment.id, []).append(curve)
        # One lag per voice (a person's sound and picture come through one chain; an edited programme
        # may join sources with different offsets), from the best-matching face of each of its segments.
        voice_of = {s.id: s.turn or "_all" for s in segments}
        best_per_voice: dict[str, list[np.ndarray]] = {}
        for segment in segments:
            of_segment = [c for c in of_segment_curves.get(segment.id, []) if not np.all(np.isnan(c))]
            if of_segment:
                best_per_voice.setdefault(voice_of[segment.id], []).append(np.fmax.reduce(np.stack(of_segment)))
        lag_of_voice = {voice: video_lag(found, max_lag) for voice, found in best_per_voice.items()}
        evidence = []
        for (segment_id, track_id), curve in curves.items():
            lag = lag_of_voice.get(voice_of[segment_id], 0)
            confidence, correlation = sync_confidence(curve, lag)
            evidence.append(SyncEvidence(segment_id, track_id, character_of_track.get(track_id), confidence,
                                         correlation, lag / fps, int(np.isfinite(series[(segment_id, track_id)]).sum())))
        return attribute_segments(segments, evidence, cfg)

    def __call__(
        self,
        path: str | os.PathLike,
        tracks: Sequence[FaceTrack],
        character_of_track: dict[str, str],
        audio: AudioSamples,
        segments: Sequence[SpeechSegment],
        regions: Sequence,
        progress: Callable[[float, float], None] | None = None,
    ) -> ActiveSpeakerResult:
        if not segments:
            return ActiveSpeakerResult([], [], {})
        samples = self.mouth_samples(path, tracks, segments, progress) if tracks else MouthSamples.empty()
        return self.attribute(tracks, character_of_track, audio, segments, regions, samples)


def attribute_segments(segments: Sequence[SpeechSegment], evidence: Sequence[SyncEvidence],
                       config: ActiveSpeakerConfig | None = None) -> ActiveSpeakerResult:
    """Voice-cluster x character assignment with an off-screen option, then per-segment attribution."""
    config = config or ActiveSpeakerConfig()
    # segment -> character -> best sync confidence over that character's tracks in the segment, and the
    # seconds of the segment that character's face was measured in
    per_segment: dict[str, dict[str, float]] = {}
    covered: dict[str, dict[str, float]] = {}
    for e in evidence:
        if e.character is None:
            continue
        scores = per_segment.setdefault(e.segment, {})
        scores[e.character] = max(scores.get(e.character, 0.0), e.confidence)
        seconds = covered.setdefault(e.segment, {})
        seconds[e.character] = seconds.get(e.character, 0.0) + e.frames / config.sync_fps
    voices = sorted({s.turn or f"_{s.id}" for s in segments})
    characters = sorted({c for scores in per_segment.values() for c in scores})
    voice_of = {s.id: s.turn or f"_{s.id}" for s in segments}
    voice_to_character: dict[str, str | None] = dict.fromkeys(voices)
    if characters:
        # Mean confidence of each (voice, character) over the voice's speech while that character is on
        # screen: a voice heard mostly off screen still belongs to the face it moves with whenever it shows.
        score = np.zeros((len(voices), len(characters)))
        visible = np.zeros((len(voices), len(characters)))
        for s in segments:
            v = voices.index(voice_of[s.id])
            for c, value in per_segment.get(s.id, {}).items():
                seconds = covered[s.id][c]
                score[v, characters.index(c)] += seconds * value
                visible[v, characters.index(c)] += seconds
        score = np.where(visible >= config.min_visible_s, score / np.maximum(visible, 1e-9), 0.0)
        # Off-screen columns: one per voice, worth ``offscreen_score``; a face must beat it to be chosen.
        offscreen = np.full((len(voices), len(voices)), -1e6)
        np.fill_diagonal(offscreen, config.offscreen_score)
        rows, cols = linear_sum_assignment(-np.hstack([score, offscreen]))
        for v, c in zip(rows, cols, strict=True):
            voice_to_character[voices[v]] = characters[c] if c < len(characters) else None
    attributions = []
    for s in segments:
        scores = per_segment.get(s.id, {})
        assigned = voice_to_character.get(voice_of[s.id])
        best = max(scores, key=scores.get) if scores else None
        best_value = scores.get(best, 0.0) if best else 0.0
        if not scores:
            attributions.append(SpeakerAttribution(s.id, None, 0.5, None, "no-face"))
        elif assigned in scores:
            # the voice's face is on screen: it speaks, unless another face clearly moves with this sound
            others = {c: v for c, v in scores.items() if c != assigned}
            rival = max(others, key=others.get) if others else None
            if rival is not None and others[rival] >= config.min_confidence and \
                    others[rival] - scores[assigned] >= config.override_margin:
                attributions.append(SpeakerAttribution(s.id, rival, _squash(others[rival] - scores[assigned]),
                                                       others[rival], "evidence"))
            else:
                margin = scores[assigned] - (max(others.values()) if others else 0.0)
                attributions.append(SpeakerAttribution(s.id, assigned, _squash(margin + scores[assigned]),
                                                       scores[assigned], "assignment"))
        elif best_value >= config.strong_confidence:
            # the voice's face is not on screen (or the voice has none), but this face plainly moves with it
            attributions.append(SpeakerAttribution(s.id, best, _squash(best_value - config.min_confidence),
                                                   best_value, "evidence"))
        else:
            attributions.append(SpeakerAttribution(s.id, None, _squash(config.strong_confidence - best_value),
                                                   None, "off-screen"))
    return ActiveSpeakerResult(attributions, list(evidence), {k: v for k, v in voice_to_character.items()
                                                              if not k.startswith("_")})


def _squash(x: float) -> float:
    """A margin in correlation units -> confidence in (0, 1)."""
    return float(1.0 / (1.0 + np.exp(-8.0 * x)))
