"""Speaker turns ("who spoke when") from resemblyzer's packaged GE2E speaker encoder.

Structure (pyannote-style: structure here, tunable numbers in `DiarizationConfig`):

1. speech regions from the VAD (or given by the caller);
2. a speaker embedding every `step_s` over sliding windows of `window_s` inside speech;
3. the number of speakers is given, or counted by spectral clustering with the affinity
   refinement of Wang et al. (ICASSP 2018; the `spectralcluster` package); windows are then
   labelled by k-means on the mean-centred embeddings;
4. each 10 ms frame of speech takes the speaker whose centroid is most similar on average over the
   windows covering it; a median filter removes flicker; contiguous runs become `SpeakerTurn`s.

Turns never overlap (one speaker at a time) and lie inside speech regions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import median_filter
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from extractors.audio import SAMPLE_RATE
from extractors.contracts import SpeakerTurn, SpeechSegment, Word
from extractors.errors import ModelNotFoundError
from extractors.io import torch_threads, write_atomically
from extractors.model_store import resolve_model
from extractors.vad import SpeechRegion, VoiceActivityDetector

log = logging.getLogger(__name__)

FRAME_RATE = 100  # resemblyzer's mel frames per second (10 ms hop)


@dataclass
class DiarizationConfig:
    window_s: float = 1.2          # embedding window; GE2E was trained on 1.6 s partials
    step_s: float = 0.2            # hop between windows
    min_region_s: float = 0.3      # shorter speech regions are embedded as one (padded) window
    max_speakers: int = 8          # upper bound for the automatic choice
    p_percentile: float = 0.9      # affinity refinement: keep this top fraction of each row
    min_windows_for_count: int = 5  # fewer windows: one speaker
    max_spectral_windows: int = 600  # counting uses at most this many windows, evenly spaced in time
    smoothing_s: float = 0.3       # median filter over frame labels
    min_turn_s: float = 0.2        # shorter turns are absorbed by their neighbours


class SpeakerDiarizer:
    """Speaker turns of 16 kHz mono audio."""

    def __init__(self, config: DiarizationConfig | None = None, model_path: str | os.PathLike | None = None,
                 vad: VoiceActivityDetector | None = None):
        from resemblyzer import VoiceEncoder

        self.config = config or DiarizationConfig()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        weights = resolve_model("resemblyzer", model_path)
        # VoiceEncoder loads the file itself and relies on torch's default (weights-only since 2.6);
        # loading it weights-only here first makes sure no pickled code can run there either.
        try:
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:  # any failure means the file is not plain tensors
            raise ModelNotFoundError(
                f"{weights}: not a plain-tensor resemblyzer checkpoint ({type(error).__name__}); "
                "reinstall it with ./setup.sh or give the packaged resemblyzer/pretrained.pt"
            ) from None
        self.encoder = VoiceEncoder(device=self.device, verbose=False, weights_fpath=Path(weights))
        self._vad = vad

    @property
    def vad(self) -> VoiceActivityDetector:
        if self._vad is None:
            self._vad = VoiceActivityDetector()
        return self._vad

    def __call__(self, audio: np.ndarray, **kwargs) -> list[SpeakerTurn]:
        return self.diarize(audio, **kwargs)

    def embed_windows(self, audio: np.ndarray, regions: list[SpeechRegion]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [N, 256], window frame ranges [N, 2]) over the speech regions."""
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

        cfg = self.config
        if not regions or not np.any(audio):
            return np.zeros((0, 256), np.float32), np.zeros((0, 2), np.int64)
        wav = normalize_volume(audio.astype(np.float32), -30, increase_only=True)
        mel = wav_to_mel_spectrogram(wav)                       # [F, 40]
        window, step = int(cfg.window_s * FRAME_RATE), int(cfg.step_s * FRAME_RATE)
        ranges: list[tuple[int, int]] = []
        for region in regions:
            first, last = int(region.start * FRAME_RATE), min(len(mel), int(region.end * FRAME_RATE))
            if last - first < int(cfg.min_region_s * FRAME_RATE):
                continue
            if last - first <= window:
                ranges.append((first, last))
                continue
            starts = list(range(first, last - window + 1, step))
            if starts[-1] + window < last:
                starts.append(last - window)
            ranges.extend((s, s + window) for s in starts)
        if not ranges:
            return np.zeros((0, 256), np.float32), np.zeros((0, 2), np.int64)
        embeddings = []
        # On the CPU the LSTM runs single-threaded (see torch_threads: far faster on few cores).
        threads = 1 if self.device.type == "cpu" else torch.get_num_threads()
        with torch.inference_mode(), torch_threads(threads):
            # Windows of equal length go through the LSTM together.
            by_length: dict[int, list[int]] = {}
            for index, (s, e) in enumerate(ranges):
                by_length.setdefault(e - s, []).append(index)
            out = np.zeros((len(ranges), 256), np.float32)
            for length, indices in by_length.items():
                batch = np.stack([mel[ranges[i][0]: ranges[i][0] + length] for i in indices])  # [B, L, 40]
                for chunk in range(0, len(indices), 256):
                    part = torch.from_numpy(batch[chunk: chunk + 256]).to(self.device)
                    out[indices[chunk: chunk + 256]] = self.encoder(part).cpu().numpy()
            embeddings = out
        return embeddings, np.asarray(ranges, dtype=np.int64)

    def count_speakers(self, embeddings: np.ndarray) -> int:
        """Number of voices among the window embeddings (spectral clustering, eigen-gap).

        The affinity matrix is refined as in Wang et al., "Speaker diarization with LSTM" (ICASSP
        2018), which introduced this recipe for GE2E d-vectors; a GMM/BIC test on the affinities
        decides whether there is more than one speaker at all.
        """
        from spectralcluster import (
            ICASSP2018_REFINEMENT_SEQUENCE,
            FallbackOptions,
            RefinementOptions,
            SingleClusterCondition,
            SpectralClusterer,
            ThresholdType,
        )

        cfg = self.config
        if len(embeddings) < cfg.min_windows_for_count:
            return 1
        clusterer = SpectralClusterer(
            min_clusters=1,
            max_clusters=cfg.max_speakers,
            refinement_options=RefinementOptions(
                gaussian_blur_sigma=1,
                p_percentile=cfg.p_percentile,
                thresholding_soft_multiplier=0.01,
                thresholding_type=ThresholdType.RowMax,
                refinement_sequence=ICASSP2018_REFINEMENT_SEQUENCE,
            ),
            fallback_options=FallbackOptions(
                spectral_min_embeddings=cfg.min_windows_for_count,
                single_cluster_condition=SingleClusterCondition.AffinityGmmBic,
            ),
        )
        if len(embeddings) > cfg.max_spectral_windows:
            # The eigen-decomposition is cubic in the number of windows; evenly spaced windows keep
            # the time order the affinity refinement relies on (its blur runs along time).
            keep = np.linspace(0, len(embeddings) - 1, cfg.max_spectral_windows).round().astype(int)
            embeddings = embeddings[keep]
        with threadpool_limits(limits=1):  # small dense algebra: threads only contend
            return len(np.unique(clusterer.predict(embeddings)))

    def cluster(self, embeddings: np.ndarray, num_speakers: int | None = None) -> np.ndarray:
        """Cluster label per embedding; automatic number of speakers unless `num_speakers` is given.

        GE2E embeddings are all positive and similar (cosine 0.6-0.8 between different voices), so
        they are centred on their mean before k-means, which separates voices better than the
        spectral labels themselves (on the pyannote sample: 100% vs 90% of pure windows).
        """
        if len(embeddings) < 2:
            return np.zeros(len(embeddings), dtype=np.int64)
        k = num_speakers if num_speakers is not None else self.count_speakers(embeddings)
        k = min(k, len(embeddings))
        if k <= 1:
            return np.zeros(len(embeddings), dtype=np.int64)
        centred = embeddings - embeddings.mean(0)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-8
        with threadpool_limits(limits=1):
            return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(centred)

    def diarize(
        self,
        audio: np.ndarray,
        speech_regions: list[SpeechRegion] | None = None,
        num_speakers: int | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> list[SpeakerTurn]:
        """Speaker turns, sorted by start; speakers named SPK0, SPK1, ... by first appearance."""
        cfg = self.config
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        regions = speech_regions if speech_regions is not None else self.vad.detect(audio)
        embeddings, ranges = self.embed_windows(audio, regions)
        if progress is not None:
            progress(0.8)
        if len(embeddings) == 0:
            return []
        labels = self.cluster(embeddings, num_speakers)
        num_clusters = int(labels.max()) + 1
        centroids = np.stack([embeddings[labels == c].mean(0) for c in range(num_clusters)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        similarity = embeddings @ centroids.T                    # [N, K]

        num_frames = int(np.ceil(len(audio) / SAMPLE_RATE * FRAME_RATE))
        votes = np.zeros((num_frames, num_clusters), np.float32)  # [F, K]
        counts = np.zeros(num_frames, np.float32)
        for (s, e), sim in zip(ranges, similarity, strict=True):
            votes[s:e] += sim
            counts[s:e] += 1
        speech = np.zeros(num_frames, bool)
        for region in regions:
            speech[int(region.start * FRAME_RATE): int(np.ceil(region.end * FRAME_RATE))] = True
        # Speech frames no window covered (short regions) take the nearest covered frame's votes.
        covered = np.flatnonzero(counts > 0)
        frame_labels = np.full(num_frames, -1, np.int64)
        frame_labels[covered] = votes[covered].argmax(1)
        missing = np.flatnonzero(speech & (counts == 0))
        if len(missing):
            nearest = covered[np.clip(np.searchsorted(covered, missing), 0, len(covered) - 1)]
            frame_labels[missing] = frame_labels[nearest]
        frame_labels[~speech] = -1
        width = max(1, int(cfg.smoothing_s * FRAME_RATE)) | 1
        smoothed = median_filter(frame_labels + 1, size=width, mode="nearest") - 1
        smoothed[~speech] = -1
        turns = _runs_to_turns(smoothed, cfg.min_turn_s)
        if progress is not None:
            progress(1.0)
        return _rename_by_appearance(turns)


def _runs_to_turns(labels: np.ndarray, min_turn_s: float) -> list[SpeakerTurn]:
    """Contiguous runs of one label (>= 0) as turns; runs shorter than `min_turn_s` join a neighbour."""
    runs: list[list[int]] = []  # [label, first, last+1]
    for index, label in enumerate(labels):
        if runs and runs[-1][0] == label and runs[-1][2] == index:
            runs[-1][2] = index + 1
        else:
            runs.append([int(label), index, index + 1])
    speech_runs = [r for r in runs if r[0] >= 0]
    min_frames = int(min_turn_s * FRAME_RATE)
    for i, run in enumerate(speech_runs):
        if run[2] - run[1] >= min_frames:
            continue
        neighbours = [speech_runs[j] for j in (i - 1, i + 1)
                      if 0 <= j < len(speech_runs) and speech_runs[j][2] - speech_runs[j][1] >= min_frames]
        touching = [n for n in neighbours if n[2] == run[1] or n[1] == run[2]]
        if touching:
            run[0] = max(touching, key=lambda n: n[2] - n[1])[0]
    turns: list[SpeakerTurn] = []
    for label, first, last in speech_runs:
        start, end = first / FRAME_RATE, last / FRAME_RATE
        if turns and turns[-1].speaker == f"{label}" and abs(turns[-1].end - start) < 1e-6:
            turns[-1].end = end
        else:
            turns.append(SpeakerTurn(start=start, end=end, speaker=f"{label}"))
    return turns


def _rename_by_appearance(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    names: dict[str, str] = {}
    for turn in turns:
        turn.speaker = names.setdefault(turn.speaker, f"SPK{len(names)}")
    return turns


def split_by_speaker(segments: list[SpeechSegment], turns: list[SpeakerTurn]) -> list[SpeechSegment]:
    """Speech segments cut where the speaker changes, each with its diarization label in `turn`.

    Whisper's segments often run across a change of speaker; every word goes to the turn it
    overlaps most (or the turn nearest its middle when it overlaps none), and runs of words of one speaker
    become one segment. Segments without words keep their own span's best turn. Ids are renumbered.
    """
    def best_turn(start: float, end: float) -> str | None:
        """The turn overlapping [start, end] most; for (near) zero-length spans, the turn
        containing or nearest to the middle (word timestamps can collapse to a point)."""
        if not turns:
            return None
        overlaps = np.array([max(0.0, min(end, t.end) - max(start, t.start)) for t in turns])
        if overlaps.max() > 0.02:
            return turns[int(overlaps.argmax())].speaker
        middle = (start + end) / 2
        distances = [max(0.0, t.start - middle, middle - t.end) for t in turns]
        return turns[int(np.argmin(distances))].speaker

    result: list[SpeechSegment] = []

    def emit(words: list[Word], speaker: str | None, template: SpeechSegment) -> None:
        result.append(SpeechSegment(
            id=f"S{len(result)}", start=words[0].start, end=words[-1].end,
            text=" ".join(w.text for w in words), words=words, turn=speaker,
            character=template.character, speaker_confidence=template.speaker_confidence,
            language=template.language,
        ))

    for segment in segments:
        if not segment.words:
            result.append(SpeechSegment(
                id=f"S{len(result)}", start=segment.start, end=segment.end, text=segment.text, words=[],
                turn=best_turn(segment.start, segment.end), character=segment.character,
                speaker_confidence=segment.speaker_confidence, language=segment.language,
            ))
            continue
        run: list[Word] = []
        run_speaker: str | None = None
        for word in segment.words:
            speaker = best_turn(word.start, word.end)
            if run and speaker != run_speaker:
                emit(run, run_speaker, segment)
                run = []
            run.append(word)
            run_speaker = speaker
        emit(run, run_speaker, segment)
    return result


def to_rttm(turns: list[SpeakerTurn], uri: str) -> str:
    """RTTM text (NIST): one SPEAKER line per turn."""
    uri = uri.replace(" ", "_")
    return "".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n" for t in turns
    )


def write_rttm(turns: list[SpeakerTurn], path: str | os.PathLike, uri: str | None = None) -> Path:
    """Writes the turns as RTTM atomically (temp file + rename)."""
    path = Path(path)
    text = to_rttm(turns, uri or path.stem)
    return write_atomically(path, lambda temporary: temporary.write_text(text))


def read_rttm(path: str | os.PathLike) -> list[SpeakerTurn]:
    """SPEAKER lines of an RTTM file as turns (all files/channels together)."""
    turns = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append(SpeakerTurn(start=start, end=start + duration, speaker=fields[7]))
    return sorted(turns, key=lambda t: t.start)
