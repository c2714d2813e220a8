"""The feature store: per (moment, character) modality features that the video pipeline writes.

Layout of a store folder (format ``ramer-feature-store``, version 1)::

    index.json
        {"format": "ramer-feature-store", "format_version": 1,
         "label_names": ["anger", ...] | null,           # null: unlabelled store
         "dims": {"text": Dt, "visual": Dv, "acoustic": Da, "personality": Dp},  # Dp 0 = none
         "shards": ["shard-00000.safetensors", ...],
         "samples": [{"id": "M12/C1",  "moment": "M12", "character": "C1", "shard": 0,
                      "split": "train" | "valid" | "test" | null,
                      "labels": ["joy", ...] | null,       # names from label_names
                      "start": 61.2, "end": 64.05, "role": "speaker" | "listener" | null}, ...]}
    shard-00000.safetensors
        "<id>/text" [Tt, Dt], "<id>/visual" [Tv, Dv], "<id>/acoustic" [Ta, Da] float32,
        "<id>/personality" [Dp] (only when the character has one)

A modality is present exactly when its tensor has at least one time step: a non-speaker's
acoustic and text are stored as empty ``(0, D)`` tensors. Every sample is one person and one
segment (P = S = 1). Tensors are read with safetensors (no code runs). :class:`FeatureStoreWriter`
writes a store into a temporary folder and renames it into place on ``close()``, so a reader
never sees a half-written store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ramer_core.batch import MODALITIES
from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample
from ramer_core.errors import RamerInputError

log = logging.getLogger(__name__)

FORMAT = "ramer-feature-store"
FORMAT_VERSION = 1
INDEX = "index.json"


class FeatureStoreWriter:
    """Collects samples and writes them as a feature store; use as a context manager.

    >>> with FeatureStoreWriter(folder, dims, label_names) as store:
    ...     store.add("M1", "C0", text=t, visual=v, acoustic=a, labels=["joy"])
    """

    def __init__(self, folder: str | Path, dims: FeatureDims, label_names: Sequence[str] | None = None,
                 shard_size: int = 1024, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not overwrite:
            raise RamerInputError(f"{self.folder} already exists; remove it or pass overwrite=True")
        self.dims = dims
        self.label_names = None if label_names is None else tuple(label_names)
        self.shard_size = shard_size
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=self.folder.parent))
        self._entries: list[dict] = []
        self._shards: list[str] = []
        self._pending: dict[str, torch.Tensor] = {}
        self._ids: set[str] = set()
        self._closed = False

    def add(self, moment: str, character: str, text: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor,
            labels: Sequence[str] | None = None, personality: torch.Tensor | None = None,
            split: str | None = None, start: float | None = None, end: float | None = None,
            role: str | None = None) -> str:
        """Add one (moment, character) sample; returns its id. Feature tensors are [T, D], T may be 0."""
        sample_id = f"{moment}/{character}"
        if sample_id in self._ids:
            raise ValueError(f"sample {sample_id} added twice")
        for name, tensor in (("text", text), ("visual", visual), ("acoustic", acoustic)):
            if tensor.ndim != 2 or tensor.shape[1] != getattr(self.dims, name):
                raise ValueError(f"{sample_id}: {name} must be [T, {getattr(self.dims, name)}], "
                                 f"got {tuple(tensor.shape)}")
            self._pending[f"{sample_id}/{name}"] = tensor.detach().to("cpu", torch.float32).contiguous()
        if personality is not None:
            if personality.shape != (self.dims.personality,):
                raise ValueError(f"{sample_id}: personality must be [{self.dims.personality}]")
            self._pending[f"{sample_id}/personality"] = personality.detach().to("cpu", torch.float32).contiguous()
        if labels is not None:
            if self.label_names is None:
                raise ValueError("this store has no label_names; cannot add labels")
            unknown = [lab for lab in labels if lab not in self.label_names]
            if unknown:
                raise ValueError(f"{sample_id}: unknown labels {unknown}")
        self._entries.append({
            "id": sample_id, "moment": moment, "character": character, "shard": len(self._shards),
            "split": split, "labels": None if labels is None else list(labels),
            "start": start, "end": end, "role": role,
        })
        self._ids.add(sample_id)
        if sum(1 for e in self._entries if e["shard"] == len(self._shards)) >= self.shard_size:
            self._flush()
        return sample_id

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"shard-{len(self._shards):05d}.safetensors"
        save_file(self._pending, str(self._tmp / name), metadata={"format": FORMAT})
        self._shards.append(name)
        self._pending = {}

    def close(self) -> Path:
        """Write the last shard and the index, then move the store into place."""
        if self._closed:
            return self.folder
        self._flush()
        index = {"format": FORMAT, "format_version": FORMAT_VERSION,
                 "label_names": None if self.label_names is None else list(self.label_names),
                 "dims": self.dims.serialize(), "shards": self._shards, "samples": self._entries}
        (self._tmp / INDEX).write_text(json.dumps(index, indent=1))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self._tmp, self.folder)
        self._closed = True
        log.info("wrote feature store %s (%d samples, %d shards)", self.folder, len(self._entries), len(self._shards))
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _read_index(folder: Path) -> dict:
    path = folder / INDEX
    if not path.is_file():
        raise RamerInputError(f"{folder} is not a feature store: {INDEX} not found")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RamerInputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise RamerInputError(f"{path}: not a {FORMAT} index")
    if index.get("format_version") != FORMAT_VERSION:
        raise RamerInputError(f"{path}: format_version {index.get('format_version')} is not supported "
                              f"(this reader knows {FORMAT_VERSION})")
    for key in ("dims", "shards", "samples"):
        if key not in index:
            raise RamerInputError(f"{path}: missing {key!r}")
    return index


def read_feature_store(folder: str | Path) -> tuple[list[RamerSample], list[str | None], tuple[str, ...], FeatureDims]:
    """Every sample of the store, its split (or None), the label names (empty when unlabelled), the dims."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RamerInputError(f"feature store not found: {folder}")
    index = _read_index(folder)
    try:
        dims = FeatureDims(**{k: int(v) for k, v in index["dims"].items()})
    except (TypeError, ValueError):
        raise RamerInputError(f"{folder / INDEX}: dims must map text/visual/acoustic/personality to sizes") from None
    label_names = tuple(index.get("label_names") or ())
    shards: dict[int, dict[str, torch.Tensor]] = {}
    samples, splits = [], []
    for entry in index["samples"]:
        try:
            sample_id, shard = entry["id"], int(entry["shard"])
            shard_name = index["shards"][shard]
        except (KeyError, TypeError, ValueError, IndexError):
            raise RamerInputError(f"{folder / INDEX}: malformed sample entry {entry!r}") from None
        if shard not in shards:
            try:
                shards[shard] = load_file(str(folder / shard_name))
            except (SafetensorError, OSError, FileNotFoundError) as error:
                raise RamerInputError(f"{folder / shard_name}: cannot read shard ({error})") from None
        tensors = shards[shard]
        seqs = {}
        for m in MODALITIES:
            key = f"{sample_id}/{m}"
            if key not in tensors:
                raise RamerInputError(f"{folder / shard_name}: tensor {key!r} missing")
            seqs[m] = tensors[key]
            if seqs[m].ndim != 2 or seqs[m].shape[1] != getattr(dims, m):
                raise RamerInputError(f"{folder / shard_name}: {key} has shape {tuple(seqs[m].shape)}, "
                                      f"expected [T, {getattr(dims, m)}]")
        labels = None
        if entry.get("labels") is not None:
            unknown = [lab for lab in entry["labels"] if lab not in label_names]
            if unknown:
                raise RamerInputError(f"{folder / INDEX}: sample {sample_id} has labels {unknown} "
                                      f"not in label_names")
            labels = torch.tensor([float(name in entry["labels"]) for name in label_names])
        samples.append(RamerSample.single(seqs["text"], seqs["visual"], seqs["acoustic"], labels=labels,
                                          personality=tensors.get(f"{sample_id}/personality"), key=sample_id))
        splits.append(entry.get("split"))
    return samples, splits, label_names, dims


