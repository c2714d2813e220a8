"""Pipeline configuration: a YAML or JSON file validated by pydantic.

Only settings a user may tune live here; structure (which stages exist) lives in code. Unknown keys
are errors, so a typo never silently falls back to a default.

    models:                     # explicit weights, by model name (see `python -m pipeline doctor`)
      whisper-base: /data/models/faster-whisper-base
    device: auto                # auto (CUDA when present), cpu or cuda
    asr_model: whisper-base     # the speech recogniser `pipeline run` uses (default whisper-tiny.en)
    visual: {analysis_fps: 4}   # any field of a stage's config dataclass, by stage:
    vad: {threshold: 0.5}       #   visual, vad, asr, diarization, speaking, acoustic, text, moments
    diarization: {max_speakers: 8}

Every stage gets the configured model paths and the device; the stage settings are part of the stage
cache key, so changing one recomputes that stage and those after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from extractors.acoustic_features import AcousticConfig
from extractors.active_speaker import ActiveSpeakerConfig
from extractors.asr import AsrConfig
from extractors.diarization import DiarizationConfig
from extractors.model_store import ResolvedModel, locate_model, model_specs
from extractors.moments import MomentConfig
from extractors.text_features import TextConfig
from extractors.vad import VadConfig
from extractors.visual_features import VisualConfig
from pipeline.errors import UserError


def _forbid_unknown_keys(cls: type) -> None:
    """Makes pydantic reject unknown keys in a stage's config dataclass and in the dataclasses inside it."""
    import dataclasses
    import typing

    cls.__pydantic_config__ = ConfigDict(extra="forbid")
    for hint in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(hint) and not hasattr(hint, "__pydantic_config__"):
            _forbid_unknown_keys(hint)


STAGE_CONFIGS = {"visual": VisualConfig, "vad": VadConfig, "asr": AsrConfig, "diarization": DiarizationConfig,
                 "speaking": ActiveSpeakerConfig, "acoustic": AcousticConfig, "text": TextConfig,
                 "moments": MomentConfig}
for _cls in STAGE_CONFIGS.values():
    _forbid_unknown_keys(_cls)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, Path] = {}                  # model name -> explicit path (file or folder)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    asr_model: str = "whisper-tiny.en"            # model_store name of the recogniser `pipeline run` uses
    visual: VisualConfig = Field(default_factory=VisualConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    diarization: DiarizationConfig = Field(default_factory=DiarizationConfig)
    speaking: ActiveSpeakerConfig = Field(default_factory=ActiveSpeakerConfig)
    acoustic: AcousticConfig = Field(default_factory=AcousticConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    moments: MomentConfig = Field(default_factory=MomentConfig)
    # VAD, ASR and acoustic features in a second thread beside the visual pass, the cores split between
    # them (ASR gets half, at least one). False: one stage after another, each with every core.
    parallel_audio: bool = True
    # With parallel_audio: that thread then measures the mouths of the speech windows the visual pass has
    # settled, while it still runs. False: the mouths are measured after the visual pass, with every core.
    mouths_beside: bool = True
    # Allocations of at least this many MiB get their own memory mapping, given back when freed (glibc's
    # M_MMAP_THRESHOLD, set for the whole process when a runner is made; 0: glibc's sliding threshold, under
    # which the peak grew with the video's length; glibc refuses more than 32 MiB on 64-bit systems). See
    # extractors.io.map_large_allocations.
    mmap_threshold_mib: float = Field(16.0, ge=0, le=32)

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, Path]) -> dict[str, Path]:
        known = {spec.name for spec in model_specs()}
        unknown = sorted(set(models) - known)
        if unknown:
            raise ValueError(f"unknown model name(s) {unknown}; known: {sorted(known)}")
        return {name: path.expanduser() for name, path in models.items()}

    def locate(self, name: str, build: bool = True) -> ResolvedModel:
        """Where model ``name`` comes from under this configuration."""
        return locate_model(name, self.models.get(name), build=build)

    def torch_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("configuration asks for device 'cuda' but CUDA is not usable here (see `python -m pipeline doctor`)")
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def load_config(path: str | Path | None) -> PipelineConfig:
    """The configuration in ``path`` (YAML or JSON), or the defaults when ``path`` is None."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"configuration file {path} cannot be read: {error}") from None
    try:
        return PipelineConfig.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in error.errors())
        raise UserError(f"configuration file {path} is invalid: {problems}") from None
