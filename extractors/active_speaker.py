"""Who is talking: training-free audio-visual synchrony, then one voice-to-face assignment per video.

No trained active-speaker model can be had offline, so this stage measures what such models learn:

1. **Per (speech segment x face track on screen)**, the face's mouth opening (inner-lip gap from the dense
   face mesh, sampled at ``sync_fps`` inside the segment plus a little context) is correlated with the
   speech envelope (log RMS of the audio at the same instants), over lags of +-``max_lag_s``. The
   SyncNet-style confidence is the best correlation minus the median correlation over the lag window
   (their "median minus minimum distance", with distance = 1 - correlation): lips that move *with* this
   sound peak sharply at a small lag, lips that move for another reason (chewing, laughing, another
   soundtrack) do not. The envelope is gated by voice activity: outside the speech regions it is flat, so
   lip motion without speech earns nothing.
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

from extractors.audio import SAMPLE_RATE
from extractors.contracts import FaceDetection, FaceTrack, SpeechSegment
from extractors.media import iter_frames

log = logging.getLogger(__name__)

# A face is placed at most this far before its track's first or after its last detection: tracks end at
# cuts, and past a cut the box would frame someone else.
TRACK_EDGE_S = 0.15

# (RGB frame, faces in it) -> [N] mouth opening (NaN where no mouth could be measured)
MouthMeter = Callable[[np.ndarray, Sequence[FaceDetection]], np.ndarray]


@dataclass
class ActiveSpeakerConfig:
    sync_fps: float = 25.0          # mouth and envelope sampling rate for synchrony (lips move at 3-8 Hz)
    max_lag_s: float = 0.2          # audio-visual offsets searched (broadcast A/V skew is within +-0.1 s)
    search_lag_s: float = 0.6       # lag window over which the median correlation is taken (the baseline)
    context_s: float = 0.4          # silence around a segment included, so speech/no-speech contrast counts
    min_frames: int = 10            # fewer mouth samples give no evidence (unsure -> no vote)
    smooth_frames: int = 3          # median filter on both signals, against single-frame landmark jitter
    min_confidence: float = 0.15    # sync confidence above which a face counts as moving with this voice
    override_margin: float = 0.25   # a segment's own evidence overrides its voice's assignment by this much
    offscreen_score: float = 0.10   # mean confidence a voice must beat to be given a face at all

    def serialize(self) -> dict:
        return asdict(self)


@dataclass
class SyncEvidence:
    """Synchrony of one face track with one speech segment."""

    segment: str
    track: str
    character: str | None
    confidence: float      # best correlation minus median correlation over the lag window
    correlation: float     # best correlation within +-max_lag_s
    lag: float             # seconds; positive = the mouth leads the audio
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


def speech_envelope(audio: np.ndarray, times: np.ndarray, regions: Sequence, window_s: float = 0.04) -> np.ndarray:
    """[len(times)] log-RMS of ``audio`` in windows centred on ``times``, floored outside speech regions.

    Gating by voice activity makes the envelope flat where nobody speaks, so lips that move in silence
    (chewing, a smile) cannot correlate with noise.
    """
    half = max(1, int(window_s * SAMPLE_RATE / 2))
    centres = np.round(np.asarray(times) * SAMPLE_RATE).astype(np.int64)
    energy = np.empty(len(centres), dtype=np.float64)
    for i, c in enumerate(centres):
        chunk = audio[max(0, c - half): max(0, c + half)]
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


def sync_confidence(mouth: np.ndarray, envelope: np.ndarray, fps: float, config: ActiveSpeakerConfig
                    ) -> tuple[float, float, float]:
    """(confidence, best correlation, lag s) of a mouth-opening series against a speech envelope.

    Both are sampled at the same instants; NaN mouth samples (face not measured) are left out of each
    lag's correlation. The lag is searched in +-``max_lag_s``; the baseline is the median correlation over
    +-``search_lag_s``.
    """
    k = max(1, int(config.smooth_frames) | 1)
    valid = ~np.isnan(mouth)
    if valid.sum() < config.min_frames:
        return 0.0, 0.0, 0.0
    filled = np.where(valid, mouth, np.nanmedian(mouth))
    filled = median_filter(filled, size=k, mode="nearest")
    envelope = median_filter(envelope, size=k, mode="nearest")
    max_lag = int(round(config.max_lag_s * fps))
    search = max(max_lag + 1, int(round(config.search_lag_s * fps)))
    correlations = {}
    for lag in range(-search, search + 1):
        # lag > 0: the mouth at t matches the audio at t + lag (the mouth leads)
        if lag >= 0:
            m, e, v = filled[: len(filled) - lag], envelope[lag:], valid[: len(valid) - lag]
        else:
            m, e, v = filled[-lag:], envelope[: len(envelope) + lag], valid[-lag:]
        if v.sum() < config.min_frames:
            continue
        correlations[lag] = _correlation(m[v], e[v])
    near = {lag: c for lag, c in correlations.items() if abs(lag) <= max_lag}
    if not near:
        return 0.0, 0.0, 0.0
    best_lag = max(near, key=near.get)
    best = near[best_lag]
    baseline = float(np.median(list(correlations.values())))
    return max(0.0, best - baseline) if best > 0 else 0.0, best, best_lag / fps


def interpolate_detection(track: FaceTrack, t: float, max_gap_s: float = 0.6) -> FaceDetection | None:
    """The track's face at time ``t`` (box and landmarks linear between its detections), None outside it.

    The visual pass samples faces at a few frames per second; synchrony needs every frame, so the face is
    placed between its neighbouring detections (the face mesh crops with a margin, so this is enough).
    """
    times = np.array([d.t for d in track.detections])
    if t < times[0] - TRACK_EDGE_S or t > times[-1] + TRACK_EDGE_S:
        return None
    i = int(np.searchsorted(times, t))
    if i <= 0 or i >= len(times):
        d = track.detections[0 if i <= 0 else -1]
        return FaceDetection(t, d.box, d.score, d.landmarks)
    a, b = track.detections[i - 1], track.detections[i]
    if b.t - a.t > max_gap_s:
        d = a if t - a.t < b.t - t else b
        return FaceDetection(t, d.box, d.score, d.landmarks)
    w = (t - a.t) / max(b.t - a.t, 1e-9)
    box = tuple(float((1 - w) * p + w * q) for p, q in zip(a.box, b.box, strict=True))
    landmarks = ((1 - w) * np.asarray(a.landmarks) + w * np.asarray(b.landmarks)).astype(np.float32)
    return FaceDetection(t, box, min(a.score, b.score), landmarks)


def mesh_mouth_meter(model_path: str | os.PathLike | None = None, threads: int | None = 1,
                     min_presence: float = 0.5) -> MouthMeter:
    """Inner-lip opening from the 468-point face mesh; NaN where the mesh sees no face."""
    from extractors.face_mesh import FaceMesh, mesh_geometry

    mesh = FaceMesh(model_path=model_path, threads=threads or 1)

    def measure(image: np.ndarray, detections: Sequence[FaceDetection]) -> np.ndarray:
        results = mesh(image, detections)
        return np.array([mesh_geometry(r)[0] if r.presence >= min_presence else np.nan for r in results])

    return measure


# ------------------------------------------------------------------------------------------ stage


class ActiveSpeakerDetector:
    """Attributes speech segments to on-screen characters (see the module docstring)."""

    def __init__(self, config: ActiveSpeakerConfig | None = None, mouth_meter: MouthMeter | None = None,
                 model_path: str | os.PathLike | None = None, threads: int | None = 1):
        self.config = config or ActiveSpeakerConfig()
        self.mouth_meter = mouth_meter or mesh_mouth_meter(model_path, threads)

    def mouth_series(
        self, path: str | os.PathLike, tracks: Sequence[FaceTrack], segments: Sequence[SpeechSegment],
        progress: Callable[[float, float], None] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], np.ndarray]]:
        """(segment id -> sample times, (segment id, track id) -> mouth opening per sample).

        Decodes the video only inside the segments (plus context), at ``sync_fps``.
        """
        cfg = self.config
        windows = _merge_windows([(s.start - cfg.context_s, s.end + cfg.context_s) for s in segments])
        samples: list[tuple[float, dict[str, float]]] = []  # (time, track id -> opening)
        total = sum(b - a for a, b in windows) or 1.0
        done = 0.0
        for start, end in windows:
            for frame in iter_frames(path, cfg.sync_fps, start=max(0.0, start), end=end):
                live = [(track, interpolate_detection(track, frame.t)) for track in tracks
                        if track.detections[0].t - TRACK_EDGE_S <= frame.t <= track.detections[-1].t + TRACK_EDGE_S]
                live = [(track, face) for track, face in live if face is not None]
                openings: dict[str, float] = {}
                if live:
                    values = self.mouth_meter(frame.image, [face for _, face in live])
                    openings = {track.id: float(v) for (track, _), v in zip(live, values, strict=True)}
                samples.append((frame.t, openings))
            done += end - start
            if progress is not None:
                progress(done, total)
        sample_times = np.array([t for t, _ in samples], dtype=np.float64)
        times: dict[str, np.ndarray] = {}
        series: dict[tuple[str, str], np.ndarray] = {}
        for segment in segments:
            inside = (sample_times >= segment.start - cfg.context_s) & (sample_times < segment.end + cfg.context_s)
            indices = np.flatnonzero(inside)
            times[segment.id] = sample_times[indices]
            for track in tracks:
                values = np.array([samples[i][1].get(track.id, np.nan) for i in indices], dtype=np.float64)
                if np.isfinite(values).sum() >= cfg.min_frames:
                    series[(segment.id, track.id)] = values
        return times, series

    def __call__(
        self,
        path: str | os.PathLike,
        tracks: Sequence[FaceTrack],
        character_of_track: dict[str, str],
        audio: np.ndarray,
        segments: Sequence[SpeechSegment],
        regions: Sequence,
        progress: Callable[[float, float], None] | None = None,
    ) -> ActiveSpeakerResult:
        if not segments:
            return ActiveSpeakerResult([], [], {})
        times, series = self.mouth_series(path, tracks, segments, progress) if tracks else ({}, {})
        evidence = []
        for segment in segments:
            seg_times = times.get(segment.id, np.zeros(0))
            if not len(seg_times):
                continue
            envelope = speech_envelope(audio, seg_times, regions)
            for track in tracks:
                mouth = series.get((segment.id, track.id))
                if mouth is None:
                    continue
                confidence, correlation, lag = sync_confidence(mouth, envelope, self.config.sync_fps, self.config)
                evidence.append(SyncEvidence(segment.id, track.id, character_of_track.get(track.id), confidence,
                                             correlation, lag, int(np.isfinite(mouth).sum())))
        return attribute_segments(segments, evidence, self.config)


def _merge_windows(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def attribute_segments(segments: Sequence[SpeechSegment], evidence: Sequence[SyncEvidence],
                       config: ActiveSpeakerConfig | None = None) -> ActiveSpeakerResult:
    """Voice-cluster x character assignment with an off-screen option, then per-segment attribution."""
    config = config or ActiveSpeakerConfig()
    # segment -> character -> best sync confidence over that character's tracks in the segment
    per_segment: dict[str, dict[str, float]] = {}
    for e in evidence:
        if e.character is None:
            continue
        scores = per_segment.setdefault(e.segment, {})
        scores[e.character] = max(scores.get(e.character, 0.0), e.confidence)
    voices = sorted({s.turn or f"_{s.id}" for s in segments})
    characters = sorted({c for scores in per_segment.values() for c in scores})
    voice_of = {s.id: s.turn or f"_{s.id}" for s in segments}
    voice_to_character: dict[str, str | None] = dict.fromkeys(voices)
    if characters:
        # mean confidence of each (voice, character) over the voice's speech time, absent face = 0
        score = np.zeros((len(voices), len(characters)))
        weight = np.zeros(len(voices))
        for s in segments:
            v = voices.index(voice_of[s.id])
            duration = max(s.end - s.start, 1e-3)
            weight[v] += duration
            for c, value in per_segment.get(s.id, {}).items():
                score[v, characters.index(c)] += duration * value
        score /= np.maximum(weight[:, None], 1e-9)
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
        elif (best is not None and best != assigned and best_value >= config.min_confidence
              and best_value - scores.get(assigned, 0.0) >= config.override_margin):
            attributions.append(SpeakerAttribution(s.id, best, _squash(best_value - scores.get(assigned, 0.0)),
                                                   best_value, "evidence"))
        elif assigned is not None and assigned in scores:
            others = [v for c, v in scores.items() if c != assigned]
            margin = scores[assigned] - (max(others) if others else 0.0)
            attributions.append(SpeakerAttribution(s.id, assigned, _squash(margin + scores[assigned]),
                                                   scores[assigned], "assignment"))
        elif best is not None and assigned is None and best_value >= config.min_confidence + config.override_margin:
            attributions.append(SpeakerAttribution(s.id, best, _squash(best_value), best_value, "evidence"))
        else:
            attributions.append(SpeakerAttribution(s.id, None, _squash(config.min_confidence - best_value + 0.2),
                                                   None, "off-screen"))
    return ActiveSpeakerResult(attributions, list(evidence), {k: v for k, v in voice_to_character.items()
                                                              if not k.startswith("_")})


def _squash(x: float) -> float:
    """A margin in correlation units -> confidence in (0, 1)."""
    return float(1.0 / (1.0 + np.exp(-8.0 * x)))
