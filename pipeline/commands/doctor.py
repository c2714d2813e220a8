"""``python -m pipeline doctor``: what is installed, which models were found where, and whether CUDA works."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from extractors.errors import ModelNotFoundError
from extractors.model_store import get_spec, model_specs, package_version

if TYPE_CHECKING:  # the configuration imports every stage (and torch): loaded when doctor runs
    from pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class Check:
    kind: str            # "backend" or "model"
    name: str
    available: bool
    version: str | None
    where: str           # import location, model path, or why it is missing
    required: bool
    note: str = ""


# (import name, distribution, required, what it is for). facenet-pytorch is only checked for its
# files: its modules import torchvision, which the CPU torch here cannot load (extractors.faces runs
# MTCNN without it).
FILES_ONLY = {"facenet_pytorch"}
BACKENDS: tuple[tuple[str, str, bool, str], ...] = (
    ("torch", "torch", True, "RAMer, MTCNN, VAD"),
    ("av", "av", True, "decoding (bundled FFmpeg)"),
    ("cv2", "opencv-python-headless", True, "image operations"),
    ("faster_whisper", "faster-whisper", True, "speech recognition (default backend)"),
    ("ctranslate2", "ctranslate2", True, "faster-whisper runtime"),
    ("whisper", "openai-whisper", False, "speech recognition (openai-whisper backend)"),
    ("transformers", "transformers", True, "text features (MiniLM)"),
    ("librosa", "librosa", True, "acoustic features"),
    ("silero_vad", "silero-vad", True, "voice activity"),
    ("resemblyzer", "resemblyzer", True, "speaker embeddings"),
    ("facenet_pytorch", "facenet-pytorch", True, "MTCNN face detection"),
    ("dlib", "dlib-bin", True, "face identity descriptor"),
    ("sklearn", "scikit-learn", True, "metrics, clustering"),
    ("torchvision", "torchvision", False, "faster NMS when it imports (GPU machines)"),
    ("ray", "ray", False, "distributed batch processing"),
)


def _short(path: str) -> str:
    """site-packages paths shortened to what matters."""
    marker = "site-packages/"
    return "site-packages/" + path.split(marker, 1)[1] if marker in path else path


def _check_backend(module: str, distribution: str, required: bool, purpose: str) -> Check:
    if module in FILES_ONLY:
        version = package_version(distribution)
        spec = importlib.util.find_spec(module)
        where = _short(next(iter(spec.submodule_search_locations))) if spec else "not installed"
        return Check("backend", distribution, spec is not None, version, where, required, purpose)
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # any import failure (missing, broken CUDA build) means "not usable"
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:160]
        return Check("backend", distribution, False, package_version(distribution), reason, required, purpose)
    version = getattr(imported, "__version__", None) or package_version(distribution)
    where = _short(str(Path(getattr(imported, "__file__", None) or "built-in").parent))
    return Check("backend", distribution, True, str(version), where, required, purpose)


def _check_cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("backend", "cuda", True, torch.version.cuda, f"{torch.cuda.device_count()} x {name}", False)
    built = torch.version.cuda or "none (CPU build of torch)"
    return Check("backend", "cuda", False, None, f"not usable; torch CUDA build: {built}", False, "GPU inference")


def _check_model(config: PipelineConfig, name: str, required: bool) -> Check:
    try:
        found = config.locate(name, build=False)
    except ModelNotFoundError as error:
        if name in config.models:  # the user's own path is wrong: say exactly that
            return Check("model", name, False, None, str(error), True, "configured path")
        return Check("model", name, False, None, "not found", required, get_spec(name).how_to_get)
    note = "package; assembled into the cache on first use" if found.source == "buildable" else found.source
    note += f"; from {found.origin}" if found.origin else "; origin unknown" if found.source == "cache" else ""
    return Check("model", name, True, found.version, _short(str(found.path)), required, note)


def run_checks(config: PipelineConfig | None = None) -> list[Check]:
    from pipeline.config import PipelineConfig

    config = config or PipelineConfig()
    checks = [_check_backend(*backend) for backend in BACKENDS]
    checks.append(_check_cuda())
    checks += [_check_model(config, spec.name, spec.required) for spec in model_specs()]
    return checks


def _print_table(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    console.print(f"Python {platform.python_version()} on {platform.machine()} ({sys.executable})")
    for kind, title in (("backend", "Backends"), ("model", "Models")):
        table = Table(title=title, title_justify="left")
        for column in ("name", "status", "version", "where / why", "note"):
            table.add_column(column, overflow="fold", no_wrap=column in ("name", "status", "version"))
        for check in (c for c in checks if c.kind == kind):
            status = "[green]ok" if check.available else "[red]MISSING" if check.required else "[yellow]absent (optional)"
            table.add_row(check.name, status, check.version or "-", check.where, check.note)
        console.print(table)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config

    checks = run_checks(load_config(args.config))
    if args.json:
        json.dump([asdict(c) for c in checks], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(checks)
    missing = [c for c in checks if c.required and not c.available]
    for check in missing:
        log.error("%s: %s", check.name, check.where if check.where != "not found" else f"not found; {check.note}")
    if missing:
        log.error("required components missing: %s", ", ".join(c.name for c in missing))
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check backends, models and CUDA")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--config", metavar="FILE", help="pipeline configuration (YAML/JSON) with explicit model paths")
    parser.set_defaults(func=run)
