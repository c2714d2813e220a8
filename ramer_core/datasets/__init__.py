"""Dataset readers: every benchmark format becomes train / valid / test splits of RamerSamples.

``load_dataset(kind, path)`` picks the reader by name (:data:`DATASET_KINDS`); :func:`collate`
turns a list of samples into the model's :class:`~ramer_core.batch.RamerBatch`.
"""

from __future__ import annotations

from pathlib import Path

from ramer_core.dataset_kinds import DATASET_KINDS  # noqa: E402  (light module: the CLI lists them)
from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample, collate
from ramer_core.datasets.feature_store import FeatureStoreWriter, load_feature_store, read_feature_store
from ramer_core.datasets.m3ed import M3ED_LABELS, load_m3ed
from ramer_core.datasets.memor import MEMOR_EMOTIONS, load_memor
from ramer_core.datasets.mosei import MOSEI_LABELS, load_mosei_aligned
from ramer_core.datasets.synthetic import SyntheticConfig, make_synthetic
from ramer_core.errors import RamerInputError


def load_dataset(kind: str, path: str | Path | None = None, seed: int = 0) -> DatasetSplits:
    """Read a benchmark by kind. ``synthetic`` needs no path (``seed`` picks the draw)."""
    if kind == "mosei-aligned":
        return load_mosei_aligned(_need(path, kind))
    if kind == "memor":
        return load_memor(_need(path, kind), emo_type="primary")
    if kind == "memor-fine":
        return load_memor(_need(path, kind), emo_type="fine_grained")
    if kind == "m3ed":
        return load_m3ed(_need(path, kind))
    if kind == "feature-store":
        return load_feature_store(_need(path, kind))
    if kind == "synthetic":
        return make_synthetic(SyntheticConfig(seed=seed))
    raise RamerInputError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASET_KINDS)}")


def _need(path: str | Path | None, kind: str) -> Path:
    if path is None:
        raise RamerInputError(f"dataset {kind} needs a path")
    return Path(path)


__all__ = [
    "DATASET_KINDS", "DatasetSplits", "FeatureDims", "FeatureStoreWriter", "M3ED_LABELS", "MEMOR_EMOTIONS",
    "MOSEI_LABELS", "RamerDataset", "RamerSample", "SyntheticConfig", "collate", "load_dataset",
    "load_feature_store", "load_m3ed", "load_memor", "load_mosei_aligned", "make_synthetic", "read_feature_store",
]
