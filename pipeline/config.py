"""Pipeline configuration: a YAML or JSON file validated by pydantic.

Only settings a user may tune live here; structure (which stages exist) lives in code. Unknown keys
are errors, so a typo never silently falls back to a default.

    models:                     # explicit weights, by model name (see `python -m pipeline doctor`)
      whisper-base: /data/models/faster-whisper-base
    device: auto                # auto (CUDA when present), cpu or cuda
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from extractors.model_store import ResolvedModel, locate_model, model_specs
from pipeline.errors import UserError


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, Path] = {}                  # model name -> explicit path (file or folder)
    device: Literal["auto", "cpu", "cuda"] = "auto"

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
