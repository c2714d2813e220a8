"""CMU-MOSEI, word-aligned, in the TAILOR / CARAT ``train_valid_test.pt`` layout.

The file is a ``torch.save`` of::

    {"train": split, "valid": split, "test": split}
    split = {
        "src-text":   [N, 60, 300] float (GloVe, word-aligned),      numpy array or tensor
        "src-audio":  [N, 60, 74]  float (COVAREP; may hold -inf),   numpy array or tensor
        "src-visual": [N, 60, 35]  float (FACET),                    numpy array or tensor
        "tgt": N label-token lists, e.g. [2, 4, 6, 3]: the first and last tokens are the
               sequence start/end markers and are dropped; tokens 4..9 are the emotions
               happy, sad, anger, surprise, disgust, fear (token - 4 = label index),
        ... (other keys, such as "id", are ignored)
    }

(kniter1/TAILOR ``src/dataloaders/cmu_dataloader.py``; chengzju/CARAT reads the same file.) As those
readers do, non-finite acoustic values (-inf from COVAREP) become 0. Every time step counts as
valid, and every modality is present: MOSEI has one speaker per sample. The file is read with
``torch.load(weights_only=True)`` (numpy arrays allowed, no other code runs); a file that needs
more than that is refused with a RamerInputError.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample, check_file
from ramer_core.errors import RamerInputError

log = logging.getLogger(__name__)

MOSEI_LABELS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
FIRST_EMOTION_TOKEN = 4
SPLITS = ("train", "valid", "test")
KEYS = {"text": "src-text", "acoustic": "src-audio", "visual": "src-visual"}


def _numpy_safe_globals() -> list:
    """The numpy reconstructors a pickled numpy array needs: data only, no code."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(t)) for t in (np.float32, np.float64, np.float16, np.int64, np.int32,
                                                np.int8, np.uint8, np.bool_)]
    return [_reconstruct, np.ndarray, np.dtype, *dtype_classes]


def safe_torch_load(path: Path, what: str):
    """``torch.load(weights_only=True)`` with numpy arrays allowed; RamerInputError on anything else."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RamerInputError(
            f"{path}: this {what} holds Python objects that cannot be loaded without running code "
            f"({str(error).splitlines()[0]}). Re-save it with plain tensors / numpy arrays, lists and "
            f"dicts only."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise RamerInputError(f"{path}: not a readable torch file for a {what} ({error})") from None


def _as_array(value, path: Path, split: str, key: str, dim: int | None) -> torch.Tensor:
    try:
        array = torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as error:
        raise RamerInputError(f"{path}: {split}/{key} is not a numeric array ({error})") from None
    if array.ndim != 3 or (dim is not None and array.shape[2] != dim):
        want = f"[N, T, {dim}]" if dim is not None else "[N, T, D]"
        raise RamerInputError(f"{path}: {split}/{key} has shape {tuple(array.shape)}, expected {want}")
    return torch.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def _labels_from_tokens(tokens, path: Path, split: str, index: int,
                        label_names: tuple[str, ...] = MOSEI_LABELS) -> torch.Tensor:
    labels = torch.zeros(len(label_names))
    try:
        inner = [int(t) for t in list(tokens)[1:-1]]
    except (TypeError, ValueError):
        raise RamerInputError(f"{path}: {split}/tgt[{index}] is not a list of label tokens") from None
    for token in inner:
        label = token - FIRST_EMOTION_TOKEN
        if not 0 <= label < len(label_names):
            raise RamerInputError(f"{path}: {split}/tgt[{index}] holds token {token}; emotion tokens are "
                                  f"{FIRST_EMOTION_TOKEN}..{FIRST_EMOTION_TOKEN + len(label_names) - 1}")
        labels[label] = 1.0
    return labels


def read_mosei_split(data: dict, split: str, path: Path, expected_dims: FeatureDims | None = None,
                     label_names: tuple[str, ...] = MOSEI_LABELS, name: str = "mosei-aligned") -> RamerDataset:
    if split not in data or not isinstance(data[split], dict):
        raise RamerInputError(f"{path}: no {split!r} split (expected a dict with keys {', '.join(SPLITS)})")
    part = data[split]
    missing = [k for k in (*KEYS.values(), "tgt") if k not in part]
    if missing:
        raise RamerInputError(f"{path}: {split} split lacks {', '.join(missing)} (TAILOR/CARAT layout expected)")
    arrays = {m: _as_array(part[key], path, split, key, None if expected_dims is None else getattr(expected_dims, m))
              for m, key in KEYS.items()}
    count = {m: a.shape[0] for m, a in arrays.items()}
    targets = list(part["tgt"])
    if len(set(count.values()) | {len(targets)}) != 1:
        raise RamerInputError(f"{path}: {split} sample counts differ: {count}, tgt {len(targets)}")
    lengths = part.get("len_list")  # CARAT's converted M3ED: utterances before the zero padding
    if lengths is not None and len(lengths) != len(targets):
        raise RamerInputError(f"{path}: {split}/len_list has {len(lengths)} entries for {len(targets)} samples")
    steps = arrays["text"].shape[1]
    samples = []
    for i in range(len(targets)):
        keep = steps if lengths is None else max(1, min(steps, int(lengths[i])))
        samples.append(RamerSample.single(arrays["text"][i, :keep], arrays["visual"][i, :keep],
                                          arrays["acoustic"][i, :keep],
                                          labels=_labels_from_tokens(targets[i], path, split, i, label_names),
                                          present=(True, True, True), key=f"{split}:{i}"))
    dims = FeatureDims(arrays["text"].shape[2], arrays["visual"].shape[2], arrays["acoustic"].shape[2])
    return RamerDataset(samples, label_names, dims, name=f"{name}:{split}", source=str(path))


def load_mosei_aligned(path: str | Path) -> DatasetSplits:
    """Read the three splits of a TAILOR/CARAT ``train_valid_test.pt``."""
    return load_token_layout(path, MOSEI_LABELS, "mosei-aligned", "CMU-MOSEI aligned file (train_valid_test.pt)")


def load_token_layout(path: str | Path, label_names: tuple[str, ...], name: str, what: str) -> DatasetSplits:
    """The TAILOR/CARAT layout: {"train", "valid", "test"} splits of src-* arrays and tgt token lists."""
    path = check_file(path, what)
    data = safe_torch_load(path, what)
    if not isinstance(data, dict):
        raise RamerInputError(f"{path}: expected a dict of splits {SPLITS}, found {type(data).__name__}")
    train = read_mosei_split(data, "train", path, label_names=label_names, name=name)
    splits = {"train": train}
    for split in ("valid", "test"):
        splits[split] = read_mosei_split(data, split, path, expected_dims=train.dims, label_names=label_names,
                                         name=name)
    log.info("read %s: %s", path, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return DatasetSplits(**splits)
