"""Speaker turns ("who spoke when") from resemblyzer's packaged GE2E speaker encoder.

Structure (pyannote-style: structure here, tunable numbers in `DiarizationConfig`):

1. speech regions from the VAD (or given by the caller);
2. a speaker embedding every `step_s` over sliding windows of `window_s` inside speech;
3. the number of speakers is given, or counted by average-linkage agglomerative clustering of
   non-overlapping windows (cosine distance, a threshold calibrated on single- and multi-speaker
   mixes; see `count_speakers`), bounded by `min_speakers` / `max_speakers` as in pyannote and
   steered by an optional outside prior (`expected_speakers`); windows are then labelled by k-means
   on the mean-centred embeddings;
4. each 10 ms frame of speech takes the speaker whose centroid is most similar on average over the
   windows covering it; a median filter removes flicker; contiguous runs become `SpeakerTurn`s.

Speech regions shorter than `min_region_s` are embedded whole but do not vote on the number of
speakers (their embeddings are noisy) unless nothing longer exists; they take the nearest speaker.
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

from extractors.audio import SAMPLE_RATE, AudioSamples, as_samples, mean_square
from extractors.contracts import SpeakerTurn, SpeechSegment, Word
from extractors.errors import ModelNotFoundError
from extractors.io import return_freed_memory, torch_threads, write_atomically
from extractors.model_store import resolve_model
from extractors.vad import SpeechRegion, VoiceActivityDetector

log = logging.getLogger(__name__)

FRAME_RATE = 100  # resemblyzer's mel frames per second (10 ms hop)
_MEL_FFT, _MEL_HOP, _MEL_BANDS = 400, 160, 40   # resemblyzer's 25 ms window, 10 ms step, 40 bands
_MEL_CHUNK_FRAMES = 6000                        # mel frames computed at once (60 s): bounds the memory


def voice_mel(audio: AudioSamples, chunk_frames: int = _MEL_CHUNK_FRAMES) -> np.ndarray:
    """What resemblyzer's encoder reads, ``wav_to_mel_spectrogram(normalize_volume(audio, -30,
    increase_only=True))`` ([F, 40] float32), computed over chunks: the whole-file version holds the
    complex spectrum of the whole audio and a gained copy (220 MB at 10 minutes, against 29 MB in chunks).

    Chunks overlap by the analysis window and are cut on frame boundaries, with the zeros librosa's centred
    framing pads with at the ends, so the frames are those of the whole-file analysis. Audio on disk is read
    a chunk at a time.
    """
    import librosa

    audio = as_samples(audio)
    if not len(audio):
        return np.zeros((0, _MEL_BANDS), np.float32)
    change_db = -30.0 - 10.0 * np.log10(max(mean_square(audio), 1e-20))
    gain = np.float32(10.0 ** (change_db / 20.0)) if change_db > 0 else np.float32(1.0)   # increase only
    total = 1 + len(audio) // _MEL_HOP                # librosa's centred frame count
    out = np.empty((total, _MEL_BANDS), np.float32)
    half = _MEL_FFT // 2
    for first in range(0, total, chunk_frames):
        last = min(total, first + chunk_frames)
        start, end = first * _MEL_HOP - half, (last - 1) * _MEL_HOP + _MEL_FFT - half   # sample span of the frames
        piece = np.zeros(end - start, np.float32)
        inside = audio[max(start, 0): min(end, len(audio))]
        piece[max(0, -start): max(0, -start) + len(inside)] = inside
        piece *= gain
        mel = librosa.feature.melspectrogram(y=piece, sr=SAMPLE_RATE, n_fft=_MEL_FFT, hop_length=_MEL_HOP,
                                             n_mels=_MEL_BANDS, center=False)             # [40, last - first]
        out[first:last] = mel.T
    return out


@dataclass
class DiarizationConfig:
    window_s: float = 1.2          # embedding window; GE2E was trained on 1.6 s partials
    step_s: float = 0.2            # hop between windows
    min_region_s: float = 0.3      # shorter speech regions are embedded whole but do not vote on the count
    max_speakers: int = 8          # upper bound for the automatic choice
    # Counting: average-linkage clustering of non-overlapping windows stops merging at this cosine
    # distance. Calibrated on the shared combinations, the pyannote call's prefixes and RAVDESS
    # actors 1-12 (benchmarks/speaker_count.py; actors 13-24 are the held-out check).
    count_threshold: float = 0.39
    # Counting windows start at least this far apart (half a window: fully overlapping windows are
    # near copies that make one utterance look like a voice; fully disjoint ones leave too few on
    # short recordings).
    count_spacing_s: float = 0.6
    # A prior (`expected_speakers`) moves the threshold by this much: clusters the prior asks for are
    # accepted down to threshold - margin; clusters beyond it need threshold + margin.
    prior_margin: float = 0.04
    max_count_windows: int = 600   # counting uses at most this many windows, evenly spaced in time
    smoothing_s: float = 0.3       # median filter over frame labels
    min_turn_s: float = 0.2        # shorter turns are absorbed by their neighbours


class SpeakerDiarizer:
    """Speaker turns of 16 kHz mono audio."""

    def __init__(self, config: DiarizationConfig | None = None, model_path: str | os.PathLike | None = None,
                 vad: VoiceActivityDetector | None = None, device: str | torch.device | None = None):
        """`model_path`: the resemblyzer checkpoint (else the model store's); `device`: "cpu", "cuda",
        "cuda:1"... (else CUDA when available)."""
        from resemblyzer import VoiceEncoder

        self.config = config or DiarizationConfig()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
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

    def __call__(self, audio: AudioSamples, **kwargs) -> list[SpeakerTurn]:
        return self.diarize(audio, **kwargs)

    def embed_windows(
        self, audio: AudioSamples, regions: list[SpeechRegion]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings [N, 256], window frame ranges [N, 2], reliable [N] bool) over the speech regions.

        Regions up to one window long are one window; regions shorter than `min_region_s` are one
        window too, marked unreliable (too little speech to say whose voice it is by itself).
        """
        cfg = self.config
        empty = np.zeros((0, 256), np.float32), np.zeros((0, 2), np.int64), np.zeros(0, bool)
        if not regions or mean_square(audio) == 0.0:   # silence: no voice to embed
            return empty
        mel = voice_mel(audio)                                  # [F, 40]
        window, step = int(cfg.window_s * FRAME_RATE), int(cfg.step_s * FRAME_RATE)
        ranges: list[tuple[int, int]] = []
        reliable: list[bool] = []
        for region in regions:
            first, last = int(region.start * FRAME_RATE), min(len(mel), int(region.end * FRAME_RATE))
            if last - first < 2:  # nothing to embed
                continue
            if last - first <= window:
                ranges.append((first, last))
                reliable.append(last - first >= int(cfg.min_region_s * FRAME_RATE))
                continue
            starts = list(range(first, last - window + 1, step))
            if starts[-1] + window < last:
                starts.append(last - window)
            ranges.extend((s, s + window) for s in starts)
            reliable.extend([True] * len(starts))
        if not ranges:
            return empty
        # On the CPU the LSTM runs single-threaded (see torch_threads: far faster on few cores).
        threads = 1 if self.device.type == "cpu" else torch.get_num_threads()
        out = np.zeros((len(ranges), 256), np.float32)
        with torch.inference_mode(), torch_threads(threads):
            # Windows of equal length go through the LSTM together.
            by_length: dict[int, list[int]] = {}
            for index, (s, e) in enumerate(ranges):
                by_length.setdefault(e - s, []).append(index)
            for length, indices in by_length.items():
                for chunk in range(0, len(indices), 256):   # stacked 256 at a time: memory flat in length
                    chosen = indices[chunk: chunk + 256]
                    batch = np.stack([mel[ranges[i][0]: ranges[i][0] + length] for i in chosen])  # [B, L, 40]
                    out[chosen] = self.encoder(torch.from_numpy(batch).to(self.device)).cpu().numpy()
                    return_freed_memory()   # the LSTM's batches fragment the heap (+600 MB over an hour, measured)
        return out, np.asarray(ranges, dtype=np.int64), np.asarray(reliable, dtype=bool)

    def count_speakers(
        self,
        embeddings: np.ndarray,
        ranges: np.ndarray | None = None,
        min_speakers: int = 1,
        max_speakers: int | None = None,
        expected_speakers: int | None = None,
    ) -> int:
        """Number of voices among the window embeddings [N, 256] (frame ranges [N, 2]).

        Average-linkage agglomerative clustering (cosine distance) of windows starting at least
        `count_spacing_s` apart: overlapping windows are near copies of each other and let one
        utterance look like a speaker of its own (spectral eigen-gaps on all windows counted 1 of 20
        RAVDESS mixes right). The count is the number of clusters left when the closest pair is
        `count_threshold` apart.

        `expected_speakers` (e.g. the number of people seen on screen) is a soft prior: a count
        below it rises to it when the dendrogram separates that many clusters at least
        `count_threshold - prior_margin` apart; a count above it falls to it unless the extra
        clusters are more than `count_threshold + prior_margin` apart. `min_speakers` /
        `max_speakers` are hard bounds (pyannote's meaning).
        """
        from scipy.cluster.hierarchy import fcluster, linkage

        cfg = self.config
        upper = min(max_speakers or cfg.max_speakers, max(1, len(embeddings)))
        lower = max(1, min(min_speakers, upper))
        if ranges is None:
            ranges = np.stack([np.arange(len(embeddings)), np.arange(len(embeddings)) + 1], 1)
        keep = _spaced(ranges, int(cfg.count_spacing_s * FRAME_RATE))
        if len(keep) > cfg.max_count_windows:
            keep = keep[np.linspace(0, len(keep) - 1, cfg.max_count_windows).round().astype(int)]
        if len(keep) < 2:
            count = 1 if expected_speakers is None else expected_speakers
            return int(np.clip(count, lower, upper))
        vectors = embeddings[keep] / (np.linalg.norm(embeddings[keep], axis=1, keepdims=True) + 1e-8)
        tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")  # [M-1, 4]
        # merge_distance[k] (k >= 2): the distance at which k clusters become k - 1.
        merge_distance = {k: float(tree[-(k - 1), 2]) for k in range(2, len(keep) + 1)}

        def clusters_apart(threshold: float) -> int:
            return int(fcluster(tree, threshold, criterion="distance").max())

        count = clusters_apart(cfg.count_threshold)
        if expected_speakers is not None and expected_speakers != count:
            prior = int(np.clip(expected_speakers, 1, len(keep)))
            if prior > count and merge_distance.get(prior, 0.0) >= cfg.count_threshold - cfg.prior_margin:
                count = prior
            elif prior < count:
                count = max(prior, clusters_apart(cfg.count_threshold + cfg.prior_margin))
        log.debug("speaker count: %d (windows %d, last merges %s)", count, len(keep),
                  [round(merge_distance[k], 3) for k in sorted(merge_distance)[:6]])
        return int(np.clip(count, lower, upper))

    def cluster(
        self,
        embeddings: np.ndarray,
        num_speakers: int | None = None,
        ranges: np.ndarray | None = None,
        min_speakers: int = 1,
        max_speakers: int | None = None,
        expected_speakers: int | None = None,
    ) -> np.ndarray:
        """Cluster label per embedding; automatic number of speakers unless `num_speakers` is given.

        GE2E embeddings are all positive and similar (cosine 0.6-0.8 between different voices), so
        they are centred on their mean before k-means, which separates voices better than the
        spectral labels themselves (on the pyannote sample: 100% vs 90% of pure windows).
        """
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.int64)
        if num_speakers is not None:
            k = num_speakers
        else:
            k = self.count_speakers(embeddings, ranges, min_speakers, max_speakers, expected_speakers)
        k = min(k, len(embeddings))
        if k <= 1:
            return np.zeros(len(embeddings), dtype=np.int64)
        centred = embeddings - embeddings.mean(0)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-8
        with threadpool_limits(limits=1):
            return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(centred)

    def diarize(
        self,
        audio: AudioSamples,
        speech_regions: list[SpeechRegion] | None = None,
        num_speakers: int | None = None,
        progress: Callable[[float], None] | None = None,
        *,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        expected_speakers: int | None = None,
    ) -> list[SpeakerTurn]:
        """Speaker turns, sorted by start; speakers named SPK0, SPK1, ... by first appearance.

        `num_speakers` fixes the number of speakers; `min_speakers` / `max_speakers` bound the
        automatic count (as in pyannote); `expected_speakers` is a soft prior from outside (e.g. the
        number of characters seen on screen) that the voices may override (see `count_speakers`).
        """
        cfg = self.config
        for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                            ("max_speakers", max_speakers), ("expected_speakers", expected_speakers)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
            raise ValueError(f"min_speakers {min_speakers} > max_speakers {max_speakers}")
        audio = as_samples(audio)
        regions = speech_regions if speech_regions is not None else self.vad.detect(audio)
        embeddings, ranges, reliable = self.embed_windows(audio, regions)
        if progress is not None:
            progress(0.8)
        if len(embeddings) == 0:
            return []
        # Windows from regions too short to identify a voice follow the others (when there are any).
        voting = reliable if reliable.sum() >= 2 else np.ones(len(embeddings), bool)
        voting_labels = self.cluster(embeddings[voting], num_speakers, ranges[voting],
                                     min_speakers or 1, max_speakers, expected_speakers)
        num_clusters = int(voting_labels.max()) + 1
        centroids = np.stack([embeddings[voting][voting_labels == c].mean(0) for c in range(num_clusters)])
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
        # Speech frames no window covered take the nearest covered frame's votes.
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


def _spaced(ranges: np.ndarray, spacing: int) -> np.ndarray:
    """Indices of windows, in time order, each starting >= `spacing` frames after the previously kept one."""
    keep: list[int] = []
    next_start = -1
    for index in np.argsort(ranges[:, 0], kind="stable"):
        if ranges[index, 0] >= next_start:
            keep.append(int(index))
            next_start = int(ranges[index, 0]) + max(1, spacing)
    return np.asarray(keep, dtype=np.int64)


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