def _moment_of(sample_id: str) -> str:
    """Sample ids are ``moment/character`` (see :meth:`FeatureStoreWriter.add`)."""
    return sample_id.rsplit("/", 1)[0]


def load_feature_store(folder: str | Path, valid_fraction: float = 0.1, test_fraction: float = 0.1,
                       seed: int = 42) -> DatasetSplits:
    """The store as train / valid / test: its own ``split`` entries, else a seeded random split."""
    samples, splits, label_names, dims = read_feature_store(folder)
    groups: dict[str, list[RamerSample]] = {"train": [], "valid": [], "test": []}
    if any(s is not None for s in splits):
        for sample, split in zip(samples, splits, strict=True):
            split = {"val": "valid", "dev": "valid"}.get(split, split)
            if split not in groups:
                raise RamerInputError(f"{folder}: sample {sample.key} has split {split!r}; use train/valid/test")
            groups[split].append(sample)
    else:  # split whole moments: a moment's characters share context and must not straddle splits
        moments = sorted({_moment_of(sample.key) for sample in samples})
        order = np.random.RandomState(seed).permutation(len(moments))
        n_valid, n_test = int(len(moments) * valid_fraction), int(len(moments) * test_fraction)
        split_of = {moments[i]: "valid" for i in order[:n_valid]}
        split_of.update({moments[i]: "test" for i in order[n_valid:n_valid + n_test]})
        for sample in samples:
            groups[split_of.get(_moment_of(sample.key), "train")].append(sample)
    datasets = {k: RamerDataset(v, label_names, dims, name=f"feature-store:{k}", source=str(folder))
                for k, v in groups.items()}
    return DatasetSplits(**datasets, label_names=label_names)
