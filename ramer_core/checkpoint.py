"""save_pretrained / from_pretrained: safetensors weights + a JSON config, written atomically.

Loading reads only tensors and JSON: no pickle, no code execution.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ramer_core.config import RamerConfig
from ramer_core.errors import RamerInputError

if TYPE_CHECKING:
    from ramer_core.model import RamerModel

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "ramer-core"
FORMAT_VERSION = 2  # 2: encoder embedding LayerNorm, personality concat-fuse, no aggregator dropout


def save_pretrained(model: RamerModel, directory: str | os.PathLike, card: dict[str, Any] | None = None,
                    companions: dict[str, str | os.PathLike] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (config incl. dimensions, label names and
    threshold, plus the model card) into ``directory``; each file appears complete or not at all.
    `companions` ({file name: source path}) are copied in beside them: files the checkpoint's inputs
    depend on (the default model's tuned text layers), which must travel with it."""
    directory = Path(directory)
    for name, source in (companions or {}).items():
        if Path(name).name != name or name in (WEIGHTS_NAME, CONFIG_NAME):
            raise RamerInputError(f"companion file name {name!r} must be a plain name other than the checkpoint's own")
        if not Path(source).is_file():
            raise RamerInputError(f"companion file {source} not found")
    if card is not None:
        model.card = dict(card)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "card": model.card,
    }
    try:
        text = json.dumps(document, indent=2, sort_keys=True)
    except TypeError as error:
        raise RamerInputError(f"model card for {directory} is not JSON-serialisable: {error}") from error
    # Both files go into a fresh folder beside the target, which then replaces it: weights and config
    # always belong together, and an interrupted save leaves the previous checkpoint intact.
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as error:
        raise RamerInputError(f"cannot write the checkpoint to {directory}: {error}") from None
    previous = directory.with_name(f".{directory.name}.previous")
    try:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": FORMAT})
        for name, source in (companions or {}).items():
            shutil.copyfile(source, staging / name)
        (staging / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(previous, ignore_errors=True)
            directory.rename(previous)
        staging.rename(directory)
        shutil.rmtree(previous, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if previous.exists() and not directory.exists():
            previous.rename(directory)
        raise RamerInputError(f"cannot write the checkpoint to {directory}: {error}") from None
    log.info("saved RAMer checkpoint to %s", directory)
    return directory


def from_pretrained(directory: str | os.PathLike, map_location: str | torch.device | None = None) -> RamerModel:
    """Rebuild a model saved by :func:`save_pretrained` (on CPU unless ``map_location`` says otherwise)."""
    from ramer_core.model import RamerModel

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise RamerInputError(f"{path} not found; a RAMer checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RamerInputError(f"{config_path} is not valid JSON ({error}); save the checkpoint again") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT or "config" not in document:
        raise RamerInputError(f"{config_path} is not a RAMer checkpoint config (missing format '{FORMAT}')")
    if document.get("format_version") != FORMAT_VERSION:
        raise RamerInputError(
            f"{config_path} has format_version {document.get('format_version')}; this code reads {FORMAT_VERSION}"
        )
    config = RamerConfig.from_dict(document["config"])
    model = RamerModel(config)
    device = torch.device(map_location) if map_location is not None else torch.device("cpu")
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise RamerInputError(f"{weights_path} is not a readable safetensors file ({error})") from error
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise RamerInputError(
            f"{weights_path} does not match {config_path}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RamerInputError(f"{weights_path} has tensors of the wrong shape for {config_path}: {error}") from error
    model.card = dict(document.get("card") or {})
    return model.to(device).eval()

