"""The extractor stages, built once from the pipeline configuration (models: and device: reach every stage).

Every stage gets its models' explicit paths from ``models:``; the PyTorch stages (face detection,
expression, speaker embeddings, text encoder, speech recognition, whisper acoustic encoder) run on ``device``. Three small models
always run on the CPU: the silero VAD and the LiteRT face mesh (no CUDA build offline), and the librosa
acoustic features (no network at all).

:class:`StageFactory` builds each stage on first use and keeps it, so a batch worker loads every model
once, and a run whose stages all come from the cache loads none. ``model_versions`` names, for each
stage, the models it uses with their source and version: they are part of the stage cache key.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

# stage -> the model_store names it loads
STAGE_MODELS: dict[str, tuple[str, ...]] = {
    "visual": ("mtcnn", "fer-expression", "dlib-face-descriptor", "dlib-landmarks-5", "face-mesh"),
    "vad": ("silero-vad",),
    "asr": ("whisper-tiny.en",),
    "diarization": ("resemblyzer",),
    "speaking": ("face-mesh",),
    "acoustic": (),
    "acoustic_whisper": ("whisper-tiny.en",),
    "text": ("minilm",),
}


@dataclass
class StageFactory:
    config: PipelineConfig
    device: str = "cpu"
    # encoder blocks of the whisper acoustic features: the checkpoint's choice (None: the whole encoder)
    acoustic_whisper_blocks: int | None = None
    # tuned top blocks of the text encoder: the checkpoint's companion file (None: the packaged MiniLM)
    text_tuned_layers: Path | None = None
    _built: dict[str, Any] = field(default_factory=dict)
    _located: dict[str, dict] = field(default_factory=dict)

    def model_info(self, name: str) -> dict:
        """{source, version, path} of one model under this configuration (for provenance and cache keys)."""
        if name not in self._located:
            from extractors.model_store import model_specs

            if name not in {spec.name for spec in model_specs()}:
                self._located[name] = {"source": "unregistered", "version": None, "path": None}
            else:
                resolved = self.config.locate(name, build=False)
                self._located[name] = {"source": resolved.source, "version": resolved.version,
                                       "path": str(resolved.path)}
        return self._located[name]

    def model_versions(self, stage: str) -> dict[str, str]:
        names = list(STAGE_MODELS.get(stage, ()))
        if stage == "asr":
            names = [self.config.asr_model]
        versions = {name: f"{info['source']}:{info['version']}:{info['path']}"
                    for name in names for info in [self.model_info(name)]}
        if stage == "text" and self.text_tuned_layers is not None:
            from pipeline.stage_cache import file_sha256

            versions["text-tuned-layers"] = file_sha256(self.text_tuned_layers)
        return versions

    @property
    def audio_threads(self) -> int:
        """CPU threads of the audio stages when they run beside the visual pass: half the cores, at least 1."""
        return max(1, (os.cpu_count() or 1) // 2)

    def _path(self, name: str):
        return self.config.models.get(name)

    def get(self, stage: str):
        """The built stage (each gets a copy of its settings: a stage that adjusts them cannot change the
        cache keys computed from the configuration)."""
        if stage not in self._built:
            self._built[stage] = getattr(self, f"_build_{stage}")()
        return self._built[stage]

    # --- builders ------------------------------------------------------------------------------

    def _build_visual(self):
        from dataclasses import replace

        from extractors.visual_features import VisualExtractor

        visual = replace(copy.deepcopy(self.config.visual), device=self.config.visual.device or self.device)
        return VisualExtractor(visual, models=self.config.models)

    def _build_vad(self):
        from extractors.vad import VoiceActivityDetector

        return VoiceActivityDetector(copy.deepcopy(self.config.vad), model_path=self._path("silero-vad"))

    def _build_asr(self):
        from dataclasses import replace

        from extractors.asr import SpeechRecognizer

        # Beside the visual pass, ASR keeps to its share of the cores unless the configuration says otherwise.
        threads = self.config.asr.cpu_threads or (self.audio_threads if self.config.parallel_audio else 0)
        asr_config = replace(copy.deepcopy(self.config.asr), model=self.config.asr_model, cpu_threads=threads,
                             model_path=self.config.asr.model_path or self._path(self.config.asr_model))
        return SpeechRecognizer(asr_config, vad=self.get("vad"), device=self.device)

    def _build_diarization(self):
        from extractors.diarization import SpeakerDiarizer

        return SpeakerDiarizer(copy.deepcopy(self.config.diarization), model_path=self._path("resemblyzer"), vad=self.get("vad"),
                               device=self.device)

    def _build_speaking(self):
        from extractors.active_speaker import ActiveSpeakerDetector

        # Its mouth measurement trails the visual pass on the audio chain's core, then takes every core.
        return ActiveSpeakerDetector(copy.deepcopy(self.config.speaking), model_path=self._path("face-mesh"),
                                     workers=os.cpu_count() or 1)

    def _build_acoustic(self):
        from extractors.acoustic_features import AcousticFeatureExtractor

        return AcousticFeatureExtractor(copy.deepcopy(self.config.acoustic))

    def _build_acoustic_whisper(self):
        from extractors.acoustic_features import WhisperEncoderFeatures

        # the openai-whisper form of the packaged tiny.en weights (converted once when not configured)
        return WhisperEncoderFeatures("whisper-tiny.en", model_path=self._path("openai-whisper-tiny.en"),
                                      blocks=self.acoustic_whisper_blocks, device=self.device)

    def _build_text(self):
        from extractors.text_features import TextEncoder

        return TextEncoder(copy.deepcopy(self.config.text), model_path=self._path("minilm"), device=self.device,
                           tuned_layers=self.text_tuned_layers)
